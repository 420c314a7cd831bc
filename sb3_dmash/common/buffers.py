"""Replay buffers of sb3-dmash: one column per sub-env (= per training context), sampled per context as the reference.

:class:`StratifiedReplayBuffer` is SB3's ``ReplayBuffer`` with the reference's stratified draw (``batch_size // n_envs``
transitions from each sub-env's column: 12 of each of 20 contexts, 240 in all); the window-free methods (Concat,
Decision Adapter, DR) use it. :class:`HistoryReplayBuffer` adds the window of the K transitions that precede each
sampled transition, gathered at sample time, for the methods that infer the context.
"""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sb3_dmash.common.type_aliases import HistoryReplayBufferSamples
from sb3_dmash.common.windows import entry_dim, initial_window, pack, push_transition

# Rejection-sampling rounds before falling back to an exact draw among the sampleable rows.
# Context-only (warm-up) rows are about K / (T + K) of all rows (~11 % for K = 128, T = 1000),
# so one or two rounds nearly always suffice.
_MAX_REJECTION_ROUNDS = 16


def _context_changed(previous: Any, current: Any) -> bool:
    """Whether two ``info["context_id"]`` values differ; an unknown (None) id never counts as a change."""
    if previous is None or current is None:
        return False
    if isinstance(previous, np.ndarray) or isinstance(current, np.ndarray):
        return not np.array_equal(previous, current)
    return bool(previous != current)


class StratifiedReplayBuffer(ReplayBuffer):
    """
    SB3's ``ReplayBuffer`` sampled per sub-env column: ``sample(batch_size)`` draws ``batch_size // n_envs`` transitions
    uniformly from each column, as the reference draws 12 from each of its 20 per-context buffers (240 for a batch
    size of 256). With ``stratified=False`` it samples uniformly over all stored transitions, as SB3.

    Storage is SB3's ``(buffer_size // n_envs, n_envs, ...)`` layout, so column ``e`` holds the transitions of sub-env
    ``e`` (one training context per sub-env in AIB) and keeps ``buffer_size // n_envs`` of them.

    :param buffer_size: Max number of transitions in the buffer (over all envs: each column holds
        ``buffer_size // n_envs``)
    :param observation_space: Observation space
    :param action_space: Action space
    :param device: PyTorch device
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer (SB3's)
    :param handle_timeout_termination: Handle timeout termination (due to timelimit)
        separately and treat the task as infinite horizon task.
        https://github.com/DLR-RM/stable-baselines3/issues/284
        Default False here: the reference treats time limits as terminal (no bootstrapping).
    :param stratified: If True, ``sample`` draws ``batch_size // n_envs`` transitions from each env column;
        otherwise uniformly over all stored transitions.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = False,
        stratified: bool = True,
    ):
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.stratified = stratified

    def _draw(self, batch_size: int, upper_bound: int) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of each sample: ``batch_size // n_envs`` per column when stratified, else uniform."""
        if upper_bound == 0:
            raise ValueError(f"Cannot sample from an empty {type(self).__name__}")
        if not self.stratified:
            flat = np.random.randint(0, upper_bound * self.n_envs, size=batch_size)
            return np.divmod(flat, self.n_envs)
        if batch_size < self.n_envs:
            raise ValueError(
                f"Stratified sampling needs batch_size >= n_envs (one sample per env column at least), "
                f"got batch_size={batch_size} and n_envs={self.n_envs}"
            )
        env_indices = np.repeat(np.arange(self.n_envs), batch_size // self.n_envs)
        return np.random.randint(0, upper_bound, size=len(env_indices)), env_indices

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """
        Sample transitions, ``batch_size // n_envs`` from each env column when stratified.

        :param batch_size: Number of transitions to sample; stratified, the batch holds
            ``(batch_size // n_envs) * n_envs`` of them (240 for 256 and 20 envs, as the reference).
        :param env: associated gym VecEnv
            to normalize the observations/rewards when sampling
        :return: The samples
        """
        if self.optimize_memory_usage:
            # SB3's memory-efficient layout: row ``pos`` holds no valid next observation (it is overwritten next)
            if self.full:
                batch_inds, env_indices = self._draw(batch_size, self.buffer_size - 1)
                batch_inds = (batch_inds + self.pos + 1) % self.buffer_size
                return self._get_samples(batch_inds, env_indices, env=env)
            batch_inds, env_indices = self._draw(batch_size, self.pos)
            return self._get_samples(batch_inds, env_indices, env=env)
        batch_inds, env_indices = self._draw(batch_size, self.buffer_size if self.full else self.pos)
        return self._get_samples(batch_inds, env_indices, env=env)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_indices: np.ndarray, env: VecNormalize | None = None
    ) -> ReplayBufferSamples:
        if self.optimize_memory_usage:
            next_obs = self.observations[(batch_inds + 1) % self.buffer_size, env_indices, :]
        else:
            next_obs = self.next_observations[batch_inds, env_indices, :]
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(next_obs, env),
            # Only use dones that are not due to timeouts
            # deactivated by default (timeouts is initialized as an array of False)
            (self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))


class HistoryReplayBuffer(StratifiedReplayBuffer):
    """
    Replay buffer for DMA*-SH: SB3's ``ReplayBuffer`` layout, plus the window of the K transitions that precede each
    sampled transition in the same sub-env, gathered at sample time (no window is stored per transition).

    Storage keeps SB3's ``(buffer_size // n_envs, n_envs, ...)`` arrays: column ``e`` holds the transitions of
    sub-env ``e`` in time order. Per row it only adds a steps-since-window-origin counter saturated at K (``ep_steps``,
    uint8 for K < 255) and a ``sampleable`` flag, i.e. 2 bytes per transition.

    The window origin is the last context change of the column (``info["context_id"]`` differs from the previous
    transition's), and, with ``history_across_episodes=False``, also the last episode start. Context-only rows
    (warm-up transitions, see :meth:`add_context_only`) serve as history but are never sampled; warm-up rows written
    after an episode end count as the next episode's pre-episode context, as in the algorithm's rollout window.

    :param buffer_size: Max number of transitions in the buffer (over all envs: each column holds
        ``buffer_size // n_envs``)
    :param observation_space: Observation space
    :param action_space: Action space
    :param device: PyTorch device
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: SB3's memory-efficient variant: each observation is stored once, the next
        observation of a row being the observation of the next row. Where the next row starts with another
        observation (after an episode end, after warm-up rows), the overwritten one is kept aside, so that windows and
        samples stay exact (one flag byte per transition, plus those few observations). As in SB3, the oldest row is
        not sampled once the buffer is full.
    :param handle_timeout_termination: Handle timeout termination (due to timelimit)
        separately and treat the task as infinite horizon task.
        https://github.com/DLR-RM/stable-baselines3/issues/284
        Default False here: the reference treats time limits as terminal (no bootstrapping).
    :param history_len: Window length K: the history holds lags K, ..., 0 (K + 1 entries, the last one being the
        sampled transition)
    :param history_across_episodes: If True (the reference's behaviour), windows may reach back into earlier rows of
        the same column (warm-up rows, the previous episode) as long as the context is unchanged.
        If False, windows stop at the episode start (after any ``done``, terminations and truncations alike).
    :param stratified: If True, ``sample`` draws ``batch_size // n_envs`` transitions from each env column (one column
        per training context, as the reference); otherwise uniformly over all stored transitions.
    :param pack_windows: If True, ``sample`` returns each observation (and next observation) packed with its window,
        ``[s, window.flatten()]`` (see :mod:`sb3_dmash.common.windows`), so that code written for plain observations,
        such as SB3's ``SAC.train``, hands the windows to the policy. :class:`DynamicsAlignmentCallback` turns it on for
        SB3's ``SAC``.

    The buffer also keeps the rollout window of each sub-env (the last K transitions added, as the acting policy
    needs them): :meth:`rollout_windows`.
    """

    ep_steps: np.ndarray
    sampleable: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = False,
        history_len: int = 24,
        history_across_episodes: bool = True,
        stratified: bool = True,
        pack_windows: bool = False,
    ):
        if int(history_len) != history_len or history_len < 1:
            raise ValueError(f"history_len must be an integer >= 1, got {history_len}")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
            stratified=stratified,
        )
        if optimize_memory_usage:
            # The next observation of row r is the observation of row r + 1, except where the next add wrote another
            # one there (an episode start after a terminal observation, a reset after warm-up rows): those few are
            # kept here, keyed by flat index row * n_envs + env, so that Δs and s' stay exact.
            self.next_obs_kept = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
            self._kept_next_obs: dict[int, np.ndarray] = {}
        self.history_len = int(history_len)
        self.history_across_episodes = history_across_episodes
        self.obs_dim = int(np.prod(self.obs_shape))
        # The counter only needs to tell lags 0..K apart, so it saturates at K and fits in one byte for usual K
        counter_dtype = np.uint8 if self.history_len < 255 else np.uint16 if self.history_len < 65535 else np.uint32
        self.ep_steps = np.zeros((self.buffer_size, self.n_envs), dtype=counter_dtype)
        self.sampleable = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self._cur_ep_step = np.zeros(self.n_envs, dtype=counter_dtype)
        self._last_context_id: list[Any] = [None] * self.n_envs
        self.pack_windows = bool(pack_windows)
        self._reset_rollout_windows()

    def _reset_rollout_windows(self) -> None:
        # A window is (re)started from the observation that follows an episode end, which add() has not seen yet:
        # rows marked fresh start from the next observation they are given.
        self._rollout_window = np.zeros(
            (self.n_envs, self.history_len, entry_dim(self.obs_dim, self.action_dim)), dtype=np.float32
        )
        self._rollout_fresh = np.ones(self.n_envs, dtype=bool)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Buffers pickled before the rollout windows existed (in-run checkpoints of a long study)
        self.__dict__.update(state)
        if "_rollout_window" not in state:
            self.pack_windows = False
            self._reset_rollout_windows()

    def reset(self) -> None:
        """
        Reset the buffer, including the window counters.
        """
        super().reset()
        self.ep_steps[:] = 0
        self.sampleable[:] = False
        self._cur_ep_step[:] = 0
        self._last_context_id = [None] * self.n_envs
        self._reset_rollout_windows()

    def restart_rollout_windows(self) -> None:
        """Start every sub-env's rollout window afresh from the next observation (after an env reset)."""
        self._rollout_fresh[:] = True

    def rollout_windows(self, obs: np.ndarray) -> np.ndarray:
        """The window of each sub-env for acting at ``obs`` (its current observations, unnormalised): the last K
        transitions added to its column, or the initial window from ``obs`` after an episode end (with
        ``history_across_episodes=False``) and before the first transition.

        :param obs: ``(n_envs, *obs_shape)``
        :return: ``(n_envs, K, 2 obs_dim + action_dim)`` float32, a copy
        """
        obs = np.asarray(obs, dtype=np.float32).reshape(self.n_envs, self.obs_dim)
        window = self._rollout_window.copy()
        if self._rollout_fresh.any():
            window[self._rollout_fresh] = initial_window(obs[self._rollout_fresh], self.history_len, self.action_dim)
        return window

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """
        Add one transition per env (a sampleable row).

        :param obs: Observations, shape ``(n_envs, *obs_shape)``
        :param next_obs: Next observations (the terminal observation at episode ends)
        :param action: Actions (scaled to [-1, 1] for SAC)
        :param reward: Rewards, shape ``(n_envs,)``
        :param done: Episode ends (terminations and truncations), shape ``(n_envs,)``
        :param infos: The VecEnv's infos; ``info["context_id"]`` (set by AIB envs) is used to detect context changes,
            and ``info["TimeLimit.truncated"]`` when ``handle_timeout_termination`` is True
        """
        self._add_row(obs, next_obs, action, reward, done, infos, sampleable=True)

    def add_context_only(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        infos: list[dict[str, Any]] | None = None,
    ) -> None:
        """
        Add one context-only transition per env (reward 0, done False): it advances the window counters like a
        normal row and appears in the history of later transitions, but is never sampled itself.
        This is how warm-up transitions are stored (the reference's pre-episode window entries).

        :param obs: Observations, shape ``(n_envs, *obs_shape)``
        :param next_obs: Next observations
        :param action: Actions (scaled, as in :meth:`add`)
        :param infos: Optional infos of the warm-up step, for context-change detection (``info["context_id"]``);
            without them the context is taken as unchanged
        """
        zeros = np.zeros(self.n_envs, dtype=np.float32)
        infos = [{} for _ in range(self.n_envs)] if infos is None else infos
        self._add_row(obs, next_obs, action, zeros, zeros, infos, sampleable=False)

    def _add_row(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
        sampleable: bool,
    ) -> None:
        # A new context starts a new window, whatever history_across_episodes says: a window that mixed two contexts
        # would describe neither. The id of the previous transition of the same column is the reference.
        for env_idx, info in enumerate(infos):
            context_id = info.get("context_id")
            if _context_changed(self._last_context_id[env_idx], context_id):
                self._cur_ep_step[env_idx] = 0
            if context_id is not None:
                self._last_context_id[env_idx] = context_id

        self.ep_steps[self.pos] = self._cur_ep_step
        self.sampleable[self.pos] = sampleable
        if self.optimize_memory_usage:
            self._keep_overwritten_next_obs(obs)
        super().add(obs, next_obs, action, reward, done, infos)
        if self.optimize_memory_usage and self.full:
            self.sampleable[self.pos] = False  # the oldest row: its observation now holds the newest next observation
        self._push_rollout(obs, action, next_obs, done)

        # Saturate at K: lags beyond K are never gathered, so larger counts carry no information
        next_step = np.minimum(self._cur_ep_step.astype(np.int64) + 1, self.history_len)
        if not self.history_across_episodes:
            # VecEnvs auto-reset, so the next row of a column with done=True starts a new episode
            next_step = np.where(np.asarray(done, dtype=bool).reshape(self.n_envs), 0, next_step)
        self._cur_ep_step = next_step.astype(self._cur_ep_step.dtype)

    def _keep_overwritten_next_obs(self, obs: np.ndarray) -> None:
        """Before row ``pos`` is written: drop what was kept for its previous life, and keep the next observation of
        row ``pos - 1`` (stored in row ``pos``) where the observation written now differs from it."""
        row, n = self.pos, self.n_envs
        for env_idx in np.flatnonzero(self.next_obs_kept[row]):
            del self._kept_next_obs[row * n + env_idx]
        self.next_obs_kept[row] = False
        if not (self.full or row > 0):
            return
        stored = self.observations[row]
        new = np.array(obs).reshape(stored.shape).astype(stored.dtype, copy=False)
        previous = (row - 1) % self.buffer_size
        for env_idx in np.flatnonzero(np.any((stored != new).reshape(n, -1), axis=1)):
            self._kept_next_obs[previous * n + env_idx] = stored[env_idx].copy()
            self.next_obs_kept[previous, env_idx] = True

    def _next_obs_at(self, flat_inds: np.ndarray) -> np.ndarray:
        """The next observations of rows given as flat indices ``row * n_envs + env``."""
        if not self.optimize_memory_usage:
            return np.take(self.next_observations.reshape(-1, *self.obs_shape), flat_inds, axis=0)
        rows, env_indices = np.divmod(flat_inds, self.n_envs)
        next_flat = ((rows + 1) % self.buffer_size) * self.n_envs + env_indices
        next_obs = np.take(self.observations.reshape(-1, *self.obs_shape), next_flat, axis=0)
        for i in np.flatnonzero(np.take(self.next_obs_kept.reshape(-1), flat_inds)):
            next_obs[i] = self._kept_next_obs[int(flat_inds[i])]
        return next_obs

    def _push_rollout(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, done: np.ndarray) -> None:
        obs = np.asarray(obs, dtype=np.float32).reshape(self.n_envs, self.obs_dim)
        if self._rollout_fresh.any():
            fresh = self._rollout_fresh
            self._rollout_window[fresh] = initial_window(obs[fresh], self.history_len, self.action_dim)
            self._rollout_fresh[:] = False
        next_obs = np.asarray(next_obs, dtype=np.float32).reshape(self.n_envs, self.obs_dim)
        push_transition(self._rollout_window, obs, np.asarray(action, np.float32).reshape(self.n_envs, -1), next_obs)
        if not self.history_across_episodes:
            self._rollout_fresh |= np.asarray(done, dtype=bool).reshape(self.n_envs)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> HistoryReplayBufferSamples:  # type: ignore[override]
        """
        Sample transitions with their history windows. Context-only rows are never sampled.

        :param batch_size: Number of transitions to sample. With ``stratified=True`` each env column contributes
            ``batch_size // n_envs`` transitions, so the batch holds ``(batch_size // n_envs) * n_envs`` transitions
            (240 for 256 and 20 envs, as the reference).
        :param env: associated gym VecEnv
            to normalize the observations/rewards when sampling
        :return: The samples, windows included
        """
        upper_bound = self.buffer_size if self.full else self.pos
        batch_inds, env_indices = self._draw(batch_size, upper_bound)
        batch_inds, env_indices = self._reject_context_only(batch_inds, env_indices, upper_bound)
        samples = self._get_samples(batch_inds, env_indices, env=env)
        if self.pack_windows:
            # The window that ends with the sampled transition, for s and s' alike (the reference's alignment)
            window = samples.history[:, 1:]
            samples = samples._replace(
                observations=pack(samples.observations.float(), window),
                next_observations=pack(samples.next_observations.float(), window),
            )
        return samples

    def _reject_context_only(
        self, batch_inds: np.ndarray, env_indices: np.ndarray, upper_bound: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Redraw (in place) the samples that hit a row that is not sampleable (context-only), keeping each sample's
        column when stratified. The result is uniform among the sampleable rows (of the column when stratified, of the
        whole buffer otherwise).
        """
        rejected = np.flatnonzero(~self.sampleable[batch_inds, env_indices])
        for _ in range(_MAX_REJECTION_ROUNDS):
            if len(rejected) == 0:
                return batch_inds, env_indices
            if self.stratified:
                batch_inds[rejected] = np.random.randint(0, upper_bound, size=len(rejected))
            else:
                flat = np.random.randint(0, upper_bound * self.n_envs, size=len(rejected))
                batch_inds[rejected], env_indices[rejected] = np.divmod(flat, self.n_envs)
            rejected = rejected[~self.sampleable[batch_inds[rejected], env_indices[rejected]]]
        if len(rejected) == 0:
            return batch_inds, env_indices
        # Few sampleable rows (e.g. mostly warm-up data so far): draw exactly among them
        if self.stratified:
            for env_idx in np.unique(env_indices[rejected]):
                candidates = np.flatnonzero(self.sampleable[:upper_bound, env_idx])
                if len(candidates) == 0:
                    raise ValueError(f"Env column {env_idx} holds no sampleable transition (only context-only rows)")
                in_column = rejected[env_indices[rejected] == env_idx]
                batch_inds[in_column] = np.random.choice(candidates, size=len(in_column))
        else:
            candidates = np.flatnonzero(self.sampleable[:upper_bound])
            if len(candidates) == 0:
                raise ValueError("The buffer holds no sampleable transition (only context-only rows)")
            batch_inds[rejected], env_indices[rejected] = np.divmod(
                np.random.choice(candidates, size=len(rejected)), self.n_envs
            )
        return batch_inds, env_indices

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_indices: np.ndarray, env: VecNormalize | None = None
    ) -> HistoryReplayBufferSamples:
        """
        Gather the transitions ``(batch_inds, env_indices)`` and their windows.

        :param batch_inds: Row of each sample
        :param env_indices: Env column of each sample
        :param env: associated gym VecEnv
            to normalize the observations/rewards when sampling
        :return: The samples, windows included
        """
        history, history_mask = self._get_history(batch_inds, env_indices, env)
        next_obs = self._next_obs_at(batch_inds * self.n_envs + env_indices)
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(next_obs, env),
            # Only use dones that are not due to timeouts
            # deactivated by default (timeouts is initialized as an array of False)
            (self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        return HistoryReplayBufferSamples(
            *tuple(map(self.to_torch, data)),
            None,
            history,
            history_mask,
        )

    def _get_history(
        self, batch_inds: np.ndarray, env_indices: np.ndarray, env: VecNormalize | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        Gather the window (lags K, ..., 0) of each sample as ``(s, a, s' - s)`` float32 entries and its validity mask.

        A lag is valid iff it stays after the window origin (``lag <= ep_steps``) and, once the buffer has wrapped,
        does not reach rows already overwritten by newer data (``lag <= (batch_ind - pos) % capacity``: row ``pos`` is
        the oldest row still stored).
        """
        n_samples, n_entries = len(batch_inds), self.history_len + 1
        lags = np.arange(self.history_len, -1, -1)
        max_lag = self.ep_steps[batch_inds, env_indices].astype(np.int64)
        if self.full:
            # the oldest row still stored is row pos (pos + 1 when memory-efficient: row pos holds a next observation)
            oldest_lag = (batch_inds - self.pos) % self.buffer_size - int(self.optimize_memory_usage)
            max_lag = np.minimum(max_lag, oldest_lag)
        mask = lags[None, :] <= max_lag[:, None]

        # One np.take per array through flat (row * n_envs + env) indices: no Python loop over samples, and take is
        # several times faster than fancy indexing here (the gather is bound by memory latency)
        flat_inds = (((batch_inds[:, None] - lags[None, :]) % self.buffer_size) * self.n_envs + env_indices[:, None]).ravel()
        obs = np.take(self.observations.reshape(-1, *self.obs_shape), flat_inds, axis=0)
        next_obs = self._next_obs_at(flat_inds)
        actions = np.take(self.actions.reshape(-1, self.action_dim), flat_inds, axis=0).astype(np.float32, copy=False)
        # VecNormalize statistics apply to each observation; Δs is computed between normalised observations.
        # float32 before the difference: integer observations would wrap around.
        obs = self._normalize_history_obs(obs, env)
        delta_obs = self._normalize_history_obs(next_obs, env)
        delta_obs -= obs

        history = th.cat([th.from_numpy(obs), th.from_numpy(actions), th.from_numpy(delta_obs)], dim=1)
        # Entries before the window origin or overwritten: zeros (usually few, so index only them)
        invalid = np.flatnonzero(~mask)
        if len(invalid) > 0:
            history[th.from_numpy(invalid)] = 0.0
        return history.view(n_samples, n_entries, -1).to(self.device), th.from_numpy(mask).to(self.device)

    def _normalize_history_obs(self, obs: np.ndarray, env: VecNormalize | None) -> np.ndarray:
        """
        Normalise freshly gathered observations (leading axis: entries) to float32 ``(n, obs_dim)``.
        The result may be the input array: callers pass arrays they own (``np.take`` output) and modify it in place.
        """
        return np.asarray(self._normalize_obs(obs, env)).reshape(len(obs), self.obs_dim).astype(np.float32, copy=False)
