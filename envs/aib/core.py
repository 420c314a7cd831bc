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
* ``context_aware=True`` appends the raw values of the varied context keys to the observation;
* ``invert_at=t`` inverts the actions from step ``t`` of every episode on, ``context_schedule={step: {...}}`` changes
  context values from the given steps on (faults in the middle of an episode; the physical state is kept).

Faults: the steps of an episode are counted from 0 (reset sets the count to 0, each step adds 1). Before the action of
step ``s`` acts, the schedule entries with step ``s`` update the context, and from ``s = invert_at`` on the inversion
applies on top of the scheduled values: ``action_factor`` flips sign, ``swap`` toggles, and in the tasks whose context
has neither the action is negated before the task's physics (reported as ``info["context"]["action_sign"]``). The
info of step ``s`` reports the context that acted on step ``s``; the next reset goes back to the episode's context.
A subclass changes the context in the middle of an episode through ``_change_context(context)`` (default
``_apply_context``, which must then keep the physical state) and lists the keys that cannot change in
``episode_fixed_keys``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aib.contexts import SPLITS, context_variables, get_contexts, parse_context_ref, validate_context

CONTEXT_SELECTIONS = ("round_robin", "random")
ACTION_SIGN_KEY = "action_sign"
"""The ``info["context"]`` key of the inversion in the tasks whose context has neither ``action_factor`` nor ``swap``."""


class AIBEnv(gym.Env[np.ndarray, np.ndarray]):
    """Base class of the AIB environments (see the module docstring for the context API).

    :param context: fixed context values; missing keys take the defaults. ``None``: draw from ``split``.
    :param split: ``"train"``, ``"eval_in"`` or ``"eval_out"``: the 20 contexts episodes are drawn from.
    :param context_selection: ``"round_robin"`` or ``"random"``: how a context is drawn from ``split`` at reset.
    :param context_aware: append the raw values of the varied context keys to the observation.
    :param split_seed: seed of the random split construction (ODE-k with k > 2 only).
    :param render_mode: gymnasium render mode, where the task supports one.
    :param invert_at: 0-based step of every episode from which the actions are inverted (``action_factor`` flips sign,
        ``swap`` toggles, otherwise the action is negated and ``info["context"]["action_sign"]`` is -1). ``None``: never.
    :param context_schedule: ``{step: {key: value}}``: from that step of every episode on, the given context values
        apply (missing keys keep their current values); only the keys outside ``episode_fixed_keys`` may appear.
    """

    env_id: ClassVar[str]
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    episode_fixed_keys: ClassVar[tuple[str, ...]] = ()
    """Context keys that cannot change in the middle of an episode (``context_schedule`` rejects them)."""

    def __init__(
        self,
        context: Mapping[str, Any] | None = None,
        split: str = "train",
        context_selection: str = "round_robin",
        context_aware: bool = False,
        split_seed: int | None = None,
        render_mode: str | None = None,
        invert_at: int | None = None,
        context_schedule: Mapping[int, Mapping[str, float]] | None = None,
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
        self.invert_at = _check_invert_at(invert_at)
        self.context_schedule = self._check_schedule(context_schedule)
        # Without action_factor or swap the inversion negates the action; info reports it under ACTION_SIGN_KEY.
        self._signed_inversion = invert_at is not None and not {"action_factor", "swap"} & set(self.context_keys)
        self._episode_step = 0
        self._scheduled_context: dict[str, float] = {}
        self._action_sign = 1.0

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
        self._scheduled_context = dict(self.context)
        self._apply_context(self.context)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Snapshots pickled before mid-episode faults existed (the in-run checkpoints of a long study) lack their
        # state: they had no fault, so they resume fault-free.
        state.setdefault("invert_at", None)
        state.setdefault("context_schedule", {})
        state.setdefault("_signed_inversion", False)
        state.setdefault("_episode_step", 0)
        state.setdefault("_action_sign", 1.0)
        state.setdefault("_scheduled_context", dict(state["context"]))
        self.__dict__.update(state)

    # ------------------------------------------------------------------ hooks for subclasses
    def _build_spaces(self) -> tuple[spaces.Box, spaces.Box]:
        raise NotImplementedError

    def _apply_context(self, context: dict[str, float]) -> None:
        raise NotImplementedError

    def _reset_task(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _step_task(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        raise NotImplementedError

    def _change_context(self, context: dict[str, float]) -> None:
        """Make the physics use ``context`` in the middle of an episode, keeping the physical state.

        The default, ``_apply_context``, is right for the tasks whose ``_apply_context`` only sets parameters. Only
        keys outside ``episode_fixed_keys`` differ from the current context.
        """
        self._apply_context(context)

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

    @property
    def mid_episode_keys(self) -> tuple[str, ...]:
        """The context keys that ``context_schedule`` may change in the middle of an episode."""
        return tuple(key for key in self.context_keys if key not in self.episode_fixed_keys)

    def _check_schedule(self, schedule: Any) -> dict[int, dict[str, float]]:
        """Validate ``context_schedule`` like ``context=``; return it with int steps in increasing order."""
        if schedule is None:
            return {}
        if not isinstance(schedule, Mapping):
            raise ValueError(
                f"context_schedule={schedule!r} must be a dict {{step: {{context key: value}}}} or None for {self.env_id}"
            )
        checked: dict[int, dict[str, float]] = {}
        for step, values in schedule.items():
            if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) or step < 0:
                raise ValueError(
                    f"context_schedule step {step!r} is not allowed; expected an integer >= 0 (the 0-based step of "
                    "the episode from which the values apply)"
                )
            if not isinstance(values, Mapping):
                raise ValueError(f"context_schedule[{step!r}]={values!r} must be a dict of context values for {self.env_id}")
            try:
                full = validate_context(self.env_id, values, **self._space_kwargs)
            except ValueError as error:
                raise ValueError(f"context_schedule[{step!r}]: {error}") from None
            for key in values:
                if key in self.episode_fixed_keys:
                    raise ValueError(
                        f"context_schedule[{step!r}] changes {key!r}, which cannot change in the middle of an episode "
                        f"of {self.env_id} (it needs a new model, so only a reset can change it); keys that can: "
                        f"{list(self.mid_episode_keys)}"
                    )
            checked[int(step)] = {key: full[key] for key in values}
        return dict(sorted(checked.items()))

    def _advance_faults(self, step: int) -> dict[str, float] | None:
        """The context of ``step`` if a schedule entry or the inversion starts at it, else ``None``."""
        scheduled = self.context_schedule.get(step)
        if scheduled is None and step != self.invert_at:
            return None
        if scheduled is not None:
            self._scheduled_context.update(scheduled)
        context = dict(self._scheduled_context)
        # The inversion acts on top of the scheduled values: a later entry that sets action_factor stays inverted.
        if self.invert_at is not None and step >= self.invert_at:
            context = inverted_context(context)
            if self._signed_inversion:
                self._action_sign = -1.0
        return context

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
        if self._signed_inversion:
            info["context"][ACTION_SIGN_KEY] = self._action_sign
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
        # Faults start afresh: the episode's own context, step 0, no inversion yet.
        self._scheduled_context, self._episode_step, self._action_sign = dict(context), 0, 1.0
        obs = self._reset_task(self.np_random)
        return self._observe(obs), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action has shape {action.shape}; expected {self.action_space.shape}")
        context = self._advance_faults(self._episode_step)
        if context is not None and context != self.context:
            self._change_context(context)
            self.context = context
        action = np.clip(action, -1.0, 1.0)
        if self._action_sign != 1.0:
            action = -action
        obs, reward, terminated, task_info = self._step_task(action)
        self._episode_step += 1
        return self._observe(obs), float(reward), bool(terminated), False, self._info(task_info)


def inverted_context(context: Mapping[str, float]) -> dict[str, float]:
    """The context with its actions inverted: ``action_factor`` flips sign, else ``swap`` toggles; a context with
    neither is returned unchanged (those tasks negate the action and report ``info["context"]["action_sign"]``)."""
    context = dict(context)
    if "action_factor" in context:
        context["action_factor"] = -context["action_factor"]
    elif "swap" in context:
        context["swap"] = 1.0 - context["swap"]
    return context


def reported_context(context: Mapping[str, float], invert_at: int | None, step: int | None) -> dict[str, float]:
    """What ``info["context"]`` of an env made with ``invert_at`` reports at ``step`` of an episode (``None``: at reset)
    for the episode's context ``context`` (no ``context_schedule``)."""
    inverted = invert_at is not None and step is not None and step >= invert_at
    reported = inverted_context(context) if inverted else dict(context)
    if invert_at is not None and not {"action_factor", "swap"} & set(context):
        reported[ACTION_SIGN_KEY] = -1.0 if inverted else 1.0
    return reported


def _check_invert_at(invert_at: Any) -> int | None:
    if invert_at is None:
        return None
    if isinstance(invert_at, (bool, np.bool_)) or not isinstance(invert_at, numbers.Integral) or invert_at < 0:
        raise ValueError(
            f"invert_at={invert_at!r} is not allowed; expected None or an integer >= 0 (the 0-based step of the episode "
            "from which the actions are inverted)"
        )
    return int(invert_at)
