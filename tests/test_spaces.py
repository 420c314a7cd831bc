"""Action and observation spaces, as SB3's ``tests/test_spaces.py`` checks them for SAC: float64 actions and
observations, Box actions of any shape, and the spaces SAC rejects rejected the same way."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import SAC

from sb3_dmash import DMASHSAC, DMASHPolicy, DynamicsAlignmentCallback, HistoryReplayBuffer

POLICY_KWARGS = dict(net_arch=[8], hypernet_arch=[8], encoder_dim=8)


class BoxEnv(gym.Env):
    """Random observations; the reward is the action's sum, so any learning step touches every action entry."""

    def __init__(self, action_shape=(2,), action_dtype=np.float32, obs_dtype=np.float32):
        self.action_space = spaces.Box(-1, 1, action_shape, action_dtype)
        self.observation_space = spaces.Box(-5, 5, (3,), obs_dtype)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        assert action.shape == self.action_space.shape, action.shape
        self._t += 1
        return self.observation_space.sample(), float(np.sum(action)), False, self._t >= 20, {}


SPACES = {
    "float64 actions": dict(action_dtype=np.float64),
    "float16 actions and observations": dict(action_dtype=np.float16, obs_dtype=np.float16),
    "float64 observations": dict(obs_dtype=np.float64),
    "2x2 actions": dict(action_shape=(2, 2)),
    "2x3x1 actions": dict(action_shape=(2, 3, 1)),
}


def _check_actions(model, env):
    obs, _ = env.reset(seed=0)
    for deterministic in (False, True):
        action, _ = model.predict(obs, deterministic=deterministic)
        assert action.shape == env.action_space.shape and env.action_space.contains(action)


@pytest.mark.parametrize("method", ["dmash", "dma_star", "dr"])
@pytest.mark.parametrize("space", list(SPACES))
def test_box_spaces(space, method):
    env = BoxEnv(**SPACES[space])
    model = DMASHSAC(
        "MlpPolicy", env, method=method, learning_starts=30, batch_size=16, history_len=4, policy_kwargs=POLICY_KWARGS
    )
    model.learn(60)
    _check_actions(model, env)


@pytest.mark.parametrize("space", list(SPACES))
def test_box_spaces_with_sb3_sac(space):
    env = BoxEnv(**SPACES[space])
    model = SAC(
        DMASHPolicy,
        env,
        replay_buffer_class=HistoryReplayBuffer,
        replay_buffer_kwargs=dict(history_len=4),
        learning_starts=30,
        batch_size=16,
        policy_kwargs=dict(history_len=4, **POLICY_KWARGS),
    )
    model.learn(60, callback=DynamicsAlignmentCallback())
    _check_actions(model, env)


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.MultiDiscrete([2, 3]), spaces.MultiBinary(2)], ids=type)
def test_unsupported_action_spaces_are_rejected_as_sac_rejects_them(action_space):
    env = BoxEnv()
    env.action_space = action_space
    with pytest.raises(AssertionError, match="as action spaces but"):
        SAC("MlpPolicy", env)
    with pytest.raises(AssertionError, match="as action spaces but"):
        DMASHSAC("MlpPolicy", env)
