"""The opt-in speed approximations: bfloat16 hypernetwork heads and one z per update round (``reuse_rl_context``).

Both are off by default; these tests check that each does what it says and nothing more.
"""

import numpy as np
import pytest
import torch as th

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.common import hypernetworks
from sb3_dmash.common.hypernetworks import HyperNetwork

SMALL = dict(net_arch=[32, 32], hypernet_arch=[16, 16], encoder_dim=16)


def _cosine(a: th.Tensor, b: th.Tensor) -> float:
    return th.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_bf16_heads_approximate_fp32_values_and_gradients():
    th.manual_seed(0)
    exact = HyperNetwork(8, 64, 8, [16, 16])
    approx = HyperNetwork(8, 64, 8, [16, 16], head_dtype="bfloat16")
    approx.load_state_dict(exact.state_dict())
    z = th.rand(32, 8)
    out_exact, out_approx = exact(z), approx(z)
    for t_exact, t_approx in zip(out_exact, out_approx, strict=True):
        assert t_approx.dtype == th.float32
        assert not th.equal(t_exact, t_approx)  # the products really ran in bfloat16
        assert (t_exact - t_approx).abs().max() <= 2e-2 * t_exact.abs().max()
    g_exact = th.autograd.grad(out_exact.flat().pow(2).sum(), list(exact.parameters()))
    g_approx = th.autograd.grad(out_approx.flat().pow(2).sum(), list(approx.parameters()))
    for p, ge, ga in zip(approx.parameters(), g_exact, g_approx, strict=True):
        assert p.dtype == ga.dtype == th.float32  # parameters and their gradients stay float32
        assert _cosine(ge, ga) > 0.999


def test_bf16_fallback_matches_the_native_bf16_kernel(monkeypatch):
    """Without bf16 matrix units the heads round operands and results as the native kernel does, in fp32."""
    th.manual_seed(0)
    hyper = HyperNetwork(8, 64, 8, [16, 16], head_dtype="bfloat16")
    z = th.rand(64, 8)
    monkeypatch.setattr(hypernetworks, "_cpu_has_bf16_matmul", lambda: False)
    fallback = hyper(z).flat()
    monkeypatch.setattr(hypernetworks, "_cpu_has_bf16_matmul", lambda: True)
    native = hyper(z).flat()  # torch's own bf16 kernel
    assert fallback.dtype == native.dtype == th.float32
    # Equal up to the summation order inside the product: at most one bf16 rounding step apart.
    assert ((fallback - native).abs() <= 2**-7 * native.abs() + 1e-6).all()
    assert (fallback == native).float().mean() > 0.99


def test_bf16_hypernet_dtype_trains_saves_and_loads(tmp_path):
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0)
    kwargs = dict(policy_kwargs=dict(hypernet_dtype="bfloat16", **SMALL), learning_starts=40, batch_size=16)
    model = DMASHSAC("MlpPolicy", env, seed=0, **kwargs).learn(80)
    assert model.policy.context.hypernet.head_dtype == "bfloat16"
    assert np.isfinite(model.logger.name_to_value["train/dynamics_loss"])
    model.save(tmp_path / "model.zip")
    loaded = DMASHSAC.load(tmp_path / "model.zip", env=env)
    assert loaded.policy.context.hypernet.head_dtype == "bfloat16"
    obs = env.reset()
    a1, _ = model.predict(obs, deterministic=True)
    a2, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(a1, a2, atol=1e-6)


@pytest.mark.parametrize("method", ["decision_adapter", "dmash"])
def test_bf16_reaches_every_hypernetwork(method):
    env_kwargs = {"context_aware": method == "decision_adapter"}
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=1, seed=0, env_kwargs=env_kwargs)
    model = DMASHSAC("MlpPolicy", env, method=method, policy_kwargs=dict(hypernet_dtype="bfloat16", **SMALL))
    hypernets = [m for m in model.policy.modules() if isinstance(m, HyperNetwork)]
    assert hypernets and all(h.head_dtype == "bfloat16" for h in hypernets)


def test_bad_hypernet_dtype_is_a_clear_error():
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=1, seed=0)
    with pytest.raises(ValueError, match=r"hypernet_dtype='float16'.*float32.*bfloat16"):
        DMASHSAC("MlpPolicy", env, policy_kwargs=dict(hypernet_dtype="float16"))


def _encoder_calls_in_one_round(reuse: bool) -> tuple[int, dict[str, th.Tensor]]:
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0)
    model = DMASHSAC(
        "MlpPolicy",
        env,
        seed=0,
        learning_starts=60,
        batch_size=16,
        policy_delay=1,
        actor_updates=2,
        reuse_rl_context=reuse,
        policy_kwargs=SMALL,
    )
    model.learn(60)  # fills the buffer; no update yet
    calls = []
    handle = model.policy.context.encoder.register_forward_hook(lambda *_: calls.append(1))
    th.manual_seed(1)
    model.train(gradient_steps=1, batch_size=16)
    handle.remove()
    return len(calls), {k: v.clone() for k, v in model.critic.state_dict().items()}


def test_reuse_rl_context_infers_z_once_per_round_and_keeps_the_critic_update():
    calls_exact, critic_exact = _encoder_calls_in_one_round(reuse=False)
    calls_reuse, critic_reuse = _encoder_calls_in_one_round(reuse=True)
    assert calls_exact == 3  # the critic's z, then a fresh z for each of the two actor updates
    assert calls_reuse == 1
    for key, value in critic_exact.items():  # the critic update comes first and is the same in both
        assert th.equal(value, critic_reuse[key]), key
