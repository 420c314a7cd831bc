"""Policy options as SB3's ``tests/test_custom_policy.py`` checks them for SAC: every ``net_arch`` form, activation
functions and optimisers; and the forms the method makes impossible, refused with the reason and what works."""

import pytest
import torch as th
from stable_baselines3 import SAC

import aib
from sb3_dmash import DMASHSAC, DMASHPolicy, DynamicsAlignmentCallback, HistoryReplayBuffer

NET_ARCHS = [[], [4], [4, 4], dict(qf=[8], pi=[8, 4]), dict(pi=[8], qf=[4, 8])]
SMALL = dict(hypernet_arch=[8], encoder_dim=8)


def _env(method: str):
    aware = method in ("concat", "decision_adapter")
    return aib.make_vec_env("AIB-DI-v0", "train", n_envs=2, seed=0, env_kwargs={"context_aware": aware})


def _allowed(method: str, net_arch) -> bool:
    arch = net_arch if isinstance(net_arch, list) else None
    if method in ("dr", "concat"):
        return True  # nothing adapted: linear networks work, as in SAC
    if arch == []:
        return False
    if method == "dmash" and isinstance(net_arch, dict):
        return net_arch["pi"][-1] == net_arch["qf"][-1]  # one set of adapter weights for all networks
    return True


@pytest.mark.parametrize("method", ["dmash", "dma_star", "decision_adapter", "concat", "dr"])
@pytest.mark.parametrize("net_arch", NET_ARCHS, ids=str)
def test_net_arch_forms(method, net_arch):
    def make():
        policy_kwargs = dict(net_arch=net_arch, **SMALL)
        return DMASHSAC(
            "MlpPolicy", _env(method), method=method, learning_starts=20, batch_size=8, policy_kwargs=policy_kwargs
        )

    if _allowed(method, net_arch):
        make().learn(40)
    else:
        with pytest.raises(ValueError, match=r"net_arch=.*(need at least one hidden layer|need the same last width)"):
            make()


def test_impossible_net_archs_say_what_works():
    with pytest.raises(ValueError, match=r"actor, critics and forward model of this method.*method='dr' or method='concat'"):
        DMASHSAC("MlpPolicy", _env("dmash"), policy_kwargs=dict(net_arch=[]))
    with pytest.raises(ValueError, match=r"same last width.*shared_hypernet=False"):
        DMASHSAC("MlpPolicy", _env("dmash"), policy_kwargs=dict(net_arch=dict(pi=[8], qf=[4])))
    # and what it says works does
    DMASHSAC("MlpPolicy", _env("dmash"), shared_hypernet=False, policy_kwargs=dict(net_arch=dict(pi=[8], qf=[4]), **SMALL))


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        dict(activation_fn=th.nn.Tanh),
        dict(activation_fn=th.nn.ELU, n_critics=3),
        dict(optimizer_class=th.optim.RMSprop, optimizer_kwargs=dict(alpha=0.9)),
        dict(optimizer_class=th.optim.AdamW, optimizer_kwargs=dict(weight_decay=0.01)),
    ],
    ids=str,
)
def test_policy_kwargs(policy_kwargs):
    policy_kwargs = dict(net_arch=[8], **SMALL, **policy_kwargs)
    model = DMASHSAC("MlpPolicy", _env("dmash"), learning_starts=20, batch_size=8, policy_kwargs=policy_kwargs)
    model.learn(40)
    if "optimizer_class" in policy_kwargs:
        for optimizer in (model.actor.optimizer, model.critic.optimizer, model.policy.context.optimizer):
            assert isinstance(optimizer, policy_kwargs["optimizer_class"])
    if "n_critics" in policy_kwargs:
        assert len(model.critic(*_critic_inputs(model))) == 3


def _critic_inputs(model):
    data = model.replay_buffer.sample(8)
    obs = data.observations
    return obs, data.actions, model.policy.rl_context(obs, model.context_window(data), training=False)


@pytest.mark.parametrize("net_arch", [[4], dict(pi=[8, 4], qf=[4])], ids=str)
def test_net_arch_with_sb3_sac(net_arch):
    model = SAC(
        DMASHPolicy, _env("dmash"), replay_buffer_class=HistoryReplayBuffer, learning_starts=20, batch_size=8,
        policy_kwargs=dict(net_arch=net_arch, **SMALL),
    )  # fmt: skip
    model.learn(40, callback=DynamicsAlignmentCallback())
