"""Policy of DMA*-SH: context features extractor (encoder + hypernetwork + forward model), actor and critics.

Gradient routing (Benad et al. 2026, §3.3): the encoder and the hypernetwork are trained only by the forward model's
dynamics loss; the actor and the critics read adapter weights computed from a detached z under ``no_grad``. There is
no target encoder and no target hypernetwork: the target critics use the online omega.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import get_device
from torch import nn
from torch.nn import functional as F

from sb3_dmash.common.context_encoders import LSTMContextEncoder, ProbabilisticLSTMContextEncoder
from sb3_dmash.common.hypernetworks import HEAD_DTYPES, AdaptedMLP, AdapterWeights, HyperNetwork, apply_adapter
from sb3_dmash.common.windows import ContextState, entry_dim, initial_window, push_transition, unpack
from sb3_dmash.dmash.routing import FM_MERGES, ContextRouting

HISTORY_ON_EPISODE_START = ("reset", "keep")
ENCODERS = ("lstm", "plstm")
LOG_2PI = math.log(2 * math.pi)
CONTEXT_OPTIMIZER_KEY = "context_optimizer"  # the context optimiser's state inside the critics' optimiser's state


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _check_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; expected one of {allowed}")


class RLContext(NamedTuple):
    """What the actor and the critics read of the context for one batch.

    :param z: the context values concatenated to the network inputs (inferred z, or the observed true context), or
        ``None``.
    :param adapter: adapter weights shared by all RL networks (DMA*-SH), or ``None``.
    """

    z: th.Tensor | None = None
    adapter: AdapterWeights | None = None

    def detach(self) -> RLContext:
        return RLContext(
            None if self.z is None else self.z.detach(),
            None if self.adapter is None else AdapterWeights(*(t.detach() for t in self.adapter)),
        )


ContextReader = Callable[[th.Tensor], tuple[th.Tensor, RLContext]]


def _read(net: nn.Module, obs: th.Tensor, context: RLContext | None) -> tuple[th.Tensor, RLContext]:
    """``(network input, context)``: as given, or read from ``obs`` by the policy's reader when ``context`` is None."""
    if context is not None:
        return obs, context
    reader: ContextReader | None = getattr(net, "context_reader", None)
    if reader is None:
        raise ValueError(f"{type(net).__name__} needs its context: build it through DMASHPolicy, or pass context=")
    return reader(obs)


class ContextFeaturesExtractor(BaseFeaturesExtractor):
    """The inferred-context part of the policy: encoder ``window -> z``, hypernetwork ``z -> omega``, forward model.

    It plays the role of SB3's features extractor for the context: the actor and the critics read z or its adapter
    weights. It owns an optimiser (``.optimizer``) for the encoder, the hypernetwork and the forward model, stepped by
    the dynamics loss (and by the RL losses only when an ablation turns their detach off).

    :param observation_space: the observation space.
    :param action_space: the action space.
    :param history_len: window length K.
    :param fm_net_arch: hidden sizes of the forward model trunk (its last width is the adapted width).
    :param context_dim: size of z.
    :param encoder: ``"lstm"`` (DMA, DMA*, DMA*-SH) or ``"plstm"`` (DMA-Pearl: Gaussian posterior).
    :param encoder_dim: embedding and LSTM size of the encoder.
    :param fm_merge: how the forward model reads z: ``"hypernet"`` (adapter weights from the hypernetwork, DMA*-SH),
        ``"concat"`` (z appended to ``[s, a]``) or ``None`` (no forward model).
    :param shared_hypernet: build the hypernetwork whose weights the RL networks share (DMA*-SH). With
        ``fm_merge="hypernet"`` it is the forward model's.
    :param hypernet_arch: hidden sizes of the hypernetwork.
    :param hypernet_dtype: ``"float32"`` or ``"bfloat16"`` (opt-in approximation) for the hypernetwork's heads.
    :param adapter_bottleneck: adapter bottleneck (default: adapted width // 8).
    :param input_mask_prob: whole-vector masking probability of the encoder input in training.
    :param input_norm: encoder input norm (``"avg_l1"``, ``"layer"``, ``"none"``).
    :param output_norm: encoder output norm (``"simnorm"``, ``"layer"``, ``"none"``).
    :param subset_fraction: fraction of the window's steps the encoder reads.
    :param input_shuffle: shuffle the steps in training when all are read.
    :param kl_weight: DMA-Pearl's beta: the dynamics loss is multiplied by ``1 + kl_weight * KL``.
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        history_len: int,
        fm_net_arch: list[int],
        context_dim: int = 8,
        encoder: str = "lstm",
        encoder_dim: int = 32,
        fm_merge: str | None = "hypernet",
        shared_hypernet: bool = True,
        hypernet_arch: list[int] | None = None,
        hypernet_dtype: str = "float32",
        adapter_bottleneck: int | None = None,
        input_mask_prob: float = 0.4,
        input_norm: str = "avg_l1",
        output_norm: str = "simnorm",
        subset_fraction: float = 0.2,
        input_shuffle: bool = True,
        kl_weight: float = 0.0,
    ) -> None:
        super().__init__(observation_space, features_dim=context_dim)
        obs_dim = int(np.prod(observation_space.shape))
        action_dim = get_action_dim(action_space)
        if encoder not in ENCODERS:
            raise ValueError(f"encoder={encoder!r} is not allowed; expected one of {ENCODERS}")
        if fm_merge not in FM_MERGES:
            raise ValueError(f"fm_merge={fm_merge!r} is not allowed; expected one of {FM_MERGES}")
        encoder_class = ProbabilisticLSTMContextEncoder if encoder == "plstm" else LSTMContextEncoder
        self.encoder = encoder_class(
            obs_dim,
            action_dim,
            history_len,
            context_dim=context_dim,
            embed_dim=encoder_dim,
            input_norm=input_norm,
            output_norm=output_norm,
            mask_prob=input_mask_prob,
            subset_fraction=subset_fraction,
            shuffle=input_shuffle,
        )
        self.fm_merge = fm_merge
        self.kl_weight = float(kl_weight)
        needs_hypernet = shared_hypernet or fm_merge == "hypernet"
        self.hypernet = (
            HyperNetwork(context_dim, fm_net_arch[-1], adapter_bottleneck, hypernet_arch, hypernet_dtype)
            if needs_hypernet
            else None
        )
        if fm_merge is not None:
            fm_in = obs_dim + action_dim + (context_dim if fm_merge == "concat" else 0)
            self.fm_trunk = AdaptedMLP(fm_in, fm_net_arch)
            self.fm_head = nn.Linear(fm_net_arch[-1], obs_dim)
        self.optimizer: th.optim.Optimizer

    @property
    def has_forward_model(self) -> bool:
        return self.fm_merge is not None

    def forward(self, window: th.Tensor, training: bool = False) -> th.Tensor:  # type: ignore[override]
        """Infer z from a window ``(B, K, 2 obs_dim + action_dim)``."""
        return self.encoder(window, training=training)

    def adapter_weights(self, window: th.Tensor, training: bool) -> AdapterWeights:
        """The shared adapter weights for the actor and the critics: from a detached z, without gradient."""
        if self.hypernet is None:
            raise ValueError("this context module has no hypernetwork (its method does not generate adapter weights)")
        with th.no_grad():
            return self.hypernet(self.encoder(window, training=training))

    def predict_dynamics(self, obs: th.Tensor, actions: th.Tensor, z: th.Tensor) -> th.Tensor:
        """Predicted ``s' - s`` for a given z, with gradient into the forward model (and z's producers)."""
        if self.fm_merge == "hypernet":
            assert self.hypernet is not None
            return self.fm_head(self.fm_trunk(th.cat([obs, actions], dim=1), self.hypernet(z)))
        if self.fm_merge == "concat":
            return self.fm_head(self.fm_trunk(th.cat([obs, actions, z], dim=1)))
        raise ValueError("this context module has no forward model (fm_merge=None)")

    def dynamics_loss(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor, window: th.Tensor) -> th.Tensor:
        """Mean squared error of the predicted ``s' - s`` (raw units, as the reference), times ``1 + beta KL`` for
        the probabilistic encoder."""
        obs, actions, next_obs = obs.float(), actions.float(), next_obs.float()  # float64 spaces: the networks' dtype
        if isinstance(self.encoder, ProbabilisticLSTMContextEncoder):
            z, kl = self.encoder.forward_with_kl(window, training=True)
        else:
            z, kl = self.encoder(window, training=True), None
        loss = F.mse_loss(self.predict_dynamics(obs, actions, z), next_obs - obs)
        if kl is not None and self.kl_weight > 0:
            loss = loss * (1.0 + self.kl_weight * kl)
        return loss


class SavableNetwork(nn.Module):
    """SB3's ``BaseModel.save``/``load`` for the actor and the critics: constructor arguments and weights in one file.

    A network loaded alone has no context module: it computes actions or Q-values for a context you pass, while
    :meth:`DMASHPolicy.load` gives back the whole policy (context module and action space included) to act with.
    """

    _constructor_args: dict[str, Any]

    def _record_constructor_args(self, args: dict[str, Any]) -> None:
        self._constructor_args = {k: v for k, v in args.items() if k not in ("self", "__class__")}

    def save(self, path: str) -> None:
        """Save the constructor arguments and the weights to ``path``."""
        th.save({"state_dict": self.state_dict(), "data": self._constructor_args}, path)

    @classmethod
    def load(cls, path: str, device: th.device | str = "auto") -> SavableNetwork:
        """A network saved with :meth:`save`."""
        device = get_device(device)
        saved = th.load(path, map_location=device, weights_only=False)
        network = cls(**saved["data"])
        network.load_state_dict(saved["state_dict"])
        return network.to(device)


class ContextualNetwork(nn.Module):
    """A trunk that reads the context the way its method says: z appended to the input (``"concat"``), adapter weights
    shared from outside (``"hypernet_shared"``), adapter weights from its own hypernetwork (``"hypernet"``, Decision
    Adapter and DMA*-H), or nothing (``"none"``).

    :param input_dim: size of the input without the context.
    :param net_arch: trunk hidden sizes.
    :param activation_fn: activation between layers.
    :param merge: one of :data:`~sb3_dmash.dmash.routing.RL_MERGES`.
    :param context_dim: size of z (for ``"concat"`` and ``"hypernet"``).
    :param hypernet_arch: hidden sizes of the own hypernetwork.
    :param adapter_bottleneck: bottleneck of the own adapter.
    :param hypernet_dtype: ``"float32"`` or ``"bfloat16"`` for the own hypernetwork's heads.
    """

    def __init__(
        self,
        input_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module],
        merge: str,
        context_dim: int = 0,
        hypernet_arch: list[int] | None = None,
        adapter_bottleneck: int | None = None,
        hypernet_dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.merge = merge
        self.trunk = AdaptedMLP(input_dim + (context_dim if merge == "concat" else 0), net_arch, activation_fn)
        self.hypernet = (
            HyperNetwork(context_dim, net_arch[-1], adapter_bottleneck, hypernet_arch, hypernet_dtype)
            if merge == "hypernet"
            else None
        )

    def features(self, x: th.Tensor, context: RLContext) -> th.Tensor:
        if self.merge == "concat":
            assert context.z is not None
            return self.trunk(th.cat([x, context.z], dim=1))
        if self.merge == "hypernet":
            assert context.z is not None and self.hypernet is not None
            return self.trunk(x, self.hypernet(context.z))
        if self.merge == "hypernet_shared":
            return self.trunk(x, context.adapter)
        return self.trunk(x)


class Actor(SavableNetwork):
    """Squashed Gaussian actor on the observation and the context.

    ``log_std = lo + (hi - lo) (tanh(raw) + 1) / 2`` (the reference's mapping to [-5, 2], instead of SB3's clamp).

    :param obs_dim: observation size (without observed context values).
    :param action_dim: action size.
    :param net_arch: trunk hidden sizes.
    :param activation_fn: activation between layers.
    :param log_std_bounds: ``(lo, hi)`` of the log standard deviation.
    :param merge: how the trunk reads the context (see :class:`ContextualNetwork`).
    :param context_dim: size of z.
    :param hypernet_arch: hidden sizes of an own hypernetwork.
    :param adapter_bottleneck: bottleneck of an own adapter.
    :param hypernet_dtype: ``"float32"`` or ``"bfloat16"`` for the own hypernetwork's heads.
    :param use_sde: generalized State-Dependent Exploration (SB3's gSDE, as in SB3's SAC actor): the exploration noise
        is a function of the adapted last hidden layer, resampled by :meth:`reset_noise`; ``log_std_bounds`` is then
        unused.
    :param log_std_init: gSDE: initial log standard deviation.
    :param use_expln: gSDE: ``expln`` instead of ``exp`` for a positive standard deviation.
    :param clip_mean: gSDE: clip the mean to ``[-clip_mean, clip_mean]`` (0: no clipping).
    :param full_std: gSDE: one standard deviation per (latent, action) pair instead of one per latent.
    :param features_extractor: an observation extractor before the trunk (``None``: the trunk reads the observation).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
        merge: str = "hypernet_shared",
        context_dim: int = 0,
        hypernet_arch: list[int] | None = None,
        adapter_bottleneck: int | None = None,
        hypernet_dtype: str = "float32",
        use_sde: bool = False,
        log_std_init: float = -3.0,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        full_std: bool = True,
        features_extractor: nn.Module | None = None,
    ) -> None:
        args = locals()
        super().__init__()
        self._record_constructor_args(args)
        self.features_extractor = features_extractor
        if features_extractor is not None:
            obs_dim = features_extractor.features_dim  # type: ignore[assignment]
        self.net = ContextualNetwork(
            obs_dim, net_arch, activation_fn, merge, context_dim, hypernet_arch, adapter_bottleneck, hypernet_dtype
        )
        self.use_sde = use_sde
        self.action_dist: StateDependentNoiseDistribution | None = None
        if use_sde:
            self.action_dist = StateDependentNoiseDistribution(
                action_dim, full_std=full_std, use_expln=use_expln, learn_features=True, squash_output=True
            )
            self.mu, self.log_std = self.action_dist.proba_distribution_net(
                latent_dim=self.net.trunk.output_dim, latent_sde_dim=self.net.trunk.output_dim, log_std_init=log_std_init
            )
            if clip_mean > 0.0:  # as SB3: a bounded mean avoids numerical issues of the squashed gSDE
                self.mu = nn.Sequential(self.mu, nn.Hardtanh(min_val=-clip_mean, max_val=clip_mean))
        else:
            self.mu = nn.Linear(self.net.trunk.output_dim, action_dim)
            self.log_std = nn.Linear(self.net.trunk.output_dim, action_dim)
        self.log_std_min, self.log_std_max = log_std_bounds
        self.optimizer: th.optim.Optimizer

    def predict(
        self,
        observation: np.ndarray,
        state: ContextState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, ContextState | None]:
        """SB3's ``model.actor.predict``: actions in the env's action space, from the policy that owns this actor
        (:meth:`DMASHPolicy.predict`: without a ``state`` the window is the initial one, i.e. no adaptation)."""
        owner = getattr(self, "_owner", None)
        if owner is None:
            raise ValueError(
                "this Actor was loaded alone, without the policy's context module and action space: load the policy "
                "with DMASHPolicy.load(path) to predict, or call the actor with a context"
            )
        return owner.predict(observation, state, episode_start, deterministic)

    def extract_features(self, obs: th.Tensor) -> th.Tensor:
        """What the trunk reads: the observation, or the features extractor's output."""
        return obs if self.features_extractor is None else self.features_extractor(obs)

    def reset_noise(self, batch_size: int = 1) -> None:
        """Sample new gSDE exploration weights (one set per env with ``batch_size`` envs)."""
        if self.action_dist is None:
            raise ValueError("reset_noise() is only available when using gSDE (use_sde=True)")
        self.action_dist.sample_weights(self.log_std, batch_size=batch_size)  # type: ignore[arg-type]

    def get_std(self) -> th.Tensor:
        """gSDE: the standard deviation of the exploration weights (SB3's ``Actor.get_std``)."""
        if self.action_dist is None:
            raise ValueError("get_std() is only available when using gSDE (use_sde=True)")
        return self.action_dist.get_std(self.log_std)  # type: ignore[arg-type]

    def _sde_distribution(self, obs: th.Tensor, context: RLContext) -> StateDependentNoiseDistribution:
        assert self.action_dist is not None
        features = self.net.features(obs, context)
        return self.action_dist.proba_distribution(self.mu(features), self.log_std, features)  # type: ignore[arg-type]

    def distribution_params(self, obs: th.Tensor, context: RLContext) -> tuple[th.Tensor, th.Tensor]:
        features = self.net.features(obs, context)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (th.tanh(self.log_std(features)) + 1)
        return self.mu(features), log_std

    def forward(self, obs: th.Tensor, context: RLContext | None = None, deterministic: bool = False) -> th.Tensor:
        """Actions in [-1, 1]. Without ``context``, ``obs`` is what SB3 code passes: a plain or packed observation,
        read by the policy (see :meth:`DMASHPolicy.read_context`)."""
        obs, context = _read(self, obs, context)
        obs = self.extract_features(obs)
        if self.use_sde:
            return self._sde_distribution(obs, context).get_actions(deterministic=deterministic)
        mean, log_std = self.distribution_params(obs, context)
        if deterministic:
            return th.tanh(mean)
        return th.tanh(mean + log_std.exp() * th.randn_like(mean))

    def action_log_prob(self, obs: th.Tensor, context: RLContext | None = None) -> tuple[th.Tensor, th.Tensor]:
        """A reparametrised action and its log-probability ``(B, 1)`` under the tanh-squashed Gaussian (``context``:
        as in :meth:`forward`)."""
        obs, context = _read(self, obs, context)
        obs = self.extract_features(obs)
        if self.use_sde:
            distribution = self._sde_distribution(obs, context)
            actions = distribution.get_actions()
            return actions, distribution.log_prob(actions).reshape(-1, 1)
        mean, log_std = self.distribution_params(obs, context)
        noise = th.randn_like(mean)
        actions = th.tanh(mean + log_std.exp() * noise)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * LOG_2PI).sum(dim=1, keepdim=True)
        log_prob = log_prob - th.log(1 - actions.pow(2) + 1e-6).sum(dim=1, keepdim=True)
        return actions, log_prob


class Critic(SavableNetwork):
    """``n_critics`` Q-networks on ``[s, a]`` and the context.

    :param obs_dim: observation size (without observed context values).
    :param action_dim: action size.
    :param net_arch: trunk hidden sizes.
    :param activation_fn: activation between layers.
    :param n_critics: number of Q-networks.
    :param merge: how each trunk reads the context (see :class:`ContextualNetwork`); with ``"hypernet"`` every
        Q-network has its own hypernetwork.
    :param context_dim: size of z.
    :param hypernet_arch: hidden sizes of own hypernetworks.
    :param adapter_bottleneck: bottleneck of own adapters.
    :param hypernet_dtype: ``"float32"`` or ``"bfloat16"`` for the own hypernetwork's heads.
    :param features_extractor: an observation extractor before the trunks (``None``: they read the observation).
    :param share_features_extractor: the extractor is the actor's: no gradient from the critic loss reaches it.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        n_critics: int = 2,
        merge: str = "hypernet_shared",
        context_dim: int = 0,
        hypernet_arch: list[int] | None = None,
        adapter_bottleneck: int | None = None,
        hypernet_dtype: str = "float32",
        features_extractor: nn.Module | None = None,
        share_features_extractor: bool = False,
    ) -> None:
        args = locals()
        super().__init__()
        self._record_constructor_args(args)
        self.n_critics = n_critics
        self.features_extractor = features_extractor
        self.share_features_extractor = share_features_extractor
        if features_extractor is not None:
            obs_dim = features_extractor.features_dim  # type: ignore[assignment]
        self.q_nets = nn.ModuleList(
            [
                ContextualNetwork(
                    obs_dim + action_dim,
                    net_arch,
                    activation_fn,
                    merge,
                    context_dim,
                    hypernet_arch,
                    adapter_bottleneck,
                    hypernet_dtype,
                )
                for _ in range(n_critics)
            ]
        )
        self.heads = nn.ModuleList([nn.Linear(net.trunk.output_dim, 1) for net in self.q_nets])
        self.optimizer: th.optim.Optimizer

    def forward(self, obs: th.Tensor, actions: th.Tensor, context: RLContext | None = None) -> tuple[th.Tensor, ...]:
        """The Q-values. Without ``context``, ``obs`` is a plain or packed observation (see :meth:`Actor.forward`)."""
        obs, context = _read(self, obs, context)
        if self.features_extractor is not None:
            with th.set_grad_enabled(th.is_grad_enabled() and not self.share_features_extractor):
                obs = self.features_extractor(obs)
        x = th.cat([obs, actions], dim=1)
        if self.q_nets[0].merge == "hypernet_shared" and context.adapter is not None:
            # one batched adapter call for all Q-networks: the shared weights are read once
            h = th.stack([net.trunk.body(x) for net in self.q_nets], dim=1)
            features = apply_adapter(h, context.adapter).unbind(1)
        else:
            features = tuple(net.features(x, context) for net in self.q_nets)
        return tuple(head(f) for f, head in zip(features, self.heads, strict=True))


class DMASHPolicy(BasePolicy):
    """Policy of :class:`sb3_dmash.DMASHSAC`: DMA*-SH by default; the other presets of the paper are settings of it.

    :param observation_space: the observation space (a flat Box).
    :param action_space: the action space (a Box).
    :param lr_schedule: learning-rate schedule of the actor (the algorithm sets the other optimisers' rates).
    :param history_len: context window length K (set by the algorithm).
    :param net_arch: hidden sizes shared by the actor, the critics and the forward model (adapters act on the last
        layer, so with shared adapter weights the last width must be the same for all three). A dict with keys ``pi``,
        ``qf`` (and optionally ``fm``) sets them separately.
    :param activation_fn: activation between layers.
    :param context_source: where the context comes from: ``"inferred"`` (an encoder reads the window of the last K
        transitions), ``"observed"`` (the true context values are the last ``context_obs_dim`` entries of the
        observation: envs made with ``context_aware=True``) or ``"none"`` (context-unaware SAC).
    :param rl_merge: how the actor and the critics read the context: ``"hypernet_shared"`` (adapter weights from the
        one hypernetwork of the context module, DMA*-SH), ``"hypernet"`` (a hypernetwork of their own per network,
        Decision Adapter and DMA*-H), ``"concat"`` (z appended to the input) or ``"none"``.
    :param fm_merge: how the forward model reads z (``"hypernet"``, ``"concat"``) or ``None`` (no forward model: no
        dynamics alignment).
    :param encoder: ``"lstm"`` or ``"plstm"`` (DMA-Pearl's Gaussian posterior).
    :param context_obs_dim: number of trailing observation entries holding the true context (``"observed"`` only;
        set by the algorithm from AIB envs).
    :param context_dim: size of the inferred context z (even with SimNorm).
    :param encoder_dim: embedding and LSTM size of the context encoder.
    :param hypernet_arch: hidden sizes of the hypernetwork(s) (default ``[64, 64]``).
    :param adapter_bottleneck: adapter bottleneck (default: last hidden width // 8).
    :param hypernet_dtype: ``"float32"`` (default, exact) or ``"bfloat16"``: an opt-in approximation that runs the
        hypernetworks' output heads in bfloat16 (faster only with bfloat16 matrix hardware; see
        ``docs/performance.md``).
    :param input_mask_prob: whole-vector masking probability of the encoder input in training (0.4).
    :param input_norm: encoder input norm: ``"avg_l1"`` (default), ``"layer"`` or ``"none"``.
    :param output_norm: encoder output norm: ``"simnorm"`` (default), ``"layer"`` or ``"none"``.
    :param subset_fraction: fraction of the window's steps the encoder reads (0.2).
    :param input_shuffle: shuffle the window's steps in training when all are read.
    :param kl_weight: DMA-Pearl's beta (the dynamics loss is multiplied by ``1 + kl_weight * KL``).
    :param actor_detach: the actor loss does not reach the encoder and the shared hypernetwork (True, the paper; the
        paper's ablation with False collapses).
    :param critic_detach: the same for the critic loss.
    :param log_std_bounds: bounds of the actor's log standard deviation.
    :param n_critics: number of Q-networks.
    :param history_on_episode_start: what :meth:`predict` does with the window at ``episode_start``: ``"reset"``
        (default; a fresh window, safe when the context can change at reset) or ``"keep"`` (keep the window but add
        no transition across the reset: right for fixed-context envs, as the reference trains).
    :param optimizer_class: optimiser class of every network.
    :param optimizer_kwargs: its extra keyword arguments (default for Adam: ``{"fused": True}``).
    :param use_sde: generalized State-Dependent Exploration on the adapted actor (SB3's gSDE; set by the algorithm's
        ``use_sde``).
    :param log_std_init: gSDE: initial log standard deviation (as SB3's SAC policy).
    :param use_expln: gSDE: ``expln`` instead of ``exp`` for a positive standard deviation.
    :param clip_mean: gSDE: clip the actor's mean to ``[-clip_mean, clip_mean]`` (0: no clipping).
    :param features_extractor_class: an observation extractor (SB3's ``BaseFeaturesExtractor``) before the actor's and
        the critics' trunks, one per network as SAC's; ``None`` or ``FlattenExtractor``: they read the observation. The
        context encoder and the forward model read the raw transitions, and observed context values (Concat) bypass it.
    :param features_extractor_kwargs: its keyword arguments.
    :param share_features_extractor: the critics use the actor's extractor, trained by the actor loss only (SAC's
        semantics).
    :param normalize_images: SB3's option; observations are flat vectors, so it has no effect.
    """

    actor: Actor
    critic: Critic
    critic_target: Critic
    context: ContextFeaturesExtractor | None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        history_len: int = 24,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        context_source: str = "inferred",
        rl_merge: str = "hypernet_shared",
        fm_merge: str | None = "hypernet",
        encoder: str = "lstm",
        context_obs_dim: int = 0,
        context_dim: int = 8,
        encoder_dim: int = 32,
        hypernet_arch: list[int] | None = None,
        adapter_bottleneck: int | None = None,
        hypernet_dtype: str = "float32",
        input_mask_prob: float = 0.4,
        input_norm: str = "avg_l1",
        output_norm: str = "simnorm",
        subset_fraction: float = 0.2,
        input_shuffle: bool = True,
        kl_weight: float = 0.0,
        actor_detach: bool = True,
        critic_detach: bool = True,
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
        n_critics: int = 2,
        history_on_episode_start: str = "reset",
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        use_sde: bool = False,
        log_std_init: float = -3.0,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = False,
        normalize_images: bool = True,
    ) -> None:
        if features_extractor_class is not None and not (
            isinstance(features_extractor_class, type) and issubclass(features_extractor_class, nn.Module)
        ):
            raise ValueError(f"features_extractor_class={features_extractor_class!r} must be a BaseFeaturesExtractor subclass")
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"DMASHPolicy needs a flat Box observation space, got {observation_space}")
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"DMASHPolicy needs a Box action space, got {action_space}")
        _check_int("history_len", history_len)
        _check_int("context_dim", context_dim)
        _check_choice("history_on_episode_start", history_on_episode_start, HISTORY_ON_EPISODE_START)
        _check_choice("hypernet_dtype", hypernet_dtype, tuple(HEAD_DTYPES))
        routing = ContextRouting(context_source, rl_merge, fm_merge)
        if routing.observes_context:
            _check_int("context_obs_dim", context_obs_dim)
            if context_obs_dim >= int(np.prod(observation_space.shape)):
                raise ValueError(
                    f"context_obs_dim={context_obs_dim} must be smaller than the observation size {observation_space.shape}"
                )
        if routing.infers_context and not routing.has_forward_model and actor_detach and critic_detach:
            raise ValueError(
                "fm_merge=None (no dynamics alignment) with actor_detach=True and critic_detach=True would never train "
                "the encoder; set critic_detach=False (or actor_detach=False) to train it with the RL losses"
            )
        if optimizer_kwargs is None and optimizer_class is th.optim.Adam:
            optimizer_kwargs = {"fused": True}  # one kernel per step instead of one per tensor and operation
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
            normalize_images=False,
        )
        if net_arch is None:
            net_arch = [256, 256]
        if isinstance(net_arch, dict):
            pi_arch, qf_arch = list(net_arch["pi"]), list(net_arch["qf"])
            fm_arch = list(net_arch.get("fm", qf_arch))
        else:
            pi_arch = qf_arch = fm_arch = list(net_arch)
        # Adapters act on the last hidden layer: what is adapted needs one. Networks that adapt nothing may be linear.
        unadaptable = []
        if routing.adapts_rl_networks:
            unadaptable += [name for name, arch in (("actor", pi_arch), ("critics", qf_arch)) if not arch]
        if routing.infers_context and not fm_arch:
            unadaptable.append("forward model")
        if unadaptable:
            raise ValueError(
                f"net_arch={net_arch!r}: the {_join(unadaptable)} of this method need at least one hidden layer "
                "(its adapter or its hypernetwork acts on the last one); networks without hidden layers work with the "
                "methods that adapt nothing and read no window: method='dr' or method='concat'"
            )
        widths = {name: arch[-1] for name, arch in (("pi", pi_arch), ("qf", qf_arch), ("fm", fm_arch)) if arch}
        if routing.shares_adapter and len(set(widths.values())) != 1:
            raise ValueError(
                f"net_arch={net_arch!r}: actor, critics and forward model need the same last width, because they share "
                f"one set of adapter weights (got {widths}); give them one last width, or a hypernetwork each with "
                "DMASHSAC(..., shared_hypernet=False) (DMA*-H)"
            )
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.history_len = int(history_len)
        self.history_on_episode_start = history_on_episode_start
        self.log_std_bounds = tuple(log_std_bounds)
        # FlattenExtractor (SB3's default) is what the networks do with a flat observation anyway: no module
        self.features_extractor_class = None if features_extractor_class is FlattenExtractor else features_extractor_class
        self.features_extractor_kwargs = dict(features_extractor_kwargs or {})
        self.share_features_extractor = bool(share_features_extractor)
        self.sde_kwargs = {
            "use_sde": bool(use_sde),
            "log_std_init": log_std_init,
            "use_expln": use_expln,
            "clip_mean": clip_mean,
        }
        self.n_critics = n_critics
        self.routing = routing
        self.context_obs_dim = int(context_obs_dim) if routing.observes_context else 0
        self.actor_detach, self.critic_detach = bool(actor_detach), bool(critic_detach)
        self.obs_dim = int(np.prod(observation_space.shape))
        self.action_dim = get_action_dim(action_space)
        self.context_kwargs = {
            "fm_merge": fm_merge,
            "encoder": encoder,
            "context_dim": context_dim,
            "encoder_dim": encoder_dim,
            "hypernet_arch": hypernet_arch,
            "adapter_bottleneck": adapter_bottleneck,
            "hypernet_dtype": hypernet_dtype,
            "input_mask_prob": input_mask_prob,
            "input_norm": input_norm,
            "output_norm": output_norm,
            "subset_fraction": subset_fraction,
            "input_shuffle": input_shuffle,
            "kl_weight": kl_weight,
        }
        self._archs = (pi_arch, qf_arch, fm_arch)
        self._build(lr_schedule)

    @property
    def uses_history(self) -> bool:
        """Whether the policy reads a window of past transitions (the inferred-context methods)."""
        return self.routing.infers_context

    def _build(self, lr_schedule: Schedule) -> None:
        pi_arch, qf_arch, fm_arch = self._archs
        kw = self.context_kwargs
        self.context = None
        if self.uses_history:
            self.context = ContextFeaturesExtractor(
                self.observation_space,  # type: ignore[arg-type]
                self.action_space,  # type: ignore[arg-type]
                self.history_len,
                fm_arch,
                shared_hypernet=self.routing.shares_adapter,
                **kw,
            )
            self.context.optimizer = self.optimizer_class(
                self.context.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
            )
        z_dim = kw["context_dim"] if self.routing.infers_context else self.context_obs_dim
        net_obs_dim = self.obs_dim - self.context_obs_dim
        rl_kwargs = dict(
            merge=self.routing.rl_merge,
            context_dim=z_dim,
            hypernet_arch=kw["hypernet_arch"],
            adapter_bottleneck=kw["adapter_bottleneck"],
            hypernet_dtype=kw["hypernet_dtype"],
        )
        actor_extractor = self.make_features_extractor()
        self.actor = Actor(
            net_obs_dim,
            self.action_dim,
            pi_arch,
            self.activation_fn,
            self.log_std_bounds,  # type: ignore[arg-type]
            **rl_kwargs,  # type: ignore[arg-type]
            **self.sde_kwargs,
            features_extractor=actor_extractor,
        )
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)
        share = self.share_features_extractor
        critic_extractor = actor_extractor if share else self.make_features_extractor()
        critic_args = (net_obs_dim, self.action_dim, qf_arch, self.activation_fn, self.n_critics)
        self.critic = Critic(*critic_args, **rl_kwargs, features_extractor=critic_extractor, share_features_extractor=share)
        # As SB3: a shared extractor is trained by the actor loss only
        critic_parameters = [
            p for name, p in self.critic.named_parameters() if not (share and name.startswith("features_extractor."))
        ]
        self.critic.optimizer = self.optimizer_class(critic_parameters, lr=lr_schedule(1), **self.optimizer_kwargs)
        self.critic_target = Critic(
            *critic_args, **rl_kwargs, features_extractor=self.make_features_extractor(), share_features_extractor=share
        )
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.train(False)
        if self.context is not None:
            # SB3's SAC saves the actor's and the critics' optimisers only: the context optimiser's state travels in
            # the critics' (DMASHSAC also saves it on its own, "policy.context.optimizer").
            self.critic.optimizer.register_state_dict_post_hook(self._add_context_optimizer_state)
            self.critic.optimizer.register_load_state_dict_pre_hook(self._load_context_optimizer_state)
        # What SB3's SAC passes the networks (observations, packed with their windows in training) is read here
        self.actor.context_reader = functools.partial(self.read_context, detach=self.actor_detach)
        self.critic.context_reader = functools.partial(self.read_context, detach=self.critic_detach)
        self.critic_target.context_reader = functools.partial(self.read_context, detach=True)
        self.rollout_windows: Callable[[np.ndarray], np.ndarray | None] | None = None
        # The actor answers SB3's `model.actor.predict` through its policy (a plain reference: not a submodule)
        object.__setattr__(self.actor, "_owner", self)

    def make_features_extractor(self) -> BaseFeaturesExtractor | None:
        """A new observation extractor for the actor or a critic (``None``: the networks read the observation)."""
        if self.features_extractor_class is None:
            return None
        low, high = self.observation_space.low, self.observation_space.high  # type: ignore[attr-defined]
        n = self.obs_dim - self.context_obs_dim  # observed context values go to the networks as z, not through it
        space = spaces.Box(low[:n], high[:n], dtype=self.observation_space.dtype)  # type: ignore[arg-type]
        return self.features_extractor_class(space, **self.features_extractor_kwargs)

    def _add_context_optimizer_state(self, optimizer: th.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        assert self.context is not None
        state[CONTEXT_OPTIMIZER_KEY] = self.context.optimizer.state_dict()
        return state

    def _load_context_optimizer_state(self, optimizer: th.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        state = dict(state)
        context_state = state.pop(CONTEXT_OPTIMIZER_KEY, None)  # absent in files saved before it travelled here
        if context_state is not None and self.context is not None:
            self.context.optimizer.load_state_dict(context_state)
        return state

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                lr_schedule=self._dummy_schedule,  # dummy lr schedule, not needed for loading the policy alone (as SAC)
                history_len=self.history_len,
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                context_source=self.routing.source,
                rl_merge=self.routing.rl_merge,
                context_obs_dim=self.context_obs_dim,
                actor_detach=self.actor_detach,
                critic_detach=self.critic_detach,
                log_std_bounds=self.log_std_bounds,
                **self.sde_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                share_features_extractor=self.share_features_extractor,
                n_critics=self.n_critics,
                history_on_episode_start=self.history_on_episode_start,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                **self.context_kwargs,
            )
        )
        data.pop("normalize_images", None)
        data.pop("squash_output", None)
        return data

    def reset_noise(self, batch_size: int = 1) -> None:
        """Sample new gSDE exploration weights for the actor (SB3's ``SACPolicy.reset_noise``)."""
        self.actor.reset_noise(batch_size=batch_size)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        if self.context is not None:
            self.context.train(mode)
        self.training = mode

    # ------------------------------------------------------------------ context for the RL networks
    def flatten_obs(self, obs: th.Tensor) -> th.Tensor:
        return obs.float().reshape(obs.shape[0], -1)

    def net_obs(self, obs: th.Tensor) -> th.Tensor:
        """The observation part the networks read (observed context values are passed as z instead)."""
        return obs[:, : self.obs_dim - self.context_obs_dim] if self.context_obs_dim else obs

    def rl_context(self, obs: th.Tensor, window: th.Tensor | None, training: bool, detach: bool = True) -> RLContext:
        """The context the actor and the critics read for a batch.

        :param obs: flat observations (the observed context is read from their last entries).
        :param window: the K-step windows (inferred context only).
        :param training: training-mode inference (random subset, masking, posterior sample).
        :param detach: compute it without gradient into the encoder and the shared hypernetwork.
        """
        if self.routing.source == "none":
            return RLContext()
        if self.routing.observes_context:
            return RLContext(z=obs[:, self.obs_dim - self.context_obs_dim :])
        assert self.context is not None and window is not None
        with th.set_grad_enabled(th.is_grad_enabled() and not detach):
            return self.rl_context_from_z(self.context.encoder(window, training=training))

    def rl_context_from_z(self, z: th.Tensor) -> RLContext:
        """What the actor and the critics read for an inferred z: the shared adapter weights (DMA*-SH) or z itself."""
        if self.routing.shares_adapter:
            assert self.context is not None and self.context.hypernet is not None
            return RLContext(adapter=self.context.hypernet(z))
        return RLContext(z=z)

    @property
    def packed_obs_dim(self) -> int:
        """Size of an observation packed with its window (see :mod:`sb3_dmash.common.windows`)."""
        return self.obs_dim + self.history_len * entry_dim(self.obs_dim, self.action_dim)

    def read_context(self, obs: th.Tensor, detach: bool = True) -> tuple[th.Tensor, RLContext]:
        """The network input and the context of observations as SB3 code passes them (``SAC.train`` to the actor and
        the critics): packed with their windows (a :class:`~sb3_dmash.common.buffers.HistoryReplayBuffer` with
        ``pack_windows=True``), or plain outside training, where the window is the initial one (no adaptation).

        :param obs: ``(B, obs_dim)`` or ``(B, packed_obs_dim)``.
        :param detach: infer the context without gradient into the encoder and the shared hypernetwork.
        :raises RuntimeError: on plain observations in training mode of a method that infers its context: SB3's SAC
            would train it context-free.
        """
        obs = self.flatten_obs(obs)
        window = None
        if self.uses_history:
            if obs.shape[1] == self.packed_obs_dim:
                obs, window = unpack(obs, self.obs_dim, self.history_len)
            elif obs.shape[1] != self.obs_dim:
                raise ValueError(
                    f"observations of size {obs.shape[1]}: expected {self.obs_dim} (plain) or {self.packed_obs_dim} "
                    f"(packed with a window of {self.history_len} transitions)"
                )
            elif self.training:
                raise RuntimeError(
                    "DMASHPolicy is trained on observations without their context windows, so it would learn "
                    "context-free: with SB3's SAC pass replay_buffer_class=HistoryReplayBuffer and "
                    "learn(..., callback=DynamicsAlignmentCallback()) (DMASHSAC does both by itself)"
                )
            else:
                window = th.as_tensor(initial_window(obs.cpu().numpy(), self.history_len, self.action_dim), device=obs.device)
        return self.net_obs(obs), self.rl_context(obs, window, training=self.training, detach=detach)

    # ------------------------------------------------------------------ acting
    def act(self, obs: th.Tensor, window: th.Tensor | None, deterministic: bool, training_context: bool = False) -> th.Tensor:
        """Actions in [-1, 1] for observations ``obs`` given their context windows (``None`` for window-free methods)."""
        obs = self.flatten_obs(obs)
        context = self.rl_context(obs, window, training=training_context)
        return self.actor(self.net_obs(obs), context, deterministic=deterministic)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Act with an initial window (the observation repeated, no transition): no adaptation."""
        obs = self.flatten_obs(observation)  # type: ignore[arg-type]
        window = None
        if self.uses_history:
            window = th.as_tensor(initial_window(obs.cpu().numpy(), self.history_len, self.action_dim), device=self.device)
        return self.act(obs, window, deterministic)

    def initial_state(self, obs: np.ndarray) -> ContextState:
        """A fresh :class:`ContextState` for a batch of observations ``(n_envs, obs_dim)``."""
        obs = np.asarray(obs, dtype=np.float32).reshape(obs.shape[0], -1)
        n = obs.shape[0]
        return ContextState(
            initial_window(obs, self.history_len, self.action_dim),
            obs.copy(),
            np.zeros((n, self.action_dim), dtype=np.float32),
            np.zeros(n, dtype=bool),
        )

    def update_history(self, state: ContextState, obs: np.ndarray, action: np.ndarray) -> ContextState:
        """Record that ``action`` (in [-1, 1]) was executed at ``obs``: the next :meth:`predict` appends that transition.

        Use it when the executed action differs from the one :meth:`predict` returned (e.g. with added noise).
        """
        return state._replace(
            last_obs=np.asarray(obs, np.float32).reshape(len(state.has_prev), -1).copy(),
            last_action=np.asarray(action, np.float32).reshape(len(state.has_prev), -1).copy(),
            has_prev=np.ones_like(state.has_prev),
        )

    def mark_reset(self, state: ContextState) -> ContextState:
        """Keep the window but drop the pending transition (the AIB evaluator calls it between warm-up and episode)."""
        return state._replace(has_prev=np.zeros_like(state.has_prev))

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: ContextState | tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, ContextState | None]:
        """Act and carry the context window in ``state``, with the contract of RecurrentPPO.

        Each call appends the transition ``(s_prev, a_prev, s)`` of the previous call to the window, unless
        ``episode_start`` is set for that env (then the window is reset or kept, see ``history_on_episode_start``).
        SB3's ``evaluate_policy``, ``EvalCallback`` and rl-zoo3's ``enjoy`` pass ``state`` and ``episode_start``, so
        the policy adapts there with no change.

        **Without a state** (``predict(obs)``) the policy acts with an initial window (the observation repeated, no
        transition): it cannot infer the context. Pass the returned state back to adapt.

        :param observation: observations ``(obs_dim,)`` or ``(n_envs, obs_dim)``.
        :param state: the state returned by the previous call, or ``None`` to start.
        :param episode_start: ``(n_envs,)`` bools marking the first observation of an episode.
        :param deterministic: deterministic actions (``tanh`` of the mean).
        :return: the actions (in the env's action space) and the new state (``None`` for the methods that read no
            window: ``dr``, ``concat``, ``decision_adapter``).
        """
        self.set_training_mode(False)
        if isinstance(observation, dict):
            raise ValueError("DMASHPolicy does not support Dict observations")
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        obs = self.flatten_obs(obs_tensor)  # type: ignore[arg-type]
        if not self.uses_history:
            with th.no_grad():
                actions = self.act(obs, None, deterministic).cpu().numpy()
            return self._env_actions(actions, vectorized_env), None
        obs_np = obs.cpu().numpy()
        n = obs_np.shape[0]
        if state is None and episode_start is None and self.rollout_windows is not None:
            # SB3's SAC collecting data (DynamicsAlignmentCallback installed the rollout's windows): act on the window
            # of the rollout's current observations, with training-mode inference as DMASHSAC collects.
            rollout_window = self.rollout_windows(obs_np)
            if rollout_window is not None:
                with th.no_grad():
                    window = th.as_tensor(rollout_window, device=self.device)
                    actions = self.act(obs, window, deterministic, training_context=True).cpu().numpy()
                return self._env_actions(actions, vectorized_env), None
        if state is None:
            state = self.initial_state(obs_np)
        else:
            state = ContextState(*(np.array(x, copy=True) for x in state))
            expected = (n, self.history_len, 2 * self.obs_dim + self.action_dim)
            if state.window.shape != expected:
                raise ValueError(f"state.window has shape {state.window.shape}; expected {expected}")
        starts = np.zeros(n, dtype=bool) if episode_start is None else np.asarray(episode_start, dtype=bool).reshape(n)
        if starts.any():
            if self.history_on_episode_start == "reset":
                state.window[starts] = initial_window(obs_np[starts], self.history_len, self.action_dim)
            state.has_prev[starts] = False
        append = state.has_prev
        if append.any():
            sub = state.window[append]
            push_transition(sub, state.last_obs[append], state.last_action[append], obs_np[append])
            state.window[append] = sub
        with th.no_grad():
            window = th.as_tensor(state.window, device=self.device)
            actions = self.act(obs, window, deterministic).cpu().numpy()
        state = ContextState(state.window, obs_np.copy(), actions.reshape(n, -1).astype(np.float32), np.ones(n, dtype=bool))
        return self._env_actions(actions, vectorized_env), state

    def _env_actions(self, actions: np.ndarray, vectorized_env: bool) -> np.ndarray:
        """Actions in [-1, 1] -> the env's action space (SB3's squashed-output convention)."""
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        env_actions = np.clip(self.unscale_action(actions), self.action_space.low, self.action_space.high)  # type: ignore[attr-defined]
        env_actions = env_actions.astype(self.action_space.dtype, copy=False)  # a float16 space gets float16 actions
        return env_actions if vectorized_env else env_actions.squeeze(axis=0)


MlpPolicy = DMASHPolicy
