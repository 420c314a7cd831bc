"""Train / eval mode of DMASHSAC (SB3's ``test_train_eval_mode`` for SAC).

``set_training_mode`` switches the actor, the critics and the context module. The context encoder's randomness
(random step subset, shuffling, input masking) is chosen by its explicit ``training`` argument, never by
``nn.Module.train()`` / ``.eval()``: the reference collects data with training-mode z from eval-mode networks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

import aib
from sb3_dmash import DMASHSAC

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
