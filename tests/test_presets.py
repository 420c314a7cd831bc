"""The paper's baselines and ablations as presets of DMASHSAC: each trains, round-trips, and is what it says."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.common.context_encoders import AvgL1Norm, ProbabilisticLSTMContextEncoder, SimNorm
from sb3_dmash.common.hypernetworks import HyperNetwork
from sb3_dmash.dmash.presets import METHODS

SMALL = dict(net_arch=[32, 32], hypernet_arch=[16], encoder_dim=8)
AWARE = ("concat", "decision_adapter")


def make_model(method="dmash", n_envs=4, **kwargs):
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=n_envs, seed=0, env_kwargs={"context_aware": method in AWARE})
    policy_kwargs = {**SMALL, **kwargs.pop("policy_kwargs", {})}
    return DMASHSAC(
        "MlpPolicy", env, method=method, learning_starts=100, batch_size=32, seed=0, policy_kwargs=policy_kwargs, **kwargs
    )


def hypernets(module):
    return [m for m in module.modules() if isinstance(m, HyperNetwork)]


@pytest.mark.parametrize("method", list(METHODS))
def test_preset_trains_saves_loads_and_predicts_identically(method, tmp_path):
    model = make_model(method)
    model.learn(300)
    assert model.method == method
    path = tmp_path / f"{method}.zip"
    model.save(path)
    loaded = DMASHSAC.load(path, env=model.get_env())
    assert loaded.policy_kwargs == model.policy_kwargs
    for (name, a), (_, b) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items(), strict=True):
        assert th.equal(a, b), name
    venv = model.get_env()
    obs = venv.reset()
    state_a = state_b = None
    for _ in range(5):  # carry the state so the window (when there is one) really is used
        act_a, state_a = model.predict(obs, state=state_a, deterministic=True)
        act_b, state_b = loaded.predict(obs, state=state_b, deterministic=True)
        np.testing.assert_array_equal(act_a, act_b)
        obs, *_ = venv.step(act_a)
    loaded.learn(100, reset_num_timesteps=False)


def test_dr_builds_no_context_machinery():
    policy = make_model("dr").policy
    assert policy.context is None
    assert not hypernets(policy)
    assert policy.actor.net.trunk.body[0].in_features == 4  # the plain observation


def test_dmash_has_exactly_one_hypernetwork_shared_by_all():
    model = make_model("dmash")
    policy = model.policy
    assert hypernets(policy) == [policy.context.hypernet]
    assert policy.context.fm_merge == "hypernet" and policy.routing.rl_merge == "hypernet_shared"
    assert isinstance(policy.context.encoder.input_norm, AvgL1Norm)
    assert isinstance(policy.context.encoder.output_norm, SimNorm)
    assert policy.context.encoder.mask_prob == 0.4


def test_decision_adapter_has_one_hypernetwork_per_network():
    policy = make_model("decision_adapter").policy
    assert policy.context is None
    assert len(hypernets(policy.actor)) == 1
    assert len(hypernets(policy.critic)) == 2
    assert len(hypernets(policy.critic_target)) == 2  # Polyak copies
    assert policy.actor.net.hypernet.trunk[0].in_features == 2  # the two raw context values (mass, action_factor)


def test_concat_reads_the_true_context_from_the_observation():
    model = make_model("concat")
    policy = model.policy
    assert policy.context is None and policy.context_obs_dim == 2
    obs = th.as_tensor(model.get_env().reset())
    context = policy.rl_context(obs, None, training=False)
    th.testing.assert_close(context.z, obs[:, 4:])
    assert policy.actor.net.trunk.body[0].in_features == 4 + 2


@pytest.mark.parametrize(
    ("method", "mask", "input_norm", "output_norm"),
    [("dma_star", 0.2, AvgL1Norm, SimNorm), ("dma", 0.0, th.nn.Identity, th.nn.Identity)],
)
def test_dma_variants_concatenate_z(method, mask, input_norm, output_norm):
    policy = make_model(method).policy
    assert not hypernets(policy)
    assert policy.context.fm_merge == "concat" and policy.routing.rl_merge == "concat"
    encoder = policy.context.encoder
    assert encoder.mask_prob == mask
    assert isinstance(encoder.input_norm, input_norm) and isinstance(encoder.output_norm, output_norm)
    assert policy.actor.net.trunk.body[0].in_features == 4 + 8


def test_dma_pearl_uses_a_probabilistic_encoder_and_kl():
    model = make_model("dma_pearl")
    encoder = model.policy.context.encoder
    assert isinstance(encoder, ProbabilisticLSTMContextEncoder)
    assert model.policy.context.kl_weight == 0.4
    window = th.randn(16, model.history_len, 10)
    assert th.equal(encoder(window, training=False), encoder(window, training=False))  # the mean
    z, kl = encoder.forward_with_kl(window, training=True)
    assert z.shape == (16, 8) and kl.item() >= 0


def test_aware_methods_need_context_aware_envs():
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0)
    for method in AWARE:
        with pytest.raises(ValueError, match=rf"method='{method}'.*context_aware=True"):
            DMASHSAC("MlpPolicy", env, method=method, policy_kwargs=SMALL)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"method='sac' is unknown; expected one of \['dmash', 'dma_star', 'dma'"):
        make_model("sac")


def _encoder_moved_by_rl(**switches):
    model = make_model(policy_delay=1, **switches)
    model.learn(300)
    encoder = [p.detach().clone() for p in model.policy.context.encoder.parameters()]
    model.train(gradient_steps=3, batch_size=32)  # RL losses only
    return any(not th.equal(a, b) for a, b in zip(encoder, model.policy.context.encoder.parameters(), strict=True))


def test_detach_switches_route_rl_gradients_into_the_encoder():
    assert not _encoder_moved_by_rl()
    assert _encoder_moved_by_rl(actor_detach=False)
    assert _encoder_moved_by_rl(critic_detach=False)


def test_actor_update_alone_moves_the_encoder_without_actor_detach():
    model = make_model(actor_detach=False, policy_delay=1)
    model.learn(300)
    data = model.replay_buffer.sample(32)
    before = [p.detach().clone() for p in model.policy.context.encoder.parameters()]
    obs = model.policy.flatten_obs(data.observations)
    context = model.policy.rl_context(obs, model.context_window(data), training=True, detach=False)
    actions, log_prob = model.actor.action_log_prob(obs, context)
    loss = (log_prob - th.min(*model.critic(obs, actions, context))).mean()
    model._optimize(loss, model.actor.optimizer, model.policy.context.optimizer)
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.context.encoder.parameters(), strict=True))


def test_separate_hypernetworks_ablation():
    policy = make_model(shared_hypernet=False).policy
    assert policy.routing.rl_merge == "hypernet"
    assert len(hypernets(policy.actor)) == 1 and len(hypernets(policy.critic)) == 2
    assert policy.context.hypernet is not None and policy.context.fm_merge == "hypernet"  # the forward model keeps its own


def test_no_dynamics_alignment_ablation():
    model = make_model(shared_hypernet=False, dynamics_alignment=False)
    policy = model.policy
    assert not policy.context.has_forward_model and policy.context.hypernet is None
    assert not policy.critic_detach  # the encoder is trained by the critic loss instead
    model.learn(300)
    assert "train/dynamics_loss" not in model.logger.name_to_value


def test_input_and_output_norm_and_mask_switches():
    policy = make_model(input_mask_prob=0.0, input_norm="layer", output_norm="none").policy
    encoder = policy.context.encoder
    assert encoder.mask_prob == 0.0
    assert isinstance(encoder.input_norm, th.nn.LayerNorm) and isinstance(encoder.output_norm, th.nn.Identity)


def test_ablation_errors():
    with pytest.raises(ValueError, match=r"apply to the inferred-context methods, not method='dr'"):
        make_model("dr", input_mask_prob=0.1)
    with pytest.raises(ValueError, match=r"input_norm='batch' is not allowed"):
        make_model(input_norm="batch")
    with pytest.raises(ValueError, match=r"would never train the encoder"):
        make_model(dynamics_alignment=False, critic_detach=True)


def test_presets_train_bit_identically():
    """Every preset's seeded training on AIB-DI-v0 ends with exactly the parameters recorded in the fixture: a
    refactoring must not change the numerics that running studies depend on (see tests/preset_fingerprints.py)."""
    script = Path(__file__).with_name("preset_fingerprints.py")
    sys.path.insert(0, str(script.parent))
    try:
        from preset_fingerprints import FIXTURE, REPRODUCIBLE_ENV
    finally:
        sys.path.remove(str(script.parent))
    env = {**os.environ, **REPRODUCIBLE_ENV, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    got = json.loads(done.stdout)
    changed = sorted(m for m in expected if got.get(m) != expected[m])
    assert not changed, f"the seeded training of {changed} no longer gives the recorded parameters"
