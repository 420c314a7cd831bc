"""HistoryReplayBuffer: window, episode-boundary, context, warm-up and wrap-around invariants (docs/algorithm.md, Replay).

A simulator drives the buffer with sub-envs whose episodes have random lengths and end at different steps, context
changes at episode starts, synchronised episode ends followed by warm-up (context-only) rows, and a small buffer that
wraps many times. Every observation encodes (env, context, episode, t, kind, index of the row in its column), so each
gathered entry can be traced back, and an oracle rebuilds every expected window from the chronological list of rows.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_dmash.common.buffers import HistoryReplayBuffer
from sb3_dmash.common.type_aliases import HistoryReplayBufferSamples
from sb3_dmash.common.windows import initial_window, push_transition, unpack

# Observation fields: what the simulator encodes into every observation
F_ENV, F_CTX, F_EP, F_T, F_KIND, F_IDX, F_NOISE = range(7)
OBS_DIM, ACT_DIM = 7, 2
REAL, WARMUP = 0, 1
OBS_SPACE = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
ACT_SPACE = spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)


@dataclass
class Row:
    """One transition as written to one column, kept in chronological order by the simulator."""

    obs: np.ndarray
    next_obs: np.ndarray
    action: np.ndarray
    done: bool
    context_id: str | None  # None: the buffer was not told
    sampleable: bool


class Simulator:
    """
    ``n_envs`` sub-envs with random episode lengths (so they end at different steps), a context that may change at
    each episode start, and now and then a synchronised end of all episodes followed by warm-up rows written with
    ``add_context_only`` (as the algorithm does), sometimes with their infos, sometimes without.
    """

    def __init__(
        self, n_envs: int, history_len: int, seed: int, max_len: int = 12, p_context_change: float = 0.3, max_warmup: int = 0
    ):
        self.rng = np.random.default_rng(seed)
        self.n_envs, self.history_len, self.max_len = n_envs, history_len, max_len
        self.p_context_change = p_context_change
        self.max_warmup = max_warmup or history_len + 2
        self.ctx = self.rng.integers(0, 3, n_envs)
        self.ep = np.zeros(n_envs, dtype=int)
        self.t = np.zeros(n_envs, dtype=int)
        self.ep_len = self.rng.integers(1, max_len + 1, n_envs)
        self.columns: list[list[Row]] = [[] for _ in range(n_envs)]

    def _state(self, env: int, t: int, kind: int, col_idx: int) -> np.ndarray:
        noise = np.sin(1.3 * env + 0.7 * self.ep[env] + 0.11 * t + 5.0 * kind)
        return np.array([env, self.ctx[env], self.ep[env], t, kind, col_idx, noise], dtype=np.float32)

    def step(self, sync_end: bool | None = None, n_warmup: int | None = None) -> list[tuple[str, tuple]]:
        """
        One vector step (plus the warm-up rows that may follow it): the buffer calls to make, in order.

        :param sync_end: Force (or forbid) a synchronised end of all episodes; random by default
        :param n_warmup: Number of warm-up steps after a synchronised end (0: none); random by default
        """
        calls = []
        sync_end = self.rng.random() < 0.1 if sync_end is None else sync_end
        obs, next_obs, actions = (np.zeros((self.n_envs, d), np.float32) for d in (OBS_DIM, OBS_DIM, ACT_DIM))
        rewards = self.rng.standard_normal(self.n_envs).astype(np.float32)
        dones = np.zeros(self.n_envs, dtype=bool)
        infos = []
        for env in range(self.n_envs):
            col_idx = len(self.columns[env])
            obs[env] = self._state(env, self.t[env], REAL, col_idx)
            next_obs[env] = self._state(env, self.t[env] + 1, REAL, col_idx + 1)
            actions[env] = [col_idx, self.rng.uniform(-1, 1)]
            dones[env] = sync_end or self.t[env] + 1 >= self.ep_len[env]
            info = {"context_id": f"ctx{self.ctx[env]}"}
            if dones[env]:
                info["TimeLimit.truncated"] = bool(self.rng.random() < 0.5)
            infos.append(info)
            self.columns[env].append(Row(obs[env], next_obs[env], actions[env], bool(dones[env]), info["context_id"], True))
        calls.append(("add", (obs, next_obs, actions, rewards, dones, infos)))
        for env in np.flatnonzero(dones):  # VecEnv auto-reset: new episode, maybe a new context
            self.ep[env] += 1
            self.t[env] = 0
            self.ep_len[env] = self.rng.integers(1, self.max_len + 1)
            if self.rng.random() < self.p_context_change:
                self.ctx[env] = (self.ctx[env] + 1) % 3
        self.t[~dones] += 1
        if n_warmup is None:
            n_warmup = int(self.rng.integers(1, self.max_warmup + 1)) if self.rng.random() < 0.7 else 0
        if sync_end and n_warmup > 0:
            calls += self._warmup(n_warmup, with_infos=bool(self.rng.random() < 0.5))
        return calls

    def _warmup(self, n_steps: int, with_infos: bool) -> list[tuple[str, tuple]]:
        """Warm-up of the upcoming episodes (same contexts), then env.reset(): the episode starts again at t = 0."""
        calls = []
        for t in range(n_steps):
            obs, next_obs, actions = (np.zeros((self.n_envs, d), np.float32) for d in (OBS_DIM, OBS_DIM, ACT_DIM))
            infos = [{"context_id": f"ctx{self.ctx[env]}"} for env in range(self.n_envs)]
            for env in range(self.n_envs):
                col_idx = len(self.columns[env])
                obs[env] = self._state(env, t, WARMUP, col_idx)
                next_obs[env] = self._state(env, t + 1, WARMUP, col_idx + 1)
                actions[env] = [col_idx, self.rng.uniform(-1, 1)]
                context_id = infos[env]["context_id"] if with_infos else None
                self.columns[env].append(Row(obs[env], next_obs[env], actions[env], False, context_id, False))
            calls.append(("context", (obs, next_obs, actions, infos if with_infos else None)))
        return calls

    @staticmethod
    def apply(buffer: HistoryReplayBuffer, calls: list[tuple[str, tuple]]) -> None:
        for kind, args in calls:
            if kind == "add":
                buffer.add(*args)
            else:
                buffer.add_context_only(*args[:3], infos=args[3])

    def run(self, buffer: HistoryReplayBuffer, n_steps: int) -> None:
        for _ in range(n_steps):
            self.apply(buffer, self.step())

    def expected_window(self, env: int, idx: int, capacity: int, across: bool) -> tuple[np.ndarray, np.ndarray]:
        """The oracle: window of row ``idx`` of column ``env`` from the chronological rows (lags K..0)."""
        rows = self.columns[env]
        oldest_stored = max(0, len(rows) - capacity)
        # Window origin: the row after the last episode end (across=False) or the last row whose known context id
        # differs from the previous known one
        origin, last_known = 0, None
        for j in range(idx + 1):
            if j > 0 and not across and rows[j - 1].done:
                origin = j
            context_id = rows[j].context_id
            if context_id is not None:
                if last_known is not None and context_id != last_known:
                    origin = j
                last_known = context_id
        first_valid = max(origin, oldest_stored, idx - self.history_len)
        history = np.zeros((self.history_len + 1, 2 * OBS_DIM + ACT_DIM), np.float32)
        mask = np.zeros(self.history_len + 1, dtype=bool)
        for lag in range(idx - first_valid + 1):
            row = rows[idx - lag]
            history[-1 - lag] = np.concatenate([row.obs, row.action, row.next_obs - row.obs])
            mask[-1 - lag] = True
        return history, mask


def make_buffer(n_envs: int, capacity: int, history_len: int, **kwargs) -> HistoryReplayBuffer:
    return HistoryReplayBuffer(
        capacity * n_envs, OBS_SPACE, ACT_SPACE, device="cpu", n_envs=n_envs, history_len=history_len, **kwargs
    )


def check_samples(sim: Simulator, buffer: HistoryReplayBuffer, samples: HistoryReplayBufferSamples, across: bool) -> int:
    """Assert every invariant of the history buffer on one batch; returns the number of valid history entries."""
    history, mask = samples.history.numpy(), samples.history_mask.numpy()
    obs, actions, next_obs = samples.observations.numpy(), samples.actions.numpy(), samples.next_observations.numpy()
    n_samples, n_entries = mask.shape
    assert history.shape == (n_samples, buffer.history_len + 1, 2 * OBS_DIM + ACT_DIM)
    assert history.dtype == np.float32 and mask.dtype == bool
    assert samples.discounts is None

    # 4. Invalid entries are zero and masked
    assert np.all(history[~mask] == 0.0)
    # 5. The last entry is the sampled transition itself, never a context-only row
    assert mask[:, -1].all()
    np.testing.assert_array_equal(history[:, -1], np.concatenate([obs, actions, next_obs - obs], axis=1))
    assert np.all(obs[:, F_KIND] == REAL)

    hist_obs, hist_next_obs = history[..., :OBS_DIM], history[..., :OBS_DIM] + history[..., OBS_DIM + ACT_DIM :]
    for i in range(n_samples):
        env, idx = int(obs[i, F_ENV]), int(obs[i, F_IDX])
        valid = np.flatnonzero(mask[i])
        lags = n_entries - 1 - valid
        entry_obs = hist_obs[i, valid]
        # 1. Same column, consecutive rows; 3. none overwritten (an overwritten row would hold a newer index)
        assert np.all(entry_obs[:, F_ENV] == env)
        np.testing.assert_array_equal(entry_obs[:, F_IDX], idx - lags)
        # Windows never mix contexts
        assert np.all(entry_obs[:, F_CTX] == obs[i, F_CTX])
        # 2. Episode boundary
        if not across:
            assert np.all(entry_obs[:, F_EP] == obs[i, F_EP])
        for j in valid[:-1]:
            a, b = hist_obs[i, j], hist_obs[i, j + 1]
            if (a[F_EP], a[F_KIND]) == (b[F_EP], b[F_KIND]):  # inside an episode (or a warm-up run)
                assert b[F_T] == a[F_T] + 1
                np.testing.assert_allclose(hist_next_obs[i, j], b, rtol=0, atol=1e-6)  # (s + Δs rounds)
            elif a[F_KIND] == WARMUP:  # warm-up, then env.reset(): the episode it prepared starts
                assert (b[F_KIND], b[F_EP], b[F_T]) == (REAL, a[F_EP], 0)
            else:  # an episode ended: only when windows may cross episodes
                assert across and b[F_EP] == a[F_EP] + 1 and b[F_T] == 0
                assert sim.columns[env][int(a[F_IDX])].done
        # The whole window, against the oracle (also checks windows are as long as allowed)
        expected_history, expected_mask = sim.expected_window(env, idx, buffer.buffer_size, across)
        np.testing.assert_array_equal(mask[i], expected_mask)
        np.testing.assert_array_equal(history[i], expected_history)
    return int(mask.sum())


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize(
    "n_envs, capacity, history_len",
    [(2, 23, 4), (3, 41, 16), (5, 17, 40)],  # the last one: K > column capacity, only the wrap rule limits windows
)
def test_window_invariants(across, n_envs, capacity, history_len):
    np.random.seed(0)
    sim = Simulator(
        n_envs, history_len, seed=n_envs + 10 * history_len + across, max_warmup=min(history_len + 2, capacity // 2)
    )
    buffer = make_buffer(n_envs, capacity, history_len, history_across_episodes=across)
    batch_size = 7 * n_envs + n_envs - 1  # not a multiple of n_envs: 7 per column
    n_valid, n_crossing = 0, 0
    for _ in range(30):  # ~12 steps per round: the buffer wraps many times
        sim.run(buffer, 12)
        samples = buffer.sample(batch_size)
        # 6. Stratification: exactly batch_size // n_envs per column
        assert len(samples.observations) == 7 * n_envs
        np.testing.assert_array_equal(np.bincount(samples.observations[:, F_ENV].long().numpy(), minlength=n_envs), 7)
        n_valid += check_samples(sim, buffer, samples, across)
        eps = samples.history[..., F_EP].numpy()
        n_crossing += int(np.sum(samples.history_mask.numpy() & (eps != eps[:, -1:])))
    assert buffer.full and len(sim.columns[0]) > 4 * capacity
    assert n_valid > 30 * 7 * n_envs  # windows are not trivially empty
    # Windows reach into earlier episodes only when allowed, and they do when allowed
    assert (n_crossing > 0) == across


def test_warmup_rows_are_context_and_never_sampled():
    np.random.seed(1)
    n_envs, capacity, history_len = 3, 200, 6
    buffer = make_buffer(n_envs, capacity, history_len, history_across_episodes=False)
    sim = Simulator(n_envs, history_len, seed=3, p_context_change=0.0)
    sim.run(buffer, 10)
    sim.apply(buffer, sim.step(sync_end=True, n_warmup=4))  # all episodes end, then warm-up rows
    sim.run(buffer, 30)
    warmup = ~buffer.sampleable[: buffer.pos]
    assert warmup.sum() >= 4 * n_envs
    np.testing.assert_array_equal(buffer.rewards[: buffer.pos][warmup], 0.0)
    np.testing.assert_array_equal(buffer.dones[: buffer.pos][warmup], 0.0)
    n_warmup_entries = 0
    for _ in range(20):
        samples = buffer.sample(30)
        check_samples(sim, buffer, samples, across=False)
        kinds = samples.history[..., F_KIND].numpy()
        n_warmup_entries += int(np.sum(samples.history_mask.numpy() & (kinds == WARMUP)))
    # Even with history_across_episodes=False, the warm-up is the first real transitions' context
    assert n_warmup_entries > 0


def test_context_change_resets_window():
    buffer = make_buffer(1, 50, 8)  # history_across_episodes=True: only the context change stops windows
    obs = np.zeros((1, OBS_DIM), np.float32)
    act = np.zeros((1, ACT_DIM), np.float32)
    zero, false = np.zeros(1, np.float32), np.zeros(1, bool)
    for t in range(4):
        buffer.add(obs + t, obs + t + 1, act, zero, false, [{"context_id": "train/0"}])
    for t in range(4, 6):  # infos without context_id: unchanged context
        buffer.add(obs + t, obs + t + 1, act, zero, false, [{}])
    buffer.add(obs + 6, obs + 7, act, zero, false, [{"context_id": "train/1"}])
    buffer.add(obs + 7, obs + 8, act, zero, false, [{"context_id": "train/1"}])
    np.testing.assert_array_equal(buffer.ep_steps[: buffer.pos, 0], [0, 1, 2, 3, 4, 5, 0, 1])
    # Warm-up rows told about a new context start its window, and the episode that follows keeps it
    buffer.add_context_only(obs + 20, obs + 21, act, infos=[{"context_id": "train/2"}])
    buffer.add_context_only(obs + 21, obs + 22, act)
    buffer.add(obs + 30, obs + 31, act, zero, false, [{"context_id": "train/2"}])
    np.testing.assert_array_equal(buffer.ep_steps[8 : buffer.pos, 0], [0, 1, 2])
    for _ in range(20):
        samples = buffer.sample(1)
        assert samples.history_mask.shape == (1, 9)
        assert samples.observations[0, 0] not in (20.0, 21.0)  # rows 8 and 9 are context-only


def test_counter_saturates_and_dtype():
    assert make_buffer(1, 10, 254).ep_steps.dtype == np.uint8
    assert make_buffer(1, 10, 255).ep_steps.dtype == np.uint16
    buffer = make_buffer(2, 1000, 3)
    obs, act = np.zeros((2, OBS_DIM), np.float32), np.zeros((2, ACT_DIM), np.float32)
    for _ in range(10):
        buffer.add(obs, obs, act, np.zeros(2), np.array([False, True]), [{}, {}])
    np.testing.assert_array_equal(buffer.ep_steps[:10, 0], [0, 1, 2, 3, 3, 3, 3, 3, 3, 3])
    np.testing.assert_array_equal(buffer.ep_steps[:10, 1], [0, 1, 2, 3, 3, 3, 3, 3, 3, 3])  # across episodes
    buffer = make_buffer(2, 1000, 3, history_across_episodes=False)
    for _ in range(10):
        buffer.add(obs, obs, act, np.zeros(2), np.array([False, True]), [{}, {}])
    np.testing.assert_array_equal(buffer.ep_steps[:10, 1], 0)


def bytes_per_transition(buffer: ReplayBuffer) -> float:
    """Bytes of the per-row arrays per stored transition; per-env state (the rollout windows: n_envs x K entries) does
    not grow with the buffer and is left out."""
    rows = [v for v in vars(buffer).values() if isinstance(v, np.ndarray) and v.shape[:1] == (buffer.buffer_size,)]
    return sum(value.nbytes for value in rows) / (buffer.buffer_size * buffer.n_envs)


@pytest.mark.parametrize("history_len", [24, 128, 300])
@pytest.mark.parametrize("obs_dim, act_dim", [(4, 2), (24, 6)])
def test_memory_per_transition(obs_dim, act_dim, history_len):
    obs_space = spaces.Box(-1, 1, (obs_dim,), np.float32)
    act_space = spaces.Box(-1, 1, (act_dim,), np.float32)

    sb3 = ReplayBuffer(20_000, obs_space, act_space, device="cpu", n_envs=20)
    ours = HistoryReplayBuffer(20_000, obs_space, act_space, device="cpu", n_envs=20, history_len=history_len)
    assert ours.buffer_size == sb3.buffer_size == 1000  # SB3's column capacity
    ratio = bytes_per_transition(ours) / bytes_per_transition(sb3)
    assert ratio <= 1.10, ratio


def test_non_stratified_uniform_over_sampleable_pairs():
    np.random.seed(2)
    n_envs, capacity = 3, 80
    buffer = make_buffer(n_envs, capacity, 4, stratified=False)
    sim = Simulator(n_envs, 4, seed=5)
    sim.run(buffer, 25)
    assert not buffer.full
    counts = np.zeros((buffer.pos, n_envs))
    for _ in range(300):
        samples = buffer.sample(64)
        check_samples(sim, buffer, samples, across=True)
        np.add.at(counts, (samples.observations[:, F_IDX].long().numpy() % capacity, samples.observations[:, F_ENV].long()), 1)
    sampleable = buffer.sampleable[: buffer.pos]
    assert np.all(counts[~sampleable] == 0)
    expected = counts.sum() / sampleable.sum()
    assert np.all(np.abs(counts[sampleable] - expected) < 6 * np.sqrt(expected))  # every pair drawn uniformly
    # Columns are not balanced: stratification is off
    buffer.sample(2)  # batch_size < n_envs is fine without stratification


def test_stratified_uniform_within_column_and_exact_fallback():
    np.random.seed(3)
    buffer = make_buffer(2, 40, 3)
    obs, act = np.zeros((2, OBS_DIM), np.float32), np.zeros((2, ACT_DIM), np.float32)
    for t in range(40):
        obs[:, F_IDX] = t
        if t % 10 == 3:  # one sampleable row in 10: rejection sampling alone would often need many rounds
            buffer.add(obs, obs, act, np.zeros(2), np.zeros(2), [{}, {}])
        else:
            buffer.add_context_only(obs, obs, act)
    rows = np.concatenate([buffer.sample(200).observations[:, F_IDX].numpy() for _ in range(50)])
    assert set(np.unique(rows)) == {3, 13, 23, 33}
    assert np.all(np.abs(np.bincount(rows.astype(int))[3::10] - len(rows) / 4) < 6 * np.sqrt(len(rows) / 4))


def test_bad_inputs_raise():
    for history_len in (0, -3, 2.5):
        with pytest.raises(ValueError, match="history_len"):
            make_buffer(2, 10, history_len)
    buffer = make_buffer(4, 10, 4)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(8)
    obs, act = np.zeros((4, OBS_DIM), np.float32), np.zeros((4, ACT_DIM), np.float32)
    buffer.add(obs, obs, act, np.zeros(4), np.zeros(4), [{}] * 4)
    with pytest.raises(ValueError, match=r"batch_size=3.*n_envs=4"):
        buffer.sample(3)
    buffer = make_buffer(2, 10, 4)
    buffer.add_context_only(obs[:2], obs[:2], act[:2])
    with pytest.raises(ValueError, match="no sampleable"):
        buffer.sample(4)
    buffer = make_buffer(2, 10, 4, stratified=False)
    buffer.add_context_only(obs[:2], obs[:2], act[:2])
    with pytest.raises(ValueError, match="no sampleable"):
        buffer.sample(4)


@pytest.mark.parametrize("handle_timeout_termination", [False, True])
def test_timeout_handling(handle_timeout_termination):
    buffer = make_buffer(2, 10, 2, handle_timeout_termination=handle_timeout_termination)
    obs, act = np.zeros((2, OBS_DIM), np.float32), np.zeros((2, ACT_DIM), np.float32)
    # env 0 terminates, env 1 hits the time limit
    buffer.add(obs, obs, act, np.zeros(2), np.ones(2), [{}, {"TimeLimit.truncated": True}])
    samples = buffer.sample(2)
    assert samples.dones[0, 0] == 1.0
    assert samples.dones[1, 0] == (0.0 if handle_timeout_termination else 1.0)


def test_sample_fields_match_sb3():
    assert HistoryReplayBufferSamples._fields[:6] == ReplayBufferSamples._fields
    assert HistoryReplayBufferSamples._fields[6:] == ("history", "history_mask")


def _assert_same_buffer(a: HistoryReplayBuffer, b: HistoryReplayBuffer) -> None:
    state_a, state_b = vars(a), vars(b)
    assert state_a.keys() == state_b.keys()
    for key, value in state_a.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == state_b[key].dtype, key
            np.testing.assert_array_equal(value, state_b[key], err_msg=key)
        elif key != "observation_space" and key != "action_space":
            assert value == state_b[key], key


def test_save_load_preserves_everything(tmp_path):
    np.random.seed(4)
    n_envs = 3
    sim = Simulator(n_envs, 5, seed=7)
    buffer = make_buffer(n_envs, 29, 5)
    sim.run(buffer, 40)  # wrapped, counters mid-episode, context ids known
    assert buffer.full and any(cid is not None for cid in buffer._last_context_id)
    save_to_pkl(tmp_path / "buffer", buffer)
    restored = {"pickle": pickle.loads(pickle.dumps(buffer)), "save_to_pkl": load_from_pkl(tmp_path / "buffer")}
    for loaded in restored.values():
        assert isinstance(loaded, HistoryReplayBuffer)
        _assert_same_buffer(buffer, loaded)
    # Continue with the same data: the counters carry over, so the windows stay identical
    for _ in range(15):
        calls = sim.step()
        for target in (buffer, *restored.values()):
            sim.apply(target, calls)
    for loaded in restored.values():
        _assert_same_buffer(buffer, loaded)
    batches = []
    for target in (buffer, *restored.values()):
        np.random.seed(11)
        batches.append(target.sample(12))
    for batch in batches[1:]:
        for field_a, field_b in zip(batches[0], batch, strict=True):
            assert (field_a is None and field_b is None) or th.equal(field_a, field_b)
    check_samples(sim, buffer, batches[0], across=True)


class _BoxEnv(gym.Env):
    observation_space = OBS_SPACE
    action_space = ACT_SPACE

    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS_DIM, np.float32), {}

    def step(self, action):
        return np.zeros(OBS_DIM, np.float32), 0.0, False, False, {}


def test_vec_normalize_applied_to_history():
    np.random.seed(5)
    n_envs = 2
    sim = Simulator(n_envs, 6, seed=9)
    buffer = make_buffer(n_envs, 31, 6)
    sim.run(buffer, 40)
    vec_normalize = VecNormalize(DummyVecEnv([_BoxEnv] * n_envs), norm_obs=True, norm_reward=False, clip_obs=1e6)
    vec_normalize.obs_rms.mean = np.random.uniform(-5, 5, OBS_DIM)
    vec_normalize.obs_rms.var = np.random.uniform(0.5, 20.0, OBS_DIM)
    np.random.seed(12)
    samples = buffer.sample(16, env=vec_normalize)
    np.random.seed(12)
    raw = buffer.sample(16)
    mask = samples.history_mask.numpy()
    np.testing.assert_array_equal(mask, raw.history_mask.numpy())
    raw_history = raw.history.numpy()
    norm_obs = vec_normalize.normalize_obs(raw_history[..., :OBS_DIM])
    norm_next_obs = vec_normalize.normalize_obs(raw_history[..., :OBS_DIM] + raw_history[..., OBS_DIM + ACT_DIM :])
    expected = np.concatenate([norm_obs, raw_history[..., OBS_DIM : OBS_DIM + ACT_DIM], norm_next_obs - norm_obs], axis=-1)
    expected[~mask] = 0.0
    np.testing.assert_allclose(samples.history.numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(samples.history[:, -1, :OBS_DIM].numpy(), samples.observations.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        samples.history[:, -1, OBS_DIM + ACT_DIM :].numpy(),
        samples.next_observations.numpy() - samples.observations.numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_with_sb3_sac_and_replay_buffer_save_load(tmp_path):
    model = SAC(
        "MlpPolicy",
        DummyVecEnv([lambda: gym.make("Pendulum-v1", max_episode_steps=17)] * 2),
        replay_buffer_class=HistoryReplayBuffer,
        replay_buffer_kwargs=dict(history_len=5),
        learning_starts=30,
        batch_size=16,
        policy_kwargs=dict(net_arch=[16]),
        seed=0,
    )
    model.learn(100)
    buffer = model.replay_buffer
    assert isinstance(buffer, HistoryReplayBuffer) and buffer.n_envs == 2 and not buffer.handle_timeout_termination
    samples = buffer.sample(16)
    assert samples.history.shape == (16, 6, 3 + 1 + 3)
    np.testing.assert_array_equal(samples.history[:, -1, :3], samples.observations)
    model.save_replay_buffer(tmp_path / "replay")
    model.load_replay_buffer(tmp_path / "replay")
    assert isinstance(model.replay_buffer, HistoryReplayBuffer)
    _assert_same_buffer(buffer, model.replay_buffer)


@pytest.mark.parametrize("method", ["dr", "concat", "decision_adapter"])
def test_window_free_presets_sample_12_per_context(method):
    """The reference draws 12 from each of its 20 per-context buffers (240); the window-free presets do the same."""
    import aib
    from sb3_dmash import DMASHSAC, StratifiedReplayBuffer

    env_kwargs = {"context_aware": True} if method != "dr" else {}
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=20, seed=0, env_kwargs=env_kwargs)
    model = DMASHSAC("MlpPolicy", env, method=method, batch_size=256, buffer_size=20 * 50, learning_starts=20 * 30, seed=0)
    assert type(model.replay_buffer) is StratifiedReplayBuffer and model.replay_buffer.stratified
    model.learn(20 * 30)
    # Mark each row with its column: the observation's first entry becomes the column index
    model.replay_buffer.observations[:, :, 0] = np.arange(20)[None, :]
    samples = model.replay_buffer.sample(256)
    assert samples.observations.shape[0] == 240
    np.testing.assert_array_equal(np.bincount(samples.observations[:, 0].long().numpy(), minlength=20), np.full(20, 12))


def test_stratified_buffer_is_sb3_buffer_without_stratification():
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from sb3_dmash import StratifiedReplayBuffer

    obs_space = spaces.Box(-1, 1, (OBS_DIM,), np.float32)
    act_space = spaces.Box(-1, 1, (ACT_DIM,), np.float32)
    for memory in (False, True):
        buffer = StratifiedReplayBuffer(60, obs_space, act_space, "cpu", n_envs=3, optimize_memory_usage=memory)
        for i in range(25):  # wraps around (20 rows per column)
            obs = np.full((3, OBS_DIM), i, np.float32)
            buffer.add(obs, obs + 1, np.zeros((3, ACT_DIM), np.float32), np.full(3, float(i)), np.zeros(3), [{}] * 3)
        samples = buffer.sample(30)
        assert isinstance(samples, ReplayBufferSamples) and samples.observations.shape[0] == 30
        assert th.equal(samples.next_observations[:, 0], samples.observations[:, 0] + 1)  # valid next observations
        assert th.equal(samples.rewards[:, 0], samples.observations[:, 0])
    buffer.stratified = False
    assert buffer.sample(2).observations.shape[0] == 2
    empty = StratifiedReplayBuffer(60, obs_space, act_space, "cpu", n_envs=3)
    with pytest.raises(ValueError, match="empty"):
        empty.sample(3)
    row = np.zeros((3, OBS_DIM), np.float32)
    empty.add(row, row, np.zeros((3, ACT_DIM), np.float32), np.zeros(3), np.zeros(3), [{}] * 3)
    with pytest.raises(ValueError, match="batch_size >= n_envs"):
        empty.sample(2)


def test_bench_capacity_is_1e5_per_context():
    """In bench runs every column keeps the reference's 1e5 real transitions; windowed methods get warm-up room on top."""
    from sb3_dmash.experiments.bench import RunSpec, _default_buffer_size

    free = RunSpec(env_id="AIB-DI-v0", method="dr", seed=0, budget=100_000)
    assert _default_buffer_size(free) == 20 * 100_000
    assert _default_buffer_size(RunSpec(env_id="AIB-DI-v0", method="concat", seed=0, budget=1_000)) == 20 * 6_000
    windowed = RunSpec(env_id="AIB-DI-v0", method="dmash", seed=0, budget=100_000)
    assert _default_buffer_size(windowed) == 20 * 1_000 * (100 + 24)  # 1,000 episodes of T + K rows


@pytest.mark.parametrize("across", [True, False])
def test_rollout_windows_follow_what_was_added(across):
    """The window each sub-env acts on: the transitions added to its column, restarted from the next observation after
    an episode end when windows do not cross episodes (as DMASHSAC's own rollout window)."""
    rng = np.random.default_rng(0)
    n_envs, history_len = 3, 4
    buffer = make_buffer(n_envs, 50, history_len, history_across_episodes=across)

    def observation():
        return rng.normal(size=(n_envs, OBS_DIM)).astype(np.float32)

    obs = observation()
    expected = initial_window(obs, history_len, ACT_DIM)
    np.testing.assert_array_equal(buffer.rollout_windows(obs), expected)
    for _ in range(12):
        action = rng.uniform(-1, 1, (n_envs, ACT_DIM)).astype(np.float32)
        next_obs, done = observation(), rng.random(n_envs) < 0.3
        buffer.add(obs, next_obs, action, np.zeros(n_envs), done.astype(np.float32), [{} for _ in range(n_envs)])
        push_transition(expected, obs, action, next_obs)
        obs = np.where(done[:, None], observation(), next_obs)  # the VecEnv's auto-reset
        if not across:
            expected[done] = initial_window(obs[done], history_len, ACT_DIM)
        np.testing.assert_array_equal(buffer.rollout_windows(obs), expected)
    buffer.restart_rollout_windows()
    np.testing.assert_array_equal(buffer.rollout_windows(obs), initial_window(obs, history_len, ACT_DIM))


def test_packed_samples_carry_the_window_of_each_transition():
    np.random.seed(0)
    buffer = make_buffer(2, 40, 5)
    Simulator(2, 5, seed=1).run(buffer, 30)
    np.random.seed(3)
    plain = buffer.sample(16)
    buffer.pack_windows = True
    np.random.seed(3)
    packed = buffer.sample(16)
    for field in ("observations", "next_observations"):
        obs, window = unpack(getattr(packed, field), OBS_DIM, 5)
        th.testing.assert_close(obs, getattr(plain, field).float())
        th.testing.assert_close(window, plain.history[:, 1:])


def test_buffer_pickled_before_rollout_windows_loads():
    """An in-run checkpoint written before the buffer kept rollout windows resumes: they start afresh."""
    buffer = make_buffer(2, 10, 3)
    state = dict(vars(buffer))
    for key in ("_rollout_window", "_rollout_fresh", "pack_windows"):
        del state[key]
    old = HistoryReplayBuffer.__new__(HistoryReplayBuffer)
    old.__setstate__(state)
    obs = np.ones((2, OBS_DIM), np.float32)
    np.testing.assert_array_equal(old.rollout_windows(obs), initial_window(obs, 3, ACT_DIM))
    assert not old.pack_windows


@pytest.mark.parametrize("across", [True, False])
def test_memory_efficient_buffer_gives_the_same_samples(across):
    """optimize_memory_usage=True stores each observation once, yet every sample (s, a, s', the window) equals the
    plain buffer's: next observations overwritten by an episode start or a reset after warm-up are kept aside. Once
    the buffer is full, the oldest row is neither sampled (as in SB3) nor part of a window."""
    n_envs, capacity, history_len = 3, 40, 5
    plain = make_buffer(n_envs, capacity, history_len, history_across_episodes=across)
    compact = make_buffer(n_envs, capacity, history_len, history_across_episodes=across, optimize_memory_usage=True)
    assert not hasattr(compact, "next_observations") or compact.next_observations is None
    sim = Simulator(n_envs, history_len, seed=4)
    for step in range(130):  # wraps around about four times
        calls = sim.step()
        sim.apply(plain, calls)
        sim.apply(compact, calls)
        if step % 10 != 9:
            continue
        upper = capacity if compact.full else compact.pos
        rows, envs = np.divmod(np.arange(upper * n_envs), n_envs)
        valid = compact.sampleable[rows, envs]
        assert not compact.full or not compact.sampleable[compact.pos].any()
        rows, envs = rows[valid], envs[valid]
        a, b = plain._get_samples(rows, envs), compact._get_samples(rows, envs)
        for field in ("observations", "actions", "next_observations", "dones", "rewards"):
            th.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0, msg=field)
        # windows: the same, except that they cannot reach the oldest row (its observation was overwritten)
        lags = np.arange(history_len, -1, -1)
        reaches_oldest = compact.full & (lags[None, :] == ((rows - compact.pos) % capacity)[:, None])
        th.testing.assert_close(b.history_mask, a.history_mask & ~th.from_numpy(reaches_oldest))
        th.testing.assert_close(b.history, a.history * b.history_mask[..., None], rtol=0, atol=0)
    assert compact._kept_next_obs  # episode ends and warm-up resets happened
    # sample() never draws the oldest row
    oldest = compact.observations[compact.pos, :, F_IDX]
    drawn = np.concatenate([compact.sample(60).observations[:, F_IDX].numpy() for _ in range(50)])
    assert not np.isin(oldest, drawn).any()


def test_memory_efficient_bytes_per_transition():
    obs_space = spaces.Box(-1, 1, (24,), np.float32)
    act_space = spaces.Box(-1, 1, (6,), np.float32)

    sac = ReplayBuffer(20_000, obs_space, act_space, device="cpu", n_envs=20)
    sac_compact = ReplayBuffer(
        20_000, obs_space, act_space, device="cpu", n_envs=20, optimize_memory_usage=True, handle_timeout_termination=False
    )
    ours = HistoryReplayBuffer(20_000, obs_space, act_space, device="cpu", n_envs=20, history_len=128)
    compact = HistoryReplayBuffer(
        20_000, obs_space, act_space, device="cpu", n_envs=20, history_len=128, optimize_memory_usage=True
    )
    assert bytes_per_transition(compact) - bytes_per_transition(sac_compact) == 3  # counter, sampleable, kept flag
    assert bytes_per_transition(ours) - bytes_per_transition(sac) == 2
    assert bytes_per_transition(compact) < 0.6 * bytes_per_transition(ours)


def test_dmashsac_trains_the_same_with_the_memory_efficient_buffer():
    """Until the buffer is full the memory-efficient buffer draws the same rows with the same contents, so training
    (episode ends and context warm-ups included) ends with the same parameters."""
    import aib
    from sb3_dmash import DMASHSAC

    def train(optimize: bool) -> dict[str, th.Tensor]:
        env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=4, seed=0)
        model = DMASHSAC(
            "MlpPolicy", env, optimize_memory_usage=optimize, learning_starts=4 * 60, batch_size=32, seed=0,
            policy_kwargs=dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8),
        )  # fmt: skip
        model.learn(4 * 330)  # three 100-step episodes end, each followed by a context warm-up
        assert model.replay_buffer.optimize_memory_usage is optimize and not model.replay_buffer.full
        if optimize:
            assert model.replay_buffer._kept_next_obs  # the reset after the warm-up rows
        return model.policy.state_dict()

    plain, compact = train(False), train(True)
    for key, value in plain.items():
        assert th.equal(value, compact[key]), key
