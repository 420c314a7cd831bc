"""The base class of every AIB environment: context handling, info and the context-aware observation.

A subclass implements the physics through four hooks:

* ``_build_spaces()`` -> ``(observation_space, action_space)`` of the context-free task;
* ``_apply_context(context)``: make the physics use ``context`` (rebuild or edit the model);
* ``_reset_task(rng)`` -> initial observation (``rng`` is the env's own ``np_random``);
* ``_step_task(action)`` -> ``(observation, reward, terminated, task_info)``.

Everything a user sees of the context lives here, so every environment behaves the same way:

* ``context={...}`` fixes the context (missing keys take the defaults);
* otherwise each episode's context is drawn at ``reset`` from the ``split``'s 20 contexts (``"round_robin"``: context
  ``seed mod 20`` after ``reset(seed=seed)``, then the next one at every reset; ``"random"``: uniform, from a generator
  seeded by reset's seed and separate from the env's own RNG);
* ``set_context(...)`` or ``reset(options={"context": ...})`` fixes the context from the next reset on;
* ``info["context"]`` and ``info["context_id"]`` are set on reset and on every step;
* ``context_aware=True`` appends the raw values of the varied context keys to the observation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aib.contexts import SPLITS, context_variables, get_contexts, parse_context_ref, validate_context

CONTEXT_SELECTIONS = ("round_robin", "random")


class AIBEnv(gym.Env[np.ndarray, np.ndarray]):
    """Base class of the AIB environments (see the module docstring for the context API).

    :param context: fixed context values; missing keys take the defaults. ``None``: draw from ``split``.
    :param split: ``"train"``, ``"eval_in"`` or ``"eval_out"``: the 20 contexts episodes are drawn from.
    :param context_selection: ``"round_robin"`` or ``"random"``: how a context is drawn from ``split`` at reset.
    :param context_aware: append the raw values of the varied context keys to the observation.
    :param split_seed: seed of the random split construction (ODE-k with k > 2 only).
    :param render_mode: gymnasium render mode, where the task supports one.
    """

    env_id: ClassVar[str]
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        context: Mapping[str, Any] | None = None,
        split: str = "train",
        context_selection: str = "round_robin",
        context_aware: bool = False,
        split_seed: int | None = None,
        render_mode: str | None = None,
        **context_space_kwargs: Any,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not allowed; expected one of {SPLITS}")
        if context_selection not in CONTEXT_SELECTIONS:
            raise ValueError(f"context_selection={context_selection!r} is not allowed; expected one of {CONTEXT_SELECTIONS}")
        if not isinstance(context_aware, bool):
            raise ValueError(f"context_aware={context_aware!r} must be True or False")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            # TypeError, not ValueError: SB3's make_vec_env (and so rl-zoo3) first tries render_mode="rgb_array" and
            # falls back to no render_mode only on TypeError.
            raise TypeError(f"render_mode={render_mode!r} is not supported; expected one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.split = split
        self.context_selection = context_selection
        self.context_aware = context_aware
        self.split_seed = split_seed
        self._space_kwargs = context_space_kwargs
        self.context_variables = context_variables(self.env_id, **context_space_kwargs)
        self.context_keys = tuple(var.name for var in self.context_variables)
        self._split_contexts = get_contexts(self.env_id, split, seed=split_seed, **context_space_kwargs)

        # The fixed context (set by `context=` or set_context) wins over the split draw; it applies at the next reset.
        self._fixed: tuple[dict[str, float], str] | None = None
        if context is not None:
            self._fixed = (validate_context(self.env_id, context, **context_space_kwargs), "custom")
        self._next_index = 0
        self._context_rng = np.random.default_rng()

        task_obs_space, self.action_space = self._build_spaces()
        self._task_obs_space = task_obs_space
        if context_aware:
            n = len(self.context_keys)
            low = np.concatenate([task_obs_space.low, np.full(n, -np.inf, np.float32)]).astype(np.float32)
            high = np.concatenate([task_obs_space.high, np.full(n, np.inf, np.float32)]).astype(np.float32)
            self.observation_space = spaces.Box(low, high, dtype=np.float32)
        else:
            self.observation_space = task_obs_space

        # Apply the first context now so the env is usable (and renderable) before the first reset.
        self.context, self.context_id = (
            self._fixed if self._fixed is not None else (dict(self._split_contexts[0]), f"{split}/0")
        )
        self.context = dict(self.context)
        self._apply_context(self.context)

    # ------------------------------------------------------------------ hooks for subclasses
    def _build_spaces(self) -> tuple[spaces.Box, spaces.Box]:
        raise NotImplementedError

    def _apply_context(self, context: dict[str, float]) -> None:
        raise NotImplementedError

    def _reset_task(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _step_task(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ context API
    def set_context(self, context: Mapping[str, Any] | Sequence[Any] | None) -> None:
        """Fix the context from the next reset on (it then persists across resets).

        :param context: a dict of context values (missing keys take the defaults), a ``(split, index)`` pair such as
            ``("eval_out", 7)``, or ``None`` to go back to drawing from the env's ``split``.
        """
        if context is None:
            self._fixed = None
        elif isinstance(context, Mapping):
            self._fixed = (validate_context(self.env_id, context, **self._space_kwargs), "custom")
        elif isinstance(context, Sequence) and not isinstance(context, str):
            split, index = parse_context_ref(context)
            contexts = get_contexts(self.env_id, split, seed=self.split_seed, **self._space_kwargs)
            if not 0 <= index < len(contexts):
                raise ValueError(
                    f"context index {index} is out of range for split {split!r}; expected 0 to {len(contexts) - 1}"
                )
            self._fixed = (contexts[index], f"{split}/{index}")
        else:
            raise ValueError(f"context={context!r} must be a dict of context values, a (split, index) pair, or None")

    def _select_context(self) -> tuple[dict[str, float], str]:
        if self._fixed is not None:
            return dict(self._fixed[0]), self._fixed[1]
        n = len(self._split_contexts)
        if self.context_selection == "random":
            index = int(self._context_rng.integers(n))
        else:
            index = self._next_index % n
            self._next_index = index + 1
        return dict(self._split_contexts[index]), f"{self.split}/{index}"

    def _info(self, task_info: dict[str, Any] | None = None) -> dict[str, Any]:
        info = dict(task_info or {})
        info["context"] = dict(self.context)
        info["context_id"] = self.context_id
        return info

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if self.context_aware:
            obs = np.concatenate([obs, np.array([self.context[k] for k in self.context_keys], dtype=np.float32)])
        return obs

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._next_index = seed % len(self._split_contexts)
            self._context_rng = np.random.default_rng(seed)
        if options and "context" in options:
            self.set_context(options["context"])
        context, context_id = self._select_context()
        if context != self.context:
            self._apply_context(context)
        self.context, self.context_id = context, context_id
        obs = self._reset_task(self.np_random)
        return self._observe(obs), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action has shape {action.shape}; expected {self.action_space.shape}")
        obs, reward, terminated, task_info = self._step_task(np.clip(action, -1.0, 1.0))
        return self._observe(obs), float(reward), bool(terminated), False, self._info(task_info)
