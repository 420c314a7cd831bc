"""The AIB evaluation protocol for any SB3 model: per-context returns and the AER of each split.

For each split, one VecEnv of 20 sub-envs runs the split's 20 contexts (sub-env i, context i). Each episode:

1. reset with seed ``eval_seed + 2 e`` and run K deterministic warm-up steps in the same contexts (not scored; for a
   model with a context window they fill it, for other models they are harmless);
2. reset with seed ``eval_seed + 2 e + 1``, keeping the policy's window but adding no transition across the reset;
3. run the whole episode with deterministic actions and score its undiscounted return.

The AER of a split is the mean over its 20 contexts of the mean return per context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from aib.contexts import SPLITS
from aib.registration import env_info


@dataclasses.dataclass
class SplitResult:
    """Returns of one split: ``returns[i, e]`` is episode e of context i."""

    split: str
    returns: np.ndarray
    contexts: list[dict[str, float]]

    @property
    def per_context(self) -> np.ndarray:
        """Mean return per context (20,)."""
        return self.returns.mean(axis=1)

    @property
    def aer(self) -> float:
        """Average episodic return: the mean over contexts of the per-context mean return."""
        return float(self.per_context.mean())


def _warmup_steps(model: Any, env_id: str) -> int:
    history_len = getattr(model, "history_len", None)
    return int(history_len) if history_len else env_info(env_id).history_len


def evaluate(
    model: Any,
    env_id: str,
    splits: Sequence[str] = SPLITS,
    n_episodes: int = 5,
    warmup: bool = True,
    deterministic: bool = True,
    eval_seed: int = 1_000_000,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, SplitResult]:
    """Evaluate ``model`` zero-shot on the named splits of ``env_id`` with the paper's protocol.

    :param model: any SB3 model (``DMASHSAC`` carries its context window through the warm-up).
    :param env_id: an AIB id.
    :param splits: the splits to evaluate.
    :param n_episodes: scored episodes per context.
    :param warmup: run K deterministic warm-up steps before each scored episode.
    :param deterministic: deterministic actions.
    :param eval_seed: episode e uses reset seeds ``eval_seed + 2 e`` (warm-up) and ``eval_seed + 2 e + 1`` (scored),
        the same for all 20 contexts (common random numbers across contexts).
    :param env_kwargs: further env kwargs (``context_aware=True`` for the aware baselines, ``k`` for ODE-k).
    :return: ``{split: SplitResult}``.
    """
    from aib.vec_env import make_vec_env

    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not allowed; expected one of {SPLITS}")
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes!r} must be >= 1")
    policy = model.policy
    mark_reset = getattr(policy, "mark_reset", None)
    results = {}
    for split in splits:
        venv = make_vec_env(env_id, split, n_envs=20, env_kwargs=env_kwargs)
        returns = np.zeros((venv.num_envs, n_episodes))
        contexts: list[dict[str, float]] = []
        for episode in range(n_episodes):
            state = None
            starts = np.ones(venv.num_envs, dtype=bool)
            if warmup:
                venv.seed(eval_seed + 2 * episode)
                obs = venv.reset()
                for _ in range(_warmup_steps(model, env_id)):
                    actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
                    obs, _, _, _ = venv.step(actions)
                    starts = np.zeros(venv.num_envs, dtype=bool)
                if state is not None and mark_reset is not None:
                    state = mark_reset(state)
            venv.seed(eval_seed + 2 * episode + 1)
            obs = venv.reset()
            contexts = [info["context"] for info in venv.reset_infos]
            done = np.zeros(venv.num_envs, dtype=bool)
            while not done.all():
                actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
                obs, rewards, dones, _ = venv.step(actions)
                returns[:, episode] += np.where(done, 0.0, rewards)
                done |= dones
                starts = np.zeros(venv.num_envs, dtype=bool)
        venv.close()
        results[split] = SplitResult(split, returns, contexts)
    return results
