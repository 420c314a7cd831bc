"""Invalid user input raises ``ValueError`` with a message that names the parameter and the offending value."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

import aib
from sb3_dmash import DMASHSAC, DMASHPolicy

POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)


class DictObsEnv(gym.Env):
    """A Dict-observation env with a continuous action space."""

    observation_space = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (2,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def test_dict_observation_space():
    # Our own check (with the policy class; the "MlpPolicy" alias is rejected earlier by SB3, next case)
    with pytest.raises(ValueError, match=r"flat Box observation space, got Dict\("):
        DMASHSAC(DMASHPolicy, DictObsEnv(), policy_kwargs=POLICY_KWARGS)
    with pytest.raises(ValueError, match=r"dict observation space, not MlpPolicy"):
        DMASHSAC("MlpPolicy", DictObsEnv(), policy_kwargs=POLICY_KWARGS)
    with pytest.raises(ValueError, match=r"flat Box observation space, got Dict\("):
        DMASHPolicy(DictObsEnv.observation_space, DictObsEnv.action_space, lambda _: 1e-3, **POLICY_KWARGS)


def test_discrete_action_space():
    with pytest.raises(ValueError, match=r"Box \(continuous\) action space, got Discrete\(2\)"):
        DMASHSAC("MlpPolicy", "CartPole-v1", policy_kwargs=POLICY_KWARGS)


@pytest.mark.parametrize("history_len", [0, -3, 2.5, True])
def test_history_len(history_len):
    with pytest.raises(ValueError, match=rf"history_len={history_len!r} must be an integer >= 1"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", history_len=history_len, policy_kwargs=POLICY_KWARGS)


def test_odd_context_dim_with_simnorm():
    with pytest.raises(ValueError, match=r"context_dim=3 must be even with output_norm='simnorm'"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "context_dim": 3})
    # without SimNorm an odd size is fine
    model = DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "context_dim": 3, "output_norm": "none"})
    assert model.policy.context.encoder.context_dim == 3


def test_unknown_history_alignment():
    with pytest.raises(ValueError, match=r"history_alignment='future' is not allowed"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", history_alignment="future", policy_kwargs=POLICY_KWARGS)


def test_batch_size_smaller_than_n_envs():
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=4, seed=0)
    with pytest.raises(ValueError, match=r"batch_size=2 must be >= n_envs=4"):
        DMASHSAC("MlpPolicy", env, batch_size=2, policy_kwargs=POLICY_KWARGS)


@pytest.mark.parametrize("name", ["policy_delay", "actor_updates"])
@pytest.mark.parametrize("value", [0, -1])
def test_policy_delay_and_actor_updates(name, value):
    with pytest.raises(ValueError, match=rf"{name}={value} must be an integer >= 1"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs=POLICY_KWARGS, **{name: value})


def test_net_arch_with_different_last_widths():
    net_arch = dict(pi=[16], qf=[16, 8])
    with pytest.raises(ValueError, match=r"net_arch=\{'pi': \[16\], 'qf': \[16, 8\]\}.*same last width"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "net_arch": net_arch})
    # The forward model's trunk must match too
    net_arch = dict(pi=[16], qf=[16], fm=[32])
    with pytest.raises(ValueError, match=r"net_arch=.*'fm': \[32\].*same last width"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "net_arch": net_arch})
    with pytest.raises(ValueError, match=r"net_arch=\[\]"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "net_arch": []})


def test_other_policy_kwargs():
    with pytest.raises(ValueError, match=r"history_on_episode_start='clear' is not allowed"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "history_on_episode_start": "clear"})
    with pytest.raises(ValueError, match=r"input_norm='batch' is not allowed"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "input_norm": "batch"})
    with pytest.raises(ValueError, match=r"output_norm='tanh' is not allowed"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "output_norm": "tanh"})


def test_other_algorithm_kwargs():
    with pytest.raises(ValueError, match=r"optimize_memory_usage=True is not supported"):
        DMASHSAC(
            "MlpPolicy", "Pendulum-v1", replay_buffer_kwargs=dict(optimize_memory_usage=True), policy_kwargs=POLICY_KWARGS
        )
    with pytest.raises(ValueError, match=r"replay_buffer_class=.*ReplayBuffer.* must be a HistoryReplayBuffer"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", replay_buffer_class=ReplayBuffer, policy_kwargs=POLICY_KWARGS)
    with pytest.raises(ValueError, match=r"ent_coef='auto_-1': the initial value must be > 0"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", ent_coef="auto_-1", policy_kwargs=POLICY_KWARGS)
