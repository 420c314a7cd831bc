"""Same seed, same run (SB3's ``test_deterministic.py`` for SAC).

Two fresh models with the same seed learn (random phase, context warm-up, update rounds with the random encoder
subsets and masks, action noise), then act stochastically with the stateful ``predict``: actions, rewards and every
parameter must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.noise import NormalActionNoise

import aib
from sb3_dmash import DMASHSAC

SEED = 0
N_STEPS_TRAINING = 140  # 2 envs: the episodes end at vector step 100, so the context warm-up runs once
POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)


def train_and_act(seed: int = SEED) -> tuple[DMASHSAC, list[np.ndarray], list[np.ndarray]]:
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=seed)
    model = DMASHSAC(
        "MlpPolicy",
        env,
        policy_kwargs=POLICY_KWARGS,
        action_noise=NormalActionNoise(mean=np.zeros(2), sigma=0.1 * np.ones(2)),
        learning_starts=100,
        train_freq=4,
        batch_size=16,
        buffer_size=1000,
        seed=seed,
    )
    model.learn(2 * N_STEPS_TRAINING)
    env = model.get_env()
    obs = env.reset()
    actions, rewards = [], []
    state, episode_start = None, np.ones(env.num_envs, dtype=bool)
    for _ in range(100):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=False)
        obs, reward, episode_start, _ = env.step(action)
        actions.append(action)
        rewards.append(reward)
    return model, actions, rewards


@pytest.fixture(scope="module")
def runs():
    return [train_and_act() for _ in range(2)]


def test_deterministic_training_common(runs):
    (model_0, actions_0, rewards_0), (model_1, actions_1, rewards_1) = runs
    # the runs went through the warm-up and did update rounds
    assert model_0.replay_buffer.sampleable[: model_0.replay_buffer.pos].sum() < model_0.replay_buffer.pos * 2
    assert model_0._n_updates == model_1._n_updates > 0
    assert sum(actions_0).tolist() == sum(actions_1).tolist()
    assert sum(rewards_0).tolist() == sum(rewards_1).tolist()
    np.testing.assert_array_equal(np.array(actions_0), np.array(actions_1))


def test_deterministic_parameters(runs):
    (model_0, *_), (model_1, *_) = runs
    params_0, params_1 = model_0.get_parameters(), model_1.get_parameters()
    assert params_0.keys() == params_1.keys()
    for key, value in params_0["policy"].items():
        assert th.equal(value, params_1["policy"][key]), key
    assert th.equal(model_0.log_ent_coef, model_1.log_ent_coef)
    buffer_0, buffer_1 = model_0.replay_buffer, model_1.replay_buffer
    np.testing.assert_array_equal(buffer_0.actions, buffer_1.actions)
    np.testing.assert_array_equal(buffer_0.observations, buffer_1.observations)


def test_different_seeds_differ(runs):
    (model_0, *_), _ = runs
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=SEED + 1)
    model = DMASHSAC("MlpPolicy", env, policy_kwargs=POLICY_KWARGS, seed=SEED + 1)
    for key, value in model_0.get_parameters()["policy"].items():
        if key.endswith("weight"):
            assert not th.equal(value, model.get_parameters()["policy"][key]), key
