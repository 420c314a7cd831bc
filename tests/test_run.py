"""DMASHSAC learns a few hundred steps in every supported configuration (SB3's ``test_run.py`` for SAC).

Each run is tiny (``net_arch=[16]``, 110-300 transitions, a few dozen update rounds); they check that the code paths
run and log, not that anything is learned (``test_identity.py`` does that).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

import aib
from sb3_dmash import DMASHSAC

POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)
TRAIN_KEYS = ("train/dynamics_loss", "train/critic_loss", "train/actor_loss", "train/ent_coef")


def make_env(n_envs: int = 1, seed: int = 0, **kwargs):
    return aib.make_vec_env("AIB-DI-v0", "train", n_envs=n_envs, seed=seed, **kwargs)


def make_model(env, **kwargs) -> DMASHSAC:
    kwargs = {"learning_starts": 100, "batch_size": 16, "buffer_size": 2000, "seed": 0, **kwargs}
    return DMASHSAC("MlpPolicy", env, policy_kwargs=POLICY_KWARGS, **kwargs)


def assert_trained(model: DMASHSAC, n_rounds: int | None = None) -> None:
    for key in TRAIN_KEYS:
        assert key in model.logger.name_to_value, key
        assert np.isfinite(model.logger.name_to_value[key]), key
    if n_rounds is not None:
        assert model._n_updates == n_rounds
    # one dynamics update per RL update round
    context_steps = {int(s["step"]) for s in model.policy.context.optimizer.state.values()}
    assert context_steps == {model._n_updates}


@pytest.mark.parametrize("n_envs", [1, 4])
def test_run_aib(n_envs):
    env = make_env(n_envs)
    # n_envs=1: 25 rounds, the episode ends at step 100 = learning_starts, so the context warm-up runs once.
    # n_envs=4: 25 vector steps after learning_starts, no episode end.
    total = 125 if n_envs == 1 else 200
    model = make_model(env, learning_starts=100)
    assert model.history_len == 24  # from the AIB metadata of AIB-DI-v0
    model.learn(total, log_interval=100)
    assert model.num_timesteps == total
    assert_trained(model, n_rounds=(total - 100) // n_envs)
    assert model.rollout_window().shape == (n_envs, 24, 2 * 4 + 2)
    assert model.replay_buffer.n_envs == n_envs
    n_context_only = int((~model.replay_buffer.sampleable[: model.replay_buffer.pos]).sum())
    assert n_context_only == (24 if n_envs == 1 else 0)


def test_run_subproc_vec_env():
    env = make_env(2, vec_env_cls=SubprocVecEnv, vec_env_kwargs=dict(start_method="fork"))
    try:
        model = make_model(env, learning_starts=100)
        assert model.history_len == 24  # the metadata is read through the subprocess
        model.learn(130, log_interval=100)
        assert_trained(model, n_rounds=15)
    finally:
        env.close()


def test_run_non_aib_env():
    model = make_model("Pendulum-v1", learning_starts=80)
    assert model.history_len == 24  # the default for non-AIB envs
    assert model.policy.history_len == 24 and model.replay_buffer.history_len == 24
    model.learn(110)
    assert_trained(model, n_rounds=30)


def test_run_history_len_argument():
    model = make_model(make_env(2), history_len=3, learning_starts=100)
    assert model.policy.history_len == 3 and model.replay_buffer.history_len == 3
    model.learn(120, log_interval=100)
    assert_trained(model)
    assert model.rollout_window().shape == (2, 3, 10)


def test_run_causal_alignment():
    model = make_model(make_env(2), history_alignment="causal", learning_starts=100)
    model.learn(120, log_interval=100)
    assert_trained(model, n_rounds=10)


@pytest.mark.parametrize("context_warmup", [True, False])
def test_run_context_warmup(context_warmup):
    # 2 envs: both episodes end at vector step 100 (200 transitions), after learning_starts
    model = make_model(make_env(2), context_warmup=context_warmup, learning_starts=190)
    model.learn(220, log_interval=100)
    assert model.num_timesteps == 220  # warm-up steps do not count
    assert_trained(model, n_rounds=15)
    buffer = model.replay_buffer
    n_warmup = 24 if context_warmup else 0
    assert buffer.pos == 110 + n_warmup
    # warm-up rows are history only: never sampleable
    assert int((~buffer.sampleable[: buffer.pos]).sum()) == 2 * n_warmup
    if context_warmup:
        assert not buffer.sampleable[100:124].any() and buffer.sampleable[124 : buffer.pos].all()
        assert not buffer.dones[100:124].any() and not buffer.rewards[100:124].any()


def test_run_schedules():
    def schedule(initial):
        return lambda progress_remaining: initial * progress_remaining

    model = make_model(
        make_env(2),
        learning_starts=100,
        learning_rate=schedule(1e-3),
        critic_learning_rate=schedule(2e-3),
        context_learning_rate=schedule(3e-3),
        ent_coef_learning_rate=schedule(4e-3),
    )
    model.learn(130, log_interval=100)
    assert_trained(model, n_rounds=15)
    progress = model._current_progress_remaining
    assert 0.0 <= progress < 0.1
    for optimizer, initial in [
        (model.actor.optimizer, 1e-3),
        (model.critic.optimizer, 2e-3),
        (model.policy.context.optimizer, 3e-3),
        (model.ent_coef_optimizer, 4e-3),
    ]:
        assert optimizer.param_groups[0]["lr"] == pytest.approx(initial * progress)
    logged = model.logger.name_to_value
    assert logged["train/learning_rate"] == pytest.approx(1e-3 * progress)
    assert logged["train/critic_learning_rate"] == pytest.approx(2e-3 * progress)
    assert logged["train/context_learning_rate"] == pytest.approx(3e-3 * progress)
    assert logged["train/ent_coef_learning_rate"] == pytest.approx(4e-3 * progress)


def test_run_fixed_ent_coef():
    model = make_model(make_env(2), ent_coef=0.1, learning_starts=100)
    assert model.log_ent_coef is None and model.ent_coef_optimizer is None
    model.learn(120, log_interval=100)
    assert_trained(model)
    assert model.logger.name_to_value["train/ent_coef"] == pytest.approx(0.1)
    assert "train/ent_coef_loss" not in model.logger.name_to_value
    assert float(model.ent_coef_tensor) == pytest.approx(0.1)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_run_action_noise(n_envs):
    noise = NormalActionNoise(mean=np.zeros(2), sigma=0.1 * np.ones(2))
    model = make_model(make_env(n_envs), action_noise=noise, learning_starts=100)
    model.learn(110 if n_envs == 1 else 120, log_interval=100)
    assert_trained(model)
    # actions stay in [-1, 1] after the noise, in the buffer as in the window
    assert np.abs(model.replay_buffer.actions[: model.replay_buffer.pos]).max() <= 1.0


def test_run_ou_action_noise():
    noise = OrnsteinUhlenbeckActionNoise(mean=np.zeros(1), sigma=0.1 * np.ones(1))
    model = make_model("Pendulum-v1", action_noise=noise, learning_starts=100)
    model.learn(110)
    assert_trained(model)


def test_run_vec_normalize():
    # With 2 envs the episodes end at vector step 100: the warm-up runs through VecNormalize as well
    env = VecNormalize(make_env(2), gamma=0.99)
    model = make_model(env, learning_starts=190)
    assert model._vec_normalize_env is env
    model.learn(220, log_interval=100)
    assert_trained(model)
    # the buffer stores the original (unnormalised) observations
    obs = model.replay_buffer.observations[: model.replay_buffer.pos]
    assert np.abs(obs).max() <= 1.0 + 1e-6  # AIB-DI observations lie in [-1, 1]
    assert model.rollout_window().shape == (2, 24, 10)


def test_run_vec_normalize_pendulum():
    env = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), norm_reward=False)
    model = make_model(env, learning_starts=100)
    model.learn(110)
    assert_trained(model)


def test_run_progress_bar():
    model = make_model(make_env(2), learning_starts=100)
    model.learn(110, progress_bar=True, log_interval=100)
    assert_trained(model, n_rounds=5)


def test_run_tensorboard(tmp_path):
    # 2 envs, episodes end at vector step 100 (after 5 update rounds): log_interval=1 dumps the train/ keys there
    model = make_model(make_env(2), learning_starts=190, tensorboard_log=str(tmp_path))
    model.learn(206, log_interval=1)
    assert model._n_updates == 8
    run_dir = tmp_path / "DMASHSAC_1"
    assert run_dir.is_dir()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {*TRAIN_KEYS, "rollout/ep_rew_mean"} <= tags
    assert "train/n_updates" not in tags  # excluded from tensorboard, as SB3
    model.learn(20, tb_log_name="custom", log_interval=1)
    assert (tmp_path / "custom_1").is_dir()


def test_one_log_table_per_vector_step(capsys):
    """20 sub-envs end their episodes together: SB3 would dump a table for every log_interval-th of them."""
    model = make_model(make_env(20), learning_starts=20 * 50, batch_size=40, buffer_size=20 * 300, verbose=1)
    model.learn(20 * 210, log_interval=4)  # episodes end at vector steps 100 and 200, then the final table
    tables = capsys.readouterr().out.count("| time/")
    assert tables == 3, tables


def test_short_run_still_writes_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = make_model(make_env(2), learning_starts=100, tensorboard_log=str(tmp_path))
    model.learn(140)  # no episode ends (DI episodes last 100 vector steps): the table is written at the end of learn()
    events = EventAccumulator(str(tmp_path / "DMASHSAC_1"))
    events.Reload()
    assert set(TRAIN_KEYS) <= set(events.Tags()["scalars"])
