"""Train / eval mode of DMASHSAC (SB3's ``test_train_eval_mode`` for SAC).

``set_training_mode`` switches the actor, the critics and the context module. The context encoder's randomness
(random step subset, shuffling, input masking) is chosen by its explicit ``training`` argument, never by
``nn.Module.train()`` / ``.eval()``: the reference collects data with training-mode z from eval-mode networks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

import aib
from sb3_dmash import DMASHSAC, DMASHPolicy, DynamicsAlignmentCallback, HistoryReplayBuffer

POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)


@pytest.fixture(scope="module")
def model() -> DMASHSAC:
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0)
    return DMASHSAC("MlpPolicy", env, policy_kwargs=POLICY_KWARGS, learning_starts=1000, batch_size=16, seed=0)


def modes(model: DMASHSAC) -> set[bool]:
    """The ``training`` flags of every submodule of the actor, the critics and the context module."""
    policy = model.policy
    return {m.training for part in (policy.actor, policy.critic, policy.context) for m in part.modules()}


def test_set_training_mode_flags(model):
    policy = model.policy
    for mode in (True, False, True):
        policy.set_training_mode(mode)
        assert policy.training is mode
        assert policy.actor.training is mode and policy.critic.training is mode and policy.context.training is mode
        assert policy.context.encoder.training is mode and policy.context.hypernet.training is mode
        assert modes(model) == {mode}
        # The target critics are never trained directly: they stay in eval mode
        assert policy.critic_target.training is False
        # The algorithm's aliases are the policy's modules
        assert model.actor is policy.actor and model.critic is policy.critic and model.critic_target is policy.critic_target


def test_predict_and_train_switch_modes(model):
    model.policy.set_training_mode(True)
    obs = np.zeros((2, 4), dtype=np.float32)
    model.predict(obs, deterministic=True)
    assert modes(model) == {False} and model.policy.training is False

    model.learn(40)  # below learning_starts: only fills the replay buffer
    model.train(gradient_steps=1, batch_size=16)
    assert modes(model) == {True} and model.policy.training is True
    assert model.policy.critic_target.training is False
    # Deterministic predictions do not depend on the mode the networks were left in
    model.policy.set_training_mode(True)
    action_after_train, _ = model.predict(obs, deterministic=True)
    action_again, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action_after_train, action_again)


def test_encoder_randomness_follows_training_argument(model):
    context = model.policy.context
    rng = np.random.default_rng(0)
    window = th.as_tensor(rng.normal(size=(8, model.history_len, 2 * 4 + 2)), dtype=th.float32, device=model.device)
    with th.no_grad():
        for module_mode in (True, False):
            context.train(module_mode)
            # training=False: evenly spaced steps, no masking -> the same z every call, whatever the module mode
            z1, z2 = context(window, training=False), context(window, training=False)
            th.testing.assert_close(z1, z2, rtol=0, atol=0)
            # training=True: random subset / order and masking -> z varies between calls, even in eval mode
            z3, z4 = context(window, training=True), context(window, training=True)
            assert not th.allclose(z3, z4)
            assert not th.allclose(z1, z3)
            # The adapter weights follow the same rule
            w1 = context.adapter_weights(window, training=False)
            w2 = context.adapter_weights(window, training=False)
            assert all(th.equal(a, b) for a, b in zip(w1, w2, strict=True))
            w3 = context.adapter_weights(window, training=True)
            assert not all(th.allclose(a, b) for a, b in zip(w1, w3, strict=True))
    model.policy.set_training_mode(False)


def test_deterministic_predict_is_repeatable_in_both_modes(model):
    obs = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    _, state = model.predict(obs, deterministic=True)
    results = []
    for mode in (True, False):
        model.policy.set_training_mode(mode)  # predict switches to eval mode itself
        results.append(model.predict(obs + 0.1, state=state, deterministic=True)[0])
    np.testing.assert_array_equal(results[0], results[1])


def test_rollout_acts_with_training_mode_context(model, monkeypatch):
    """While collecting data the networks are in eval mode but z is inferred in training mode (as the reference);
    the context warm-up acts with eval-mode z."""
    model.learn(10, reset_num_timesteps=False)  # sets up _last_obs and the rollout window
    calls: list[tuple[bool, bool]] = []
    encoder = model.policy.context.encoder
    forward = encoder.forward

    def spy(window, training):
        calls.append((training, encoder.training))
        return forward(window, training)

    monkeypatch.setattr(encoder, "forward", spy)
    model._sample_action(learning_starts=0, n_envs=2)
    assert calls == [(True, False)]
    calls.clear()
    model._warmup_pending = True
    model._sample_action(learning_starts=0, n_envs=2)
    assert calls == [(False, False)] * model.history_len + [(True, False)]
    assert model._warmup_pending is False


# ---------------------------------------------------------------------------------------------------------------------
# A features extractor with BatchNorm and Dropout, as SB3's test_train_eval_mode checks SAC
# ---------------------------------------------------------------------------------------------------------------------
class FlattenBatchNormDropoutExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space):
        super().__init__(observation_space, get_flattened_obs_dim(observation_space))
        self.flatten = th.nn.Flatten()
        self.batch_norm = th.nn.BatchNorm1d(self._features_dim)
        self.dropout = th.nn.Dropout(0.5)

    def forward(self, observations):
        return self.dropout(self.batch_norm(self.flatten(observations)))


def clone_batch_norm_stats(batch_norm):
    return batch_norm.bias.clone(), batch_norm.running_mean.clone()


def _extractor_model(method="dmash", **kwargs):
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0)
    policy_kwargs = dict(features_extractor_class=FlattenBatchNormDropoutExtractor, **POLICY_KWARGS)
    policy_kwargs.update(kwargs.pop("policy_kwargs", {}))
    params = dict(learning_starts=20, batch_size=16, seed=1, policy_kwargs=policy_kwargs)
    params.update(kwargs)
    return DMASHSAC("MlpPolicy", env, method=method, **params)


@pytest.mark.parametrize("method", ["dmash", "dr"])
def test_train_with_batch_norm(method):
    model = _extractor_model(method, tau=0.0)
    actor_bn = model.actor.features_extractor.batch_norm
    critic_bn = model.critic.features_extractor.batch_norm
    target_bn = model.critic_target.features_extractor.batch_norm
    actor_before, critic_before, target_before = map(clone_batch_norm_stats, (actor_bn, critic_bn, target_bn))
    model.learn(100)
    actor_after, critic_after, target_after = map(clone_batch_norm_stats, (actor_bn, critic_bn, target_bn))
    # the actor's and the critics' extractors are trained and their statistics updated
    assert not th.allclose(actor_before[0], actor_after[0]) and not th.allclose(actor_before[1], actor_after[1])
    assert not th.allclose(critic_before[0], critic_after[0]) and not th.allclose(critic_before[1], critic_after[1])
    # tau = 0: the target's weights stay; its running statistics are copied from the critics
    assert th.allclose(target_before[0], target_after[0])
    assert not th.allclose(target_before[1], target_after[1])
    th.testing.assert_close(target_after[1], critic_after[1])
    assert not model.critic_target.training


def test_shared_extractor_is_trained_by_the_actor_only():
    model = _extractor_model(policy_kwargs=dict(share_features_extractor=True))
    assert model.critic.features_extractor is model.actor.features_extractor
    critic_params = {id(p) for group in model.critic.optimizer.param_groups for p in group["params"]}
    assert not critic_params & {id(p) for p in model.actor.features_extractor.parameters()}
    model.learn(60)


def test_collect_rollouts_keeps_batch_norm_statistics():
    model = _extractor_model(learning_starts=0)
    model.learn(2)  # set up the rollout state
    batch_norm = model.actor.features_extractor.batch_norm
    before = clone_batch_norm_stats(batch_norm)
    _, callback = model._setup_learn(10, reset_num_timesteps=False)
    model.collect_rollouts(
        model.get_env(), callback, model.train_freq, model.replay_buffer, model.action_noise, learning_starts=0
    )
    after = clone_batch_norm_stats(batch_norm)
    for a, b in zip(before, after, strict=True):
        th.testing.assert_close(a, b)


def test_predict_with_dropout_batch_norm():
    model = _extractor_model()
    model.learn(60)
    batch_norm = model.actor.features_extractor.batch_norm
    before = clone_batch_norm_stats(batch_norm)
    obs = model.get_env().reset()
    first, _ = model.predict(obs, deterministic=True)
    second, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, second)  # eval mode: no dropout, running statistics
    for a, b in zip(before, clone_batch_norm_stats(batch_norm), strict=True):
        th.testing.assert_close(a, b)


def test_extractor_survives_save_load(tmp_path):
    model = _extractor_model()
    model.learn(60)
    model.save(tmp_path / "fx.zip")
    loaded = DMASHSAC.load(tmp_path / "fx.zip", env=model.get_env())
    assert isinstance(loaded.actor.features_extractor, FlattenBatchNormDropoutExtractor)
    loaded_bn, model_bn = loaded.actor.features_extractor.batch_norm, model.actor.features_extractor.batch_norm
    th.testing.assert_close(loaded_bn.running_mean, model_bn.running_mean)
    obs = model.get_env().reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_extractor_with_observed_context_and_with_sb3_sac():
    # Concat: the true context values bypass the extractor (it sees the 4 DI observations, not the 4 + 2 entries)
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0, env_kwargs={"context_aware": True})
    policy_kwargs = dict(features_extractor_class=FlattenBatchNormDropoutExtractor, **POLICY_KWARGS)
    model = DMASHSAC("MlpPolicy", env, method="concat", learning_starts=20, batch_size=16, policy_kwargs=policy_kwargs)
    assert model.actor.features_extractor.batch_norm.num_features == 4 < env.observation_space.shape[0]
    model.learn(60)
    # SB3's SAC, with the extractor shared by the actor and the critics
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0)
    policy_kwargs["share_features_extractor"] = True
    sac = SAC(
        DMASHPolicy, env, replay_buffer_class=HistoryReplayBuffer, learning_starts=20, batch_size=16,
        policy_kwargs=policy_kwargs,
    )  # fmt: skip
    sac.learn(60, callback=DynamicsAlignmentCallback())
    assert sac.critic.features_extractor is sac.actor.features_extractor
