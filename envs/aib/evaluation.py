"""The AIB evaluation protocol for any SB3 model: per-context returns and the AER of each split (``docs/protocol.md`` §1).

All evaluated splits run in one VecEnv of ``20 x len(splits)`` sub-envs: sub-env ``20 s + i`` runs context ``i`` of the
``s``-th split for the whole evaluation (the three splits batched, so the policy acts on 60 observations at once).
Each episode ``e``:

1. reset every sub-env with the **same** seed ``eval_seed + 2 e`` (common random numbers across contexts) and run K
   deterministic warm-up steps in the same contexts. They are not scored; they only fill the policy's context window
   (for ``DMASHSAC``: K transitions ``(s, a, s' - s)`` of the current context; other models ignore them);
2. reset every sub-env with the seed ``eval_seed + 2 e + 1``. The policy's window keeps the K warm-up transitions and
   no transition across the reset is added (``policy.mark_reset``);
3. run the whole episode with deterministic actions and score its undiscounted return.

The contexts are checked at every reset and step of the warm-up and of the scored episode: a sub-env that reports a
context other than its split's instance raises ``RuntimeError``. The AER of a split is the mean over its 20 contexts
of the mean return per context; ``mean_reward`` (the SB3-style name) is the same number.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aib.contexts import N_CONTEXTS, SPLITS
from aib.registration import env_info

DEFAULT_N_EPISODES = 10
"""The protocol's episodes per context (the paper's stated 10; the reference code's default is 5)."""

EVAL_SEED_OFFSET = 1_000_000
"""``eval_seed`` defaults to ``EVAL_SEED_OFFSET + run seed``."""


class NonFiniteActionError(FloatingPointError):
    """The evaluated model returned a NaN or infinite action: its weights have diverged, so it cannot be scored."""


def _check_actions(actions: Any, phase: str) -> Any:
    values = np.asarray(actions)
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values).reshape(len(values), -1).all(axis=1))
        raise NonFiniteActionError(
            f"the model returned non-finite actions for sub-envs {bad[:10].tolist()} during the {phase} "
            f"(first: {values[bad[0]].tolist()}); its weights have probably diverged (NaN), so it cannot be scored"
        )
    return actions


RECOVERY_LEVEL = 0.9
"""An agent has recovered from a fault once its reward, averaged over K steps, is back to this share of the level
before the fault."""


def recovery_times(
    rewards: np.ndarray, fault_step: int, window: int, level: float = RECOVERY_LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps from a fault until the reward, averaged over ``window`` steps, is back to ``level`` x its pre-fault level.

    The pre-fault level of an episode is its mean reward over the ``window`` steps before the fault (fewer when the
    fault comes earlier). The recovery time is the smallest ``n >= 0`` such that the mean reward over steps
    ``fault_step + n ... fault_step + n + window - 1`` reaches ``level`` x that level: 0 when the fault does not hurt.
    An episode that does not recover before its end is **censored**: its time is the number of candidate starts,
    ``T - fault_step - window + 1``, a lower bound of the true time. An episode whose pre-fault level is not positive
    (the agent was not earning reward before the fault) has no recovery time: ``nan``, ``defined=False``.

    :param rewards: ``(..., T)`` per-step rewards of the scored episodes.
    :param fault_step: the first step affected by the fault (0-based); at least 1.
    :param window: the averaging window (K, the method's context window, in the protocol).
    :param level: the share of the pre-fault level that counts as recovered.
    :return: ``(times, censored, defined)``, each of shape ``rewards.shape[:-1]``.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    horizon = rewards.shape[-1]
    if not 1 <= fault_step <= horizon - window:
        raise ValueError(
            f"fault_step={fault_step} must leave a step before the fault and {window} steps after it "
            f"(1 <= fault_step <= {horizon - window} for episodes of {horizon} steps)"
        )
    before = rewards[..., max(0, fault_step - window) : fault_step].mean(axis=-1)
    after = rewards[..., fault_step:]
    sums = np.cumsum(np.concatenate([np.zeros((*after.shape[:-1], 1)), after], axis=-1), axis=-1)
    means = (sums[..., window:] - sums[..., :-window]) / window  # means[..., n]: steps fault_step + n ... + window - 1
    recovered = means >= level * before[..., None]
    n_starts = means.shape[-1]
    first = np.where(recovered.any(axis=-1), recovered.argmax(axis=-1), n_starts)
    defined = before > 0
    times = np.where(defined, first, np.nan).astype(np.float64)
    censored = defined & ~recovered.any(axis=-1)
    return times, censored, defined


@dataclasses.dataclass
class SplitResult:
    """Returns of one split: ``returns[i, e]`` is the scored episode ``e`` of context ``i``.

    :param split: the split name.
    :param returns: ``(n_contexts, n_episodes)`` undiscounted returns of the scored episodes.
    :param contexts: the context of each sub-env, as its ``info["context"]`` reported it in the scored episodes.
    :param context_ids: ``info["context_id"]`` of each sub-env (``"<split>/<i>"``).
    :param warmup_contexts: the contexts the sub-envs reported during the warm-up (``None`` without warm-up); the
        evaluator checks that they equal ``contexts``.
    :param warmup_steps: warm-up steps per episode (0 without warm-up).
    :param invert_at: the step of the scored episodes from which the actions were inverted (the fault protocol), or
        ``None``.
    :param rewards: ``(n_contexts, n_episodes, T)`` per-step rewards of the scored episodes (fault protocol only).
    :param recovery_window: the window K of the recovery time (fault protocol only).
    """

    split: str
    returns: np.ndarray
    contexts: list[dict[str, float]]
    context_ids: list[str] = dataclasses.field(default_factory=list)
    warmup_contexts: list[dict[str, float]] | None = None
    warmup_steps: int = 0
    invert_at: int | None = None
    rewards: np.ndarray | None = None
    recovery_window: int = 0

    def _fault(self) -> tuple[int, np.ndarray]:
        if self.invert_at is None or self.rewards is None:
            raise ValueError("this result has no fault: evaluate with invert_at=t for the fault protocol")
        return self.invert_at, self.rewards

    @property
    def returns_before(self) -> np.ndarray:
        """``(n_contexts, n_episodes)`` returns of the steps before the fault."""
        t, rewards = self._fault()
        return rewards[..., :t].sum(axis=-1)

    @property
    def returns_after(self) -> np.ndarray:
        """``(n_contexts, n_episodes)`` returns from the fault on (the post-fault AER is their mean over contexts)."""
        t, rewards = self._fault()
        return rewards[..., t:].sum(axis=-1)

    def recovery(self, level: float = RECOVERY_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(times, censored, defined)`` per context and episode: see :func:`recovery_times`."""
        t, rewards = self._fault()
        return recovery_times(rewards, t, self.recovery_window, level)

    def recovery_summary(self, level: float = RECOVERY_LEVEL) -> dict[str, float]:
        """Median recovery time over the episodes that have one, censored episodes counted at their censoring time
        (so the median is a lower bound when more than half are censored), with the censored and undefined shares."""
        times, censored, defined = self.recovery(level)
        n = int(defined.sum())
        return {
            "recovery_median": float(np.median(times[defined])) if n else float("nan"),
            "recovery_censored": float(censored[defined].mean()) if n else float("nan"),
            "recovery_undefined": float(1.0 - defined.mean()),
        }

    @property
    def n_episodes(self) -> int:
        return int(self.returns.shape[1])

    @property
    def per_context(self) -> np.ndarray:
        """Mean return per context ``(n_contexts,)``."""
        return self.returns.mean(axis=1)

    @property
    def aer(self) -> float:
        """Average episodic return: the mean over contexts of the per-context mean return."""
        return float(self.per_context.mean())

    @property
    def mean_reward(self) -> float:
        """Mean return over all scored episodes (equal to :attr:`aer`: every context runs the same episodes)."""
        return float(self.returns.mean())

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable summary: split, AER, mean reward, episodes, and the per-context mean returns."""
        return {
            "split": self.split,
            "aer": self.aer,
            "mean_reward": self.mean_reward,
            "n_episodes": self.n_episodes,
            "per_context": [float(v) for v in self.per_context],
            **(self._fault_record() if self.invert_at is not None else {}),
        }

    def _fault_record(self) -> dict[str, Any]:
        t, rewards = self._fault()
        start = max(0, t - self.recovery_window)  # the trace shows the window before the fault, then the rest
        return {
            "invert_at": t,
            "return_before": float(self.returns_before.mean()),
            "return_after": float(self.returns_after.mean()),
            **self.recovery_summary(),
            "reward_trace_start": start,
            "reward_trace": [float(v) for v in rewards[..., start:].mean(axis=(0, 1))],
        }


def _make_env(env_id: str, split: str, index: int, env_kwargs: Mapping[str, Any]) -> Any:
    import gymnasium as gym

    env = gym.make(env_id, split=split, **env_kwargs)
    env.unwrapped.set_context((split, index))  # persists across resets
    return env


def make_eval_vec_env(
    env_id: str,
    splits: Sequence[str] = SPLITS,
    env_kwargs: Mapping[str, Any] | None = None,
    vec_env_cls: type | None = None,
) -> Any:
    """The evaluation VecEnv: sub-env ``20 s + i`` runs context ``i`` of ``splits[s]`` (reusable across evaluations).

    :param env_id: an AIB id.
    :param splits: the splits, in order.
    :param env_kwargs: further env kwargs (``context_aware=True``, ``k=5``...).
    :param vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv

    splits = _check_splits(splits)
    env_kwargs = dict(env_kwargs or {})
    for key in ("split", "context"):
        if key in env_kwargs:
            raise ValueError(f"env_kwargs[{key!r}] is set by the evaluator; pass splits= instead")
    fns = [functools.partial(_make_env, env_id, split, i, env_kwargs) for split in splits for i in range(N_CONTEXTS)]
    venv = (vec_env_cls or DummyVecEnv)(fns)
    venv.aib_eval_spec = (env_id, tuple(splits), tuple(sorted(env_kwargs.items())))
    return venv


def _check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    if isinstance(splits, str):
        splits = (splits,)
    splits = tuple(splits)
    if not splits:
        raise ValueError("splits must name at least one split")
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not allowed; expected one of {SPLITS}")
    if len(set(splits)) != len(splits):
        raise ValueError(f"splits={splits!r} names a split twice")
    return splits


class _Progress:
    """Episodes done with elapsed time and ETA on stderr, at most every ``every_s`` seconds, after ``after_s``."""

    def __init__(self, label: str, total: int, after_s: float = 10.0, every_s: float = 10.0) -> None:
        import time

        self.label, self.total, self.after_s, self.every_s = label, total, after_s, every_s
        self.clock = time.monotonic
        self.start = self.last = self.clock()
        self.printed = False

    def __call__(self, done: int) -> None:
        import sys

        now = self.clock()
        elapsed = now - self.start
        last_one = done == self.total
        if elapsed < self.after_s or (now - self.last < self.every_s and not (last_one and self.printed)):
            return
        eta = "" if last_one else f", ETA {elapsed / done * (self.total - done):.0f} s"
        print(f"{self.label}: {done}/{self.total} episodes per context, {elapsed:.0f} s{eta}", file=sys.stderr, flush=True)
        self.last, self.printed = now, True


def _warm_up(model: Any, vec_env: Any, check: _ContextCheck, steps: int, deterministic: bool) -> tuple[Any, list[Any]]:
    """K steps of the policy from a reset in the scored contexts; return its state and the contexts it saw."""
    n = vec_env.num_envs
    state, starts, not_started = None, np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    obs = vec_env.reset()
    contexts = check(vec_env.reset_infos, "warm-up reset")
    for k in range(steps):
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        obs, _, _, infos = vec_env.step(_check_actions(actions, "warm-up"))
        check(infos, "warm-up", k)
        starts = not_started
    if state is not None:
        # Append the last warm-up transition (s_{K-1}, a_{K-1}, s_K) so that the window holds all K of them (the
        # action of this call is discarded), then drop the pending transition across the reset.
        _, state = model.predict(obs, state=state, episode_start=not_started, deterministic=deterministic)
        mark_reset = getattr(getattr(model, "policy", None), "mark_reset", None)
        if mark_reset is not None:
            state = mark_reset(state)
    return state, contexts


def _check_fault_step(invert_at: Any, warmup_steps: int, window: int, horizon: int) -> int:
    if (
        isinstance(invert_at, bool)
        or not isinstance(invert_at, (int, np.integer))
        or not (max(warmup_steps, 1) <= invert_at <= horizon - window)
    ):
        raise ValueError(
            f"invert_at={invert_at!r} must be an integer from {max(warmup_steps, 1)} (after the {warmup_steps}-step "
            f"warm-up, which runs in the nominal context) to {horizon - window} (a {window}-step recovery window before "
            f"the end of the {horizon}-step episode)"
        )
    return int(invert_at)


def _warmup_steps(model: Any, env_id: str) -> int:
    history_len = getattr(model, "history_len", None)
    return int(history_len) if history_len else env_info(env_id).history_len


def _default_env_kwargs(model: Any) -> dict[str, Any]:
    """``context_aware=True`` for the methods that read the true context (Concat, Decision Adapter)."""
    policy_kwargs = getattr(model, "policy_kwargs", None) or {}
    return {"context_aware": True} if policy_kwargs.get("context_source") == "observed" else {}


def _seed_all(venv: Any, seed: int) -> None:
    """Make the next ``reset`` seed every sub-env with the same ``seed`` (SB3's ``seed`` would add the index)."""
    base = venv.unwrapped
    base._seeds = [int(seed)] * base.num_envs


class _ContextCheck:
    """Checks that every sub-env keeps the context of its split's instance (at resets and steps)."""

    def __init__(self, env_id: str, splits: Sequence[str], env_kwargs: Mapping[str, Any]) -> None:
        from aib.contexts import get_contexts

        space = {"k": env_kwargs["k"]} if "k" in env_kwargs else {}
        self.ids = [f"{split}/{i}" for split in splits for i in range(N_CONTEXTS)]
        self.values = [c for split in splits for c in get_contexts(env_id, split, seed=env_kwargs.get("split_seed"), **space)]
        self.invert_at = env_kwargs.get("invert_at")

    def __call__(self, infos: Sequence[Mapping[str, Any]], phase: str, step: int | None = None) -> list[dict[str, float]]:
        """Check the infos of a reset (``step=None``) or of ``step`` of an episode; return the contexts they report."""
        from aib.core import reported_context

        seen = []
        for i, info in enumerate(infos):
            context, context_id = info.get("context"), info.get("context_id")
            expected = reported_context(self.values[i], self.invert_at, step)
            # exact comparison: the env and the check build the values with the same construction
            if context_id != self.ids[i] or context != expected:
                raise RuntimeError(
                    f"sub-env {i} reported context {context_id!r} {context!r} during the {phase}; "
                    f"expected {self.ids[i]!r} {expected!r}"
                )
            seen.append(dict(context))
        return seen


def evaluate(
    model: Any,
    env_id: str,
    splits: Sequence[str] = SPLITS,
    n_episodes: int = DEFAULT_N_EPISODES,
    warmup: bool = True,
    deterministic: bool = True,
    eval_seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env: Any = None,
    warmup_steps: int | None = None,
    progress: bool = True,
    invert_at: int | None = None,
) -> dict[str, SplitResult]:
    """Evaluate ``model`` zero-shot on the named splits of ``env_id`` with the paper's protocol (``docs/protocol.md`` §1).

    :param model: any SB3 model with ``predict(obs, state, episode_start, deterministic)``: ``DMASHSAC`` carries its
        context window through the warm-up, SB3's ``SAC`` (no state) simply acts.
    :param env_id: an AIB id.
    :param splits: the splits to evaluate (``"train"`` is the paper's eval_train column).
    :param n_episodes: scored episodes per context (the protocol's 10; 5 reproduces the reference code).
    :param warmup: run K deterministic warm-up steps in the same contexts before each scored episode.
    :param deterministic: deterministic actions (the protocol; ``False`` only for experiments).
    :param eval_seed: episode ``e`` uses reset seeds ``eval_seed + 2 e`` (warm-up) and ``eval_seed + 2 e + 1``
        (scored), the same for every context. Default ``1_000_000 + model.seed`` (``model.seed`` ``None`` counts as 0).
    :param env_kwargs: further env kwargs (``k`` for ODE-k). Default: ``{"context_aware": True}`` for the methods that
        read the true context (Concat, Decision Adapter), else none.
    :param vec_env: a VecEnv from :func:`make_eval_vec_env` for the same id, splits and kwargs, reused across calls
        (callbacks); default: build one and close it.
    :param warmup_steps: K (default: ``model.history_len``, else the env's K).
    :param progress: print the episodes done, elapsed time and ETA to stderr, at most every 10 s and only once the
        evaluation has run 10 s (a DI evaluation stays silent; Cheetah's takes minutes).
    :param invert_at: the fault protocol: the actions are inverted from this step of every scored episode on
        (``env_kwargs["invert_at"]``, see ``docs/benchmark.md``); the warm-up runs before it, in the nominal context.
        Each result then also holds the per-step rewards, the returns before and after the fault and the recovery time
        (:func:`recovery_times`, with K as window). Needs ``K <= invert_at <= T - K``.
    :return: ``{split: SplitResult}`` in the order of ``splits``.
    :raises NonFiniteActionError: when the model returns a NaN or infinite action (diverged weights).
    """
    splits = _check_splits(splits)
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes!r} must be an integer >= 1")
    env_kwargs = _default_env_kwargs(model) if env_kwargs is None else dict(env_kwargs)
    if eval_seed is None:
        eval_seed = EVAL_SEED_OFFSET + int(getattr(model, "seed", None) or 0)
    steps = (_warmup_steps(model, env_id) if warmup_steps is None else int(warmup_steps)) if warmup else 0
    horizon = env_info(env_id).max_episode_steps
    window = _warmup_steps(model, env_id) if warmup_steps is None else int(warmup_steps)
    if invert_at is not None:
        env_kwargs["invert_at"] = _check_fault_step(invert_at, steps, window, horizon)
    own_env = vec_env is None
    if own_env:
        vec_env = make_eval_vec_env(env_id, splits, env_kwargs)
    else:
        spec = getattr(vec_env, "aib_eval_spec", None)
        expected = (env_id, splits, tuple(sorted(env_kwargs.items())))
        if spec != expected:
            raise ValueError(f"vec_env was built for {spec!r}, not {expected!r}; build it with make_eval_vec_env")
    check = _ContextCheck(env_id, splits, env_kwargs)
    n = vec_env.num_envs
    returns = np.zeros((n, n_episodes))
    step_rewards = np.zeros((n, n_episodes, horizon)) if invert_at is not None else None
    contexts: list[dict[str, float]] = []
    warmup_contexts: list[dict[str, float]] | None = None
    report = _Progress(f"aib.evaluate {env_id} ({', '.join(splits)})", n_episodes) if progress else None
    try:
        for episode in range(n_episodes):
            state = None
            starts = np.ones(n, dtype=bool)
            not_started = np.zeros(n, dtype=bool)
            if steps > 0:
                _seed_all(vec_env, eval_seed + 2 * episode)
                state, warmup_contexts = _warm_up(model, vec_env, check, steps, deterministic)
                starts = not_started
            _seed_all(vec_env, eval_seed + 2 * episode + 1)
            obs = vec_env.reset()
            contexts = check(vec_env.reset_infos, "scored reset")
            done = np.zeros(n, dtype=bool)
            t = 0
            while not done.all():
                actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
                obs, rewards, dones, infos = vec_env.step(_check_actions(actions, "scored episode"))
                check(infos, "scored episode", t)
                returns[:, episode] += np.where(done, 0.0, rewards)
                if step_rewards is not None and t < horizon:
                    step_rewards[:, episode, t] = np.where(done, 0.0, rewards)
                done |= dones
                starts = not_started
                t += 1
            if report is not None:
                report(episode + 1)
    finally:
        if own_env:
            vec_env.close()
    results = {}
    for s, split in enumerate(splits):
        rows = slice(s * N_CONTEXTS, (s + 1) * N_CONTEXTS)
        results[split] = SplitResult(
            split,
            returns[rows].copy(),
            contexts[rows],
            check.ids[rows],
            None if warmup_contexts is None else warmup_contexts[rows],
            steps,
            invert_at,
            None if step_rewards is None else step_rewards[rows].copy(),
            window if invert_at is not None else 0,
        )
    return results
