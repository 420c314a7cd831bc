"""The design card's shape with SB3's own ``SAC``: ``SAC(DMASHPolicy, env, replay_buffer_class=HistoryReplayBuffer)``
trained with ``callback=DynamicsAlignmentCallback()``.

SAC's update reaches the actor and the critics with observations packed with their windows; the policy acts on the
rollout's real windows while SAC collects; the callback trains the context module; ``SAC.save``/``load`` keep
everything; a missing buffer class or callback is a clear error.
"""

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from test_learning import inversion_probe_accuracy  # the same check as DMASHSAC passes

import aib
from sb3_dmash import DMASHPolicy, HistoryReplayBuffer
from sb3_dmash.common.callbacks import DynamicsAlignmentCallback
from sb3_dmash.common.windows import initial_window

SMALL = dict(net_arch=[16, 16], hypernet_arch=[8], encoder_dim=8)


def make_sac(n_envs=4, seed=0, **kwargs):
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=n_envs, seed=seed)
    params = dict(
        replay_buffer_class=HistoryReplayBuffer,
        buffer_size=5_000,
        learning_starts=40,
        batch_size=32,
        seed=seed,
        policy_kwargs=SMALL,
    )
    params.update(kwargs)
    return SAC(DMASHPolicy, env, **params)


class RecordWindows(DynamicsAlignmentCallback):
    """Records the windows the policy acts on while SAC collects, and the packed batches SAC's update reads."""

    def __init__(self):
        super().__init__()
        self.acting, self.expected = [], []

    def _on_training_start(self) -> None:
        super()._on_training_start()
        policy, act = self.model.policy, self.model.policy.act

        def recording_act(obs, window, deterministic, training_context=False):
            if window is not None and training_context:
                self.acting.append(window.clone())
                self.expected.append(self.model.replay_buffer.rollout_windows(self.model._last_obs))
            return act(obs, window, deterministic, training_context)

        policy.act = recording_act


def test_sac_trains_dmash_policy_with_the_windows():
    model = make_sac()
    recorder = RecordWindows()
    before = {k: v.clone() for k, v in model.policy.context.state_dict().items()}
    model.learn(200, callback=recorder)
    # the encoder, hypernetwork and forward model were trained by the callback ...
    after = model.policy.context.state_dict()
    assert all(not th.equal(before[k], after[k]) for k in before if "encoder" in k or "fm_" in k)
    assert np.isfinite(model.logger.name_to_value["train/dynamics_loss"])
    # ... SAC collected with the rollout's windows: real transitions, not the initial window
    assert len(recorder.acting) == (200 - 40) // 4
    for window, expected in zip(recorder.acting, recorder.expected, strict=True):
        np.testing.assert_array_equal(window.numpy(), expected)
    last = recorder.acting[-1].numpy()
    assert np.abs(last[:, :, 4:5]).sum() > 0  # actions in the window
    assert not np.array_equal(last, initial_window(last[:, -1, :4], 24, 1))
    # ... and SAC's update read packed observations
    assert model.replay_buffer.pack_windows
    sample = model.replay_buffer.sample(32)
    assert sample.observations.shape == (32, model.policy.packed_obs_dim)


def test_sac_update_reads_the_window_of_each_sample():
    model = make_sac()
    model.learn(100, callback=DynamicsAlignmentCallback())
    data = model.replay_buffer.sample(32)
    policy = model.policy
    policy.set_training_mode(False)
    obs, window = data.observations[:, :4], data.history[:, 1:]
    with th.no_grad():
        q_packed = policy.critic(data.observations, data.actions)
        q_given = policy.critic(obs, data.actions, policy.rl_context(obs, window, training=False))
        q_other = policy.critic(obs, data.actions, policy.rl_context(obs, window.flip(0), training=False))
    for a, b, c in zip(q_packed, q_given, q_other, strict=True):
        th.testing.assert_close(a, b)
        assert not th.allclose(a, c)


def test_sac_save_load_keeps_everything(tmp_path):
    model = make_sac()
    model.learn(120, callback=DynamicsAlignmentCallback())
    model.save(tmp_path / "sac_dmash.zip")
    loaded = SAC.load(tmp_path / "sac_dmash.zip", env=model.get_env())
    assert isinstance(loaded.policy, DMASHPolicy)
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, loaded.policy.state_dict()[key]), key
    saved = model.policy.context.optimizer.state_dict()
    restored = loaded.policy.context.optimizer.state_dict()
    assert saved["state"].keys() == restored["state"].keys() and len(saved["state"]) > 0
    for index, state in saved["state"].items():
        for name, value in state.items():
            assert th.equal(value, restored["state"][index][name]), (index, name)
    obs = model.get_env().reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    # and it trains on
    loaded.learn(40, callback=DynamicsAlignmentCallback(), reset_num_timesteps=False)


def test_sac_without_callback_fails_at_the_first_update():
    model = make_sac()
    with pytest.raises(RuntimeError, match=r"without their context windows.*DynamicsAlignmentCallback"):
        model.learn(80)


def test_sac_without_history_buffer_is_refused():
    model = make_sac(replay_buffer_class=ReplayBuffer)
    with pytest.raises(ValueError, match="keeps no context windows; pass replay_buffer_class=HistoryReplayBuffer"):
        model.learn(80, callback=DynamicsAlignmentCallback())


def test_sac_history_len_mismatch_is_refused():
    model = make_sac(replay_buffer_kwargs=dict(history_len=8))
    with pytest.raises(ValueError, match="history_len=8 differs from the policy's history_len=24"):
        model.learn(80, callback=DynamicsAlignmentCallback())


def test_sac_on_an_env_with_another_window_length_warns():
    env = aib.make_vec_env("AIB-Cartpole-v0", "train", n_envs=2, seed=0)
    model = SAC(DMASHPolicy, env, replay_buffer_class=HistoryReplayBuffer, buffer_size=1_000, policy_kwargs=SMALL)
    with pytest.warns(UserWarning, match=r"K=128 but the policy's history_len=24"):
        model.learn(2, callback=DynamicsAlignmentCallback())


def test_sac_route_infers_the_inversion_sign():
    """The learning check of ``tests/test_learning.py``, on SB3's SAC: after 1,000 random vector steps, 50 rounds of
    SAC and 2,000 dynamics updates, a linear probe on z predicts the actuator sign of held-out windows."""
    th.manual_seed(0)
    model = make_sac(
        n_envs=20, learning_starts=20_000, batch_size=240, buffer_size=30_000, policy_kwargs=dict(net_arch=[64, 64])
    )
    callback = DynamicsAlignmentCallback()
    model.learn(21_000, callback=callback)
    for _ in range(2_000):
        callback.update(1)
    accuracy = inversion_probe_accuracy(model)
    assert accuracy > 0.9, accuracy
