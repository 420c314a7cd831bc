"""generalized State-Dependent Exploration (gSDE) on the adapted actor, mirroring SB3's ``tests/test_sde.py`` and the
gSDE cases of ``tests/test_run.py`` for SAC."""

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env

import aib
from sb3_dmash import DMASHSAC, DMASHPolicy, DynamicsAlignmentCallback, HistoryReplayBuffer

SMALL = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)


@pytest.mark.parametrize("method", ["dmash", "dr"])
@pytest.mark.parametrize("use_expln", [False, True])
def test_state_dependent_noise(method, use_expln):
    policy_kwargs = dict(log_std_init=-2, use_expln=use_expln, **SMALL)
    model = DMASHSAC(
        "MlpPolicy", "Pendulum-v1", method=method, use_sde=True, learning_starts=32, batch_size=32, seed=1,
        policy_kwargs=policy_kwargs,
    )  # fmt: skip
    assert model.actor.use_sde and model.actor.get_std().shape == (16, 1)
    model.learn(200)
    assert np.isfinite(model.logger.name_to_value["train/actor_loss"])
    model.policy.reset_noise()
    std = model.actor.get_std()
    assert th.all(std > 0)
    if not use_expln:
        # the log-std matrix started at -2 and is a trained parameter
        assert not th.allclose(model.actor.log_std, th.full_like(model.actor.log_std, -2.0))


def test_noise_is_a_function_of_the_state_and_of_the_sampled_weights():
    model = DMASHSAC("MlpPolicy", "Pendulum-v1", method="dr", use_sde=True, seed=0, policy_kwargs=SMALL)
    actor, policy = model.actor, model.policy
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(8)]))
    context = policy.rl_context(obs, None, training=False)
    with th.no_grad():
        actor.reset_noise()
        first, again = actor(obs, context), actor(obs, context)
        th.testing.assert_close(first, again)  # fixed weights: the same state gives the same action ...
        assert len(th.unique(first - actor(obs, context, deterministic=True))) > 1  # ... noise differs by state
        actor.reset_noise()
        assert not th.allclose(first, actor(obs, context))  # new weights, new noise
        actor.reset_noise(batch_size=8)  # one set of weights per env
        per_env = actor(obs, context)
        assert per_env.shape == (8, 1)


def test_sde_sample_freq_and_warmup(monkeypatch):
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=4, seed=0)
    model = DMASHSAC(
        "MlpPolicy", env, use_sde=True, sde_sample_freq=4, use_sde_at_warmup=True, learning_starts=40, batch_size=32,
        train_freq=(10, "step"), gradient_steps=2, seed=0, policy_kwargs=SMALL,
    )  # fmt: skip
    calls = []
    reset_noise = model.actor.reset_noise
    monkeypatch.setattr(model.actor, "reset_noise", lambda batch_size=1: (calls.append(batch_size), reset_noise(batch_size)))
    # with use_sde_at_warmup the warm-up transitions come from the policy, not from action_space.sample()
    monkeypatch.setattr(model.action_space, "sample", lambda: pytest.fail("uniform warm-up action with use_sde_at_warmup"))
    model.learn(40)
    # SB3's collect_rollouts: one rollout of 10 vector steps resamples at its start and before steps 0, 4 and 8
    assert calls == [4] * 4
    calls.clear()
    model.learn(40, reset_num_timesteps=False)  # a rollout, then 2 update rounds; the first has 2 actor updates
    assert calls == [4] * 4 + [1, 1, 1]  # each round, and before the second actor update (policy_delay=2)


def test_multi_env_with_gsde_and_save_load(tmp_path):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = DMASHSAC("MlpPolicy", env, use_sde=True, learning_starts=40, batch_size=32, seed=0, policy_kwargs=SMALL)
    model.learn(120)
    model.save(tmp_path / "sde.zip")
    loaded = DMASHSAC.load(tmp_path / "sde.zip", env=env)
    assert loaded.use_sde and loaded.actor.use_sde
    th.testing.assert_close(loaded.actor.log_std, model.actor.log_std)
    obs = env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(40, reset_num_timesteps=False)


def test_gsde_with_sb3_sac():
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=4, seed=0)
    model = SAC(
        DMASHPolicy, env, use_sde=True, replay_buffer_class=HistoryReplayBuffer, learning_starts=40, batch_size=32,
        policy_kwargs=SMALL, seed=0,
    )  # fmt: skip
    model.learn(120, callback=DynamicsAlignmentCallback())
    assert model.actor.use_sde and np.isfinite(model.logger.name_to_value["train/actor_loss"])


def test_reset_noise_without_gsde_is_an_error():
    model = DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs=SMALL)
    with pytest.raises(ValueError, match="only available when using gSDE"):
        model.policy.reset_noise()
