"""``predict`` of DMASHSAC: SB3's shape checks plus the stateful contract (RecurrentPPO-style state, ``episode_start``).

The state is a :class:`~sb3_dmash.dmash.policies.ContextState` whose window holds the last K transitions
``(s, a, s' - s)`` (actions scaled to [-1, 1]), oldest first.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.dmash.policies import ContextState

POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)
K = 5


def make_model(env="Pendulum-v1", **kwargs) -> DMASHSAC:
    policy_kwargs = {**POLICY_KWARGS, **kwargs.pop("policy_kwargs", {})}
    return DMASHSAC("MlpPolicy", env, history_len=K, policy_kwargs=policy_kwargs, seed=0, **kwargs)


@pytest.fixture(scope="module")
def model() -> DMASHSAC:
    return make_model()


def make_vec(n_envs: int) -> DummyVecEnv:
    return DummyVecEnv([lambda: gym.make("Pendulum-v1")] * n_envs)


def test_predict_single_obs(model):
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    for deterministic in (True, False):
        action, state = model.predict(obs, deterministic=deterministic)
        assert isinstance(action, np.ndarray)
        assert action.shape == env.action_space.shape
        assert env.action_space.contains(action)
        assert isinstance(state, ContextState)
        assert state.window.shape == (1, K, 2 * 3 + 1)


@pytest.mark.parametrize("n_envs", [1, 3])
def test_predict_vectorized_obs(model, n_envs):
    vec_env = make_vec(n_envs)
    vec_env.seed(0)
    obs = vec_env.reset()
    state, episode_start = None, np.ones(n_envs, dtype=bool)
    for _ in range(4):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        assert action.shape == (n_envs, *vec_env.action_space.shape)
        assert all(vec_env.action_space.contains(a) for a in action)
        assert state.window.shape == (n_envs, K, 7)
        assert state.last_obs.shape == (n_envs, 3) and state.last_action.shape == (n_envs, 1)
        obs, _, dones, _ = vec_env.step(action)
        episode_start = dones
    # An observation of the wrong shape is rejected, as in SB3
    with pytest.raises(ValueError):
        model.predict(np.zeros((n_envs, 5), dtype=np.float32))


def test_stochastic_actions_in_action_space():
    # A tiny action range: the squashed Gaussian must still respect it after unscaling
    model = make_model(env=gym.wrappers.RescaleAction(gym.make("Pendulum-v1"), np.float32(-0.1), np.float32(0.3)))
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    for deterministic in (True, False):
        action, _ = model.predict(obs, deterministic=deterministic)
        assert np.all(action >= np.float32(-0.1)) and np.all(action <= np.float32(0.3))


def test_predict_without_state_returns_fresh_state(model):
    obs = np.array([[0.5, -0.5, 1.0]], dtype=np.float32)
    action, state = model.predict(obs, deterministic=True)
    # The initial window: the observation repeated, zero action, zero Δs; the pending transition is (obs, action)
    np.testing.assert_allclose(state.window[0, :, :3], np.repeat(obs, K, axis=0))
    assert np.all(state.window[0, :, 3:] == 0)
    np.testing.assert_allclose(state.last_obs, obs)
    np.testing.assert_allclose(state.last_action, model.policy.scale_action(action), atol=1e-6)
    assert state.has_prev.tolist() == [True]
    # Without a state, each call starts afresh: no adaptation, same deterministic action
    action2, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(action, action2)


def test_state_carries_transitions(model):
    env = gym.make("Pendulum-v1")
    obs0, _ = env.reset(seed=1)
    action0, state = model.predict(obs0, deterministic=True)
    obs1, *_ = env.step(action0)
    action1, state1 = model.predict(obs1, state=state, deterministic=True)
    # The newest entry is (s0, a0, s1 - s0), with a0 scaled to [-1, 1]
    newest = state1.window[0, -1]
    np.testing.assert_allclose(newest[:3], obs0, rtol=1e-6)
    np.testing.assert_allclose(newest[3:4], model.policy.scale_action(action0), atol=1e-6)
    np.testing.assert_allclose(newest[4:], obs1 - obs0, rtol=1e-5, atol=1e-6)
    # The older entries shifted by one
    np.testing.assert_array_equal(state1.window[0, :-1], state.window[0, 1:])
    # The caller's state was not modified in place
    assert np.all(state.window[0, :, 3:] == 0)
    # The window changes the context: the action for obs1 differs from the stateless one (no adaptation)
    stateless, _ = model.predict(obs1, deterministic=True)
    assert not np.allclose(action1, stateless)

    # After K + 2 steps the window is full of real transitions
    obs = obs1
    for _ in range(K + 2):
        action, state1 = model.predict(obs, state=state1, deterministic=True)
        obs, *_ = env.step(action)
    assert np.all(np.abs(state1.window[0, :, 4:]).sum(axis=1) > 0)


def test_episode_start_reset():
    model = make_model()
    assert model.policy.history_on_episode_start == "reset"
    obs = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=np.float32)
    _, state = model.predict(obs, deterministic=True)
    _, state = model.predict(obs + 0.1, state=state, deterministic=True)
    new_obs = obs - 0.2
    _, state2 = model.predict(new_obs, state=state, episode_start=np.array([True, False]), deterministic=True)
    # env 0: a fresh window from its new observation; env 1: one more transition
    np.testing.assert_allclose(state2.window[0, :, :3], np.repeat(new_obs[:1], K, axis=0))
    assert np.all(state2.window[0, :, 3:] == 0)
    np.testing.assert_allclose(state2.window[1, -1, :3], obs[1] + 0.1)
    np.testing.assert_allclose(state2.window[1, -1, 4:], new_obs[1] - (obs[1] + 0.1), atol=1e-6)


def test_episode_start_keep():
    model = make_model(policy_kwargs=dict(history_on_episode_start="keep"))
    obs = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=np.float32)
    _, state = model.predict(obs, deterministic=True)
    _, state = model.predict(obs + 0.1, state=state, deterministic=True)
    new_obs = obs - 0.2
    _, state2 = model.predict(new_obs, state=state, episode_start=np.array([True, False]), deterministic=True)
    # env 0: the window is kept and no transition is added across the reset
    np.testing.assert_array_equal(state2.window[0], state.window[0])
    # env 1: one more transition
    np.testing.assert_array_equal(state2.window[1, :-1], state.window[1, 1:])
    np.testing.assert_allclose(state2.window[1, -1, :3], obs[1] + 0.1)
    # Afterwards the next transition starts from the new observation
    _, state3 = model.predict(new_obs + 0.05, state=state2, deterministic=True)
    np.testing.assert_allclose(state3.window[0, -1, :3], new_obs[0])


def test_mark_reset_and_update_history(model):
    policy = model.policy
    obs = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    _, state = model.predict(obs, deterministic=True)
    _, state = model.predict(obs + 0.1, state=state, deterministic=True)

    # mark_reset keeps the window but drops the pending transition
    marked = policy.mark_reset(state)
    np.testing.assert_array_equal(marked.window, state.window)
    assert not marked.has_prev.any() and state.has_prev.all()
    _, after = model.predict(obs + 0.5, state=marked, deterministic=True)
    np.testing.assert_array_equal(after.window, state.window)

    # update_history records the executed action (e.g. with added noise) instead of the returned one
    executed = np.array([[0.75]], dtype=np.float32)
    updated = policy.update_history(state, obs + 0.1, executed)
    np.testing.assert_array_equal(updated.last_action, executed)
    assert updated.has_prev.all()
    _, after = model.predict(obs + 0.3, state=updated, deterministic=True)
    np.testing.assert_allclose(after.window[0, -1], np.concatenate([obs[0] + 0.1, executed[0], [0.2, 0.2, 0.2]]), atol=1e-6)

    # update_history also works on a fresh state (no pending transition yet)
    fresh = policy.initial_state(obs)
    assert not fresh.has_prev.any()
    assert policy.update_history(fresh, obs, executed).has_prev.all()


def test_wrong_state_shape(model):
    obs = np.zeros((3, 3), dtype=np.float32)
    _, state = model.predict(obs)
    with pytest.raises(ValueError, match=r"state.window has shape \(3, 5, 7\); expected \(2, 5, 7\)"):
        model.predict(obs[:2], state=state)
    bad = state._replace(window=state.window[:, 1:])
    with pytest.raises(ValueError, match=r"state.window has shape \(3, 4, 7\)"):
        model.predict(obs, state=bad)
    # A plain tuple with the right shapes is accepted
    model.predict(obs, state=tuple(state))


class PredictSpy:
    """Wraps ``policy.predict`` and records whether each call got a state and an ``episode_start``."""

    def __init__(self, policy):
        self.predict = policy.predict
        self.got_state: list[bool] = []
        self.windows: list[np.ndarray] = []

    def __call__(self, observation, state=None, episode_start=None, deterministic=False):
        self.got_state.append(state is not None)
        action, new_state = self.predict(observation, state, episode_start, deterministic)
        self.windows.append(new_state.window.copy())
        return action, new_state


def test_evaluate_policy_carries_state(monkeypatch):
    model = make_model(env=aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0))
    spy = PredictSpy(model.policy)
    monkeypatch.setattr(model.policy, "predict", spy)
    eval_env = aib.make_vec_env("AIB-DI-v0", "eval_in", n_envs=2, seed=1)
    mean_reward, _ = evaluate_policy(model, eval_env, n_eval_episodes=2, deterministic=True)
    assert np.isfinite(mean_reward)
    assert len(spy.got_state) == 100  # two 100-step episodes in parallel
    assert spy.got_state[0] is False and all(spy.got_state[1:])
    # The window really fills up with the episode's transitions (Δs != 0 in every entry after K + 1 steps)
    assert np.all(np.abs(spy.windows[K + 1][..., -4:]).sum(axis=-1) > 0)


def test_eval_callback_carries_state(monkeypatch, tmp_path):
    model = make_model(env=aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0), learning_starts=1000)
    spy = PredictSpy(model.policy)
    monkeypatch.setattr(model.policy, "predict", spy)
    eval_env = aib.make_vec_env("AIB-DI-v0", "eval_in", n_envs=1, seed=1)
    callback = EvalCallback(eval_env, n_eval_episodes=1, eval_freq=10, log_path=str(tmp_path), warn=False)
    model.learn(20, callback=callback)
    assert len(callback.evaluations_results) == 1
    assert len(spy.got_state) == 100
    assert spy.got_state[0] is False and all(spy.got_state[1:])


def test_actor_predict_is_the_policy_predict():
    """SB3's ``model.actor.predict``: the owning policy's predict (stateless: the initial window)."""
    model = DMASHSAC("MlpPolicy", "Pendulum-v1", seed=0, policy_kwargs=dict(net_arch=[16], hypernet_arch=[8]))
    obs = np.stack([model.observation_space.sample() for _ in range(3)])
    action, state = model.actor.predict(obs, deterministic=True)
    expected, _ = model.policy.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, expected)
    assert action.shape == (3, 1) and state is not None
    single, _ = model.actor.predict(obs[0], deterministic=True)
    assert single.shape == model.action_space.shape
