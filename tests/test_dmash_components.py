"""The building blocks of DMA*-SH: adapter, hypernetwork, encoder, gradient routing, the paper's expressivity result."""

import numpy as np
import pytest
import torch as th

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.common.callbacks import DynamicsAlignmentCallback
from sb3_dmash.common.context_encoders import AvgL1Norm, LSTMContextEncoder, SimNorm
from sb3_dmash.common.hypernetworks import AdaptedMLP, HyperNetwork, apply_adapter, apply_adapter_loop

SMALL = dict(net_arch=[32, 32], hypernet_arch=[16, 16], encoder_dim=16)


def test_batched_adapter_equals_loop_values_and_gradients():
    th.manual_seed(0)
    hyper = HyperNetwork(8, 64, 8, [16, 16])
    z = th.rand(12, 8, requires_grad=True)
    h = th.randn(12, 64, requires_grad=True)
    out_batched = apply_adapter(h, hyper(z))
    grads_batched = th.autograd.grad(out_batched.pow(2).sum(), [h, z, *hyper.parameters()])
    out_loop = apply_adapter_loop(h, hyper(z))
    grads_loop = th.autograd.grad(out_loop.pow(2).sum(), [h, z, *hyper.parameters()])
    assert th.allclose(out_batched, out_loop, atol=1e-5)
    for g_batched, g_loop in zip(grads_batched, grads_loop, strict=True):
        assert th.allclose(g_batched, g_loop, atol=1e-4, rtol=1e-4)


def test_adapter_parameter_count_matches_paper():
    hyper = HyperNetwork(8, 256)
    assert hyper.n_generated == 16_672
    assert sum(p.numel() for p in hyper.parameters()) == 1_088_416
    assert hyper(th.rand(3, 8)).n_params == 16_672


def test_initial_generated_weight_scale():
    # The reference's generated weights have a standard deviation of about 0.084 at init with a SimNorm z.
    th.manual_seed(0)
    hyper = HyperNetwork(8, 256)
    z = SimNorm(2)(th.randn(256, 8))
    std = hyper(z).flat().std().item()
    assert 0.07 < std < 0.10, std


def test_hypernetwork_adapter_represents_bilinear_exactly():
    """The paper's expressivity construction: an adapted head computes f(s, z) = s * z exactly."""
    hyper = HyperNetwork(context_dim=1, adapted_dim=4, bottleneck_dim=4, net_arch=[2, 2])
    trunk = AdaptedMLP(1, [4])
    head = th.nn.Linear(4, 1)
    with th.no_grad():
        for p in [*hyper.parameters(), *trunk.parameters(), *head.parameters()]:
            p.zero_()
        hyper.trunk[0].weight[:] = th.tensor([[1.0], [-1.0]])  # -> [relu(z), relu(-z)]
        hyper.trunk[2].weight[:] = th.eye(2)
        hyper.b1_head.bias.zero_()
        hyper.w1_head.bias[:] = th.eye(4).flatten()  # W1 = I, b1 = 0
        # W2 = diag(relu(z) - 1, relu(z) - 1, relu(-z) - 1, relu(-z) - 1), b2 = 0
        for i, source in enumerate([0, 0, 1, 1]):
            hyper.w2_head.weight[i * 4 + i, source] = 1.0
            hyper.w2_head.bias[i * 4 + i] = -1.0
        trunk.body[0].weight[:] = th.tensor([[1.0], [-1.0], [1.0], [-1.0]])  # h = [s, -s, s, -s]
        head.weight[:] = th.tensor([[1.0, -1.0, -1.0, 1.0]])
    s = th.linspace(-3, 3, 41).repeat_interleave(41).unsqueeze(1)
    z = th.linspace(-2, 2, 41).repeat(41).unsqueeze(1)
    out = head(trunk(s, hyper(z)))
    assert th.allclose(out, s * z, atol=1e-5)


def test_norms():
    x = th.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]])
    y = AvgL1Norm()(x)
    assert th.equal(y[0], th.zeros(3))
    assert th.allclose(y[1].abs().mean(), th.tensor(1.0))
    z = SimNorm(2)(th.randn(5, 8))
    assert th.all(z > 0)
    assert th.allclose(z.view(5, 2, 4).sum(-1), th.ones(5, 2))


def test_encoder_subset_and_masking():
    th.manual_seed(0)
    enc = LSTMContextEncoder(obs_dim=4, action_dim=2, history_len=128, mask_prob=0.4)
    assert enc.n_selected == 25
    assert enc.eval_indices.tolist() == [
        0,
        5,
        10,
        15,
        21,
        26,
        31,
        37,
        42,
        47,
        52,
        58,
        63,
        68,
        74,
        79,
        84,
        89,
        95,
        100,
        105,
        111,
        116,
        121,
        127,
    ]
    assert LSTMContextEncoder(4, 2, 24).eval_indices.tolist() == [0, 7, 15, 23]
    # each step's features encode (sample, time) so the selection can be read back
    window = th.arange(128).float().view(1, 128, 1).expand(3, 128, 10).clone()
    window += 1000 * th.arange(3).float().view(3, 1, 1)
    steps = enc.select_steps(window, training=True)
    assert steps.shape == (3, 25, 10)
    for b in range(3):
        times = (steps[b, :, 0] - 1000 * b).long()
        assert len(set(times.tolist())) == 25 and times.min() >= 0 and times.max() < 128
    masked = enc.mask_components(th.ones(2000, 25, 10))
    # whole component vectors are zeroed: s = features 0-3, a = 4-5, ds = 6-9
    for lo, hi in [(0, 4), (4, 6), (6, 10)]:
        part = masked[..., lo:hi]
        assert th.all((part == 0).all(-1) | (part == 1).all(-1))
        assert abs((part[..., 0] == 0).float().mean().item() - 0.4) < 0.02
    # evaluation is deterministic, training is not
    x = th.randn(4, 128, 10)
    assert th.equal(enc(x, training=False), enc(x, training=False))
    assert not th.equal(enc(x, training=True), enc(x, training=True))


def _small_model(**kwargs):
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=4, seed=0)
    return DMASHSAC("MlpPolicy", env, learning_starts=200, batch_size=32, seed=0, policy_kwargs=dict(SMALL), **kwargs)


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return [not th.equal(b, p) for b, p in zip(before, module.parameters(), strict=True)]


def test_gradient_routing():
    model = _small_model()
    model.learn(400)  # fills the buffer and runs a few updates
    policy = model.policy
    encoder, hyper = _snapshot(policy.context.encoder), _snapshot(policy.context.hypernet)
    actor, critic = _snapshot(policy.actor), _snapshot(policy.critic)
    model.train(gradient_steps=4, batch_size=32)  # RL losses only
    assert not any(_changed(encoder, policy.context.encoder))
    assert not any(_changed(hyper, policy.context.hypernet))
    assert any(_changed(actor, policy.actor)) and any(_changed(critic, policy.critic))

    actor, critic, target = _snapshot(policy.actor), _snapshot(policy.critic), _snapshot(policy.critic_target)
    callback = DynamicsAlignmentCallback()
    callback.init_callback(model)
    callback.update(gradient_steps=3)
    assert not any(_changed(actor, policy.actor))
    assert not any(_changed(critic, policy.critic))
    assert not any(_changed(target, policy.critic_target))
    assert all(_changed(encoder, policy.context.encoder)) and all(_changed(hyper, policy.context.hypernet))


def test_manual_dynamics_updates_do_not_accumulate_batches():
    model = _small_model()
    model.learn(300)
    callback = DynamicsAlignmentCallback()
    callback.init_callback(model)
    for _ in range(5):
        callback.update(gradient_steps=3)
    assert len(model._round_batches) == 3  # only the last call's batches wait for train()
    model.train(gradient_steps=3, batch_size=32)
    assert model._round_batches == []


def test_dynamics_updates_match_update_rounds():
    model = _small_model(train_freq=1, gradient_steps=1)
    model.learn(600)
    rounds = model._n_updates
    state = model.policy.context.optimizer.state
    steps = {int(s["step"]) for s in state.values()}
    assert steps == {rounds}


@pytest.mark.parametrize("alignment", ["reference", "causal"])
def test_context_window_alignment(alignment):
    model = _small_model(history_alignment=alignment)
    model.learn(300)
    data = model.replay_buffer.sample(32)
    window = model.context_window(data)
    expected = data.history[:, 1:] if alignment == "reference" else data.history[:, :-1]
    assert th.equal(window, expected)
    assert th.equal(model.context_window(data, next_step=True), data.history[:, 1:])
    assert window.shape[1] == model.history_len == 24


def test_rollout_window_holds_stored_transitions():
    model = _small_model(context_warmup=False)
    model.learn(300)
    buffer = model.replay_buffer
    row = (buffer.pos - 1) % buffer.buffer_size
    window = model.rollout_window()
    np.testing.assert_allclose(window[:, -1, :4], buffer.observations[row])
    np.testing.assert_allclose(window[:, -1, 4:6], buffer.actions[row])
    np.testing.assert_allclose(window[:, -1, 6:], buffer.next_observations[row] - buffer.observations[row], atol=1e-6)
    np.testing.assert_allclose(window[:, -1, :4] + window[:, -1, 6:], buffer.next_observations[row], atol=1e-6)
    prev = (row - 1) % buffer.buffer_size
    np.testing.assert_allclose(window[:, -2, :4], buffer.observations[prev])


def test_update_round_uses_one_batch():
    """The dynamics, critic and actor updates of a round share one batch (as the reference), gathered once."""
    model = _small_model()
    model.learn(300)
    sampled = []
    sample = model.replay_buffer.sample

    def spy(*args, **kwargs):
        sampled.append(sample(*args, **kwargs))
        return sampled[-1]

    model.replay_buffer.sample = spy
    seen = []
    critic_forward = model.critic.forward

    def critic_spy(obs, actions, context):
        seen.append(actions)
        return critic_forward(obs, actions, context)

    model.critic.forward = critic_spy
    model.learn(4 * 5, reset_num_timesteps=False)  # 5 vector steps of 4 sub-envs, 5 update rounds
    assert len(sampled) == 5
    batch_actions = {id(batch.actions) for batch in sampled}
    assert any(id(a) in batch_actions for a in seen)  # the critic ran on the callback's batch
