"""Context encoders: a window of the last K transitions ``(s, a, s' - s)`` -> an inferred context z.

The DMA*-SH encoder, in order (Benad et al. 2026, §3; see ``docs/algorithm.md``):

1. training only: a random subset of ``int(0.2 K)`` time steps per sample, in random order (this composes the
   reference's temporal shuffle with its random subset; at evaluation: evenly spaced steps, newest included);
2. training only: each of the three component vectors (s, a, Δs) of a step is zeroed as a whole with probability
   ``mask_prob``;
3. a bias-free linear embedding, then AvgL1Norm per step;
4. a one-layer LSTM; its final hidden state goes through a bias-free linear layer to z;
5. SimNorm: two softmax groups, so each half of z lies on a simplex.

Selecting the time steps before the embedding is what makes the encoder cheap: only ``int(0.2 K)`` steps are ever
embedded. Whether the encoder is stochastic is decided by the explicit ``training`` argument, never by
``nn.Module.train()``: the reference acts with training-mode z while collecting data.
"""

from __future__ import annotations

import numpy as np
import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_dmash.common.windows import entry_components, entry_dim

INPUT_NORMS = ("avg_l1", "layer", "none")
OUTPUT_NORMS = ("simnorm", "layer", "none")


class AvgL1Norm(nn.Module):
    """Divide each vector by the mean of its absolute values (TD7); an all-zero vector stays zero."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x / x.abs().mean(dim=-1, keepdim=True).clamp(min=self.eps)


class SimNorm(nn.Module):
    """Softmax over ``n_groups`` equal groups of the last dimension (TD-MPC2)."""

    def __init__(self, n_groups: int = 2) -> None:
        super().__init__()
        self.n_groups = n_groups

    def forward(self, x: th.Tensor) -> th.Tensor:
        shape = x.shape
        return F.softmax(x.view(*shape[:-1], self.n_groups, -1), dim=-1).view(shape)


def make_input_norm(name: str, dim: int) -> nn.Module:
    if name == "avg_l1":
        return AvgL1Norm()
    if name == "layer":
        return nn.LayerNorm(dim)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"input_norm={name!r} is not allowed; expected one of {INPUT_NORMS}")


def make_output_norm(name: str, dim: int) -> nn.Module:
    if name == "simnorm":
        if dim % 2 != 0:
            raise ValueError(f"context_dim={dim} must be even with output_norm='simnorm' (two softmax groups)")
        return SimNorm(2)
    if name == "layer":
        return nn.LayerNorm(dim)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"output_norm={name!r} is not allowed; expected one of {OUTPUT_NORMS}")


class LSTMContextEncoder(nn.Module):
    """Window ``(B, K, 2 obs_dim + action_dim)`` of ``(s, a, Δs)`` -> z ``(B, context_dim)``.

    :param obs_dim: observation size.
    :param action_dim: action size.
    :param history_len: window length K.
    :param context_dim: size of z.
    :param embed_dim: size of the per-step embedding and of the LSTM.
    :param input_norm: ``"avg_l1"``, ``"layer"`` or ``"none"`` after the embedding.
    :param output_norm: ``"simnorm"``, ``"layer"`` or ``"none"`` on z.
    :param mask_prob: probability of zeroing each component vector of a step in training.
    :param subset_fraction: fraction of the K steps the LSTM reads (at least one step).
    :param shuffle: shuffle the time steps in training when all K steps are read (a random subset is always in
        random order).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        history_len: int,
        context_dim: int = 8,
        embed_dim: int = 32,
        input_norm: str = "avg_l1",
        output_norm: str = "simnorm",
        mask_prob: float = 0.4,
        subset_fraction: float = 0.2,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_prob < 1.0:
            raise ValueError(f"input_mask_prob={mask_prob!r} must be in [0, 1)")
        if not 0.0 < subset_fraction <= 1.0:
            raise ValueError(f"subset_fraction={subset_fraction!r} must be in (0, 1]")
        self.obs_dim, self.action_dim, self.history_len = obs_dim, action_dim, history_len
        self.context_dim = context_dim
        self.mask_prob = float(mask_prob)
        self.shuffle = shuffle
        self.n_selected = max(1, int(subset_fraction * history_len))
        self.input_dim = entry_dim(obs_dim, action_dim)
        self.embed = nn.Linear(self.input_dim, embed_dim, bias=False)
        self.input_norm = make_input_norm(input_norm, embed_dim)
        self.lstm = nn.LSTM(embed_dim, embed_dim, num_layers=1, batch_first=True)
        self.head = nn.Linear(embed_dim, context_dim, bias=False)
        self.output_norm = make_output_norm(output_norm, context_dim)
        eval_indices = np.linspace(0, history_len - 1, self.n_selected).astype(np.int64)
        self.register_buffer("eval_indices", th.as_tensor(eval_indices), persistent=False)
        # which of the three components (s, a, Δs) each input feature belongs to, for whole-vector masking
        component = th.as_tensor(entry_components(obs_dim, action_dim), dtype=th.long)
        self.register_buffer("component", component, persistent=False)

    def select_steps(self, window: th.Tensor, training: bool) -> th.Tensor:
        """The time steps the LSTM reads: a random subset in random order (training) or evenly spaced ones."""
        batch, k, dim = window.shape
        if k != self.history_len:
            raise ValueError(f"the context window has {k} steps; this encoder was built for history_len={self.history_len}")
        if not training:
            return window.index_select(1, self.eval_indices)
        if self.n_selected < k:
            # top-k of uniform noise: distinct positions, uniformly random, in random order
            idx = th.rand(batch, k, device=window.device).topk(self.n_selected, dim=1, sorted=True).indices
            flat = (idx + th.arange(batch, device=window.device).unsqueeze(1) * k).reshape(-1)
            return window.reshape(batch * k, dim).index_select(0, flat).view(batch, self.n_selected, dim)
        if self.shuffle:
            return window.index_select(1, th.randperm(k, device=window.device))
        return window

    def mask_components(self, steps: th.Tensor) -> th.Tensor:
        """Zero each of (s, a, Δs) of each step independently with probability ``mask_prob``."""
        if self.mask_prob == 0.0:
            return steps
        keep = (th.rand(*steps.shape[:2], 3, device=steps.device) >= self.mask_prob).to(steps.dtype)
        return steps * keep.index_select(2, self.component)

    def encode_steps(self, steps: th.Tensor) -> th.Tensor:
        """Embedding, input norm and LSTM over already selected steps -> final hidden state (B, embed_dim)."""
        _, (h_n, _) = self.lstm(self.input_norm(self.embed(steps)))
        return h_n[-1]

    def forward(self, window: th.Tensor, training: bool) -> th.Tensor:
        steps = self.select_steps(window, training)
        if training:
            steps = self.mask_components(steps)
        return self.output_norm(self.head(self.encode_steps(steps)))


class ProbabilisticLSTMContextEncoder(LSTMContextEncoder):
    """The DMA-Pearl encoder: the LSTM encoder with a Gaussian posterior over z (PEARL-style).

    ``mu = Linear(h)``, ``var = Softplus(Linear(h))``, posterior ``N(mu, sqrt(var))``. In training (and while
    collecting data) z is a reparametrised sample; at evaluation z = mu. With ``output_norm="layer"`` a LayerNorm is
    applied to mu and to the pre-softplus variance (the reference's behaviour: its "none" string is truthy).
    ``kl()`` is KL(posterior || N(0, I)) averaged over batch and dimensions.
    """

    def __init__(self, *args, output_norm: str = "layer", **kwargs) -> None:
        if output_norm not in ("layer", "none"):
            raise ValueError(
                f"output_norm={output_norm!r} is not allowed for the probabilistic encoder; expected 'layer' or 'none'"
            )
        super().__init__(*args, output_norm="none", **kwargs)
        embed_dim, context_dim = self.head.in_features, self.context_dim
        del self.head
        self.mu_head = nn.Linear(embed_dim, context_dim)
        self.var_head = nn.Linear(embed_dim, context_dim)
        self.mu_norm = nn.LayerNorm(context_dim) if output_norm == "layer" else nn.Identity()
        self.var_norm = nn.LayerNorm(context_dim) if output_norm == "layer" else nn.Identity()

    def posterior(self, window: th.Tensor, training: bool) -> tuple[th.Tensor, th.Tensor]:
        """Mean and standard deviation of the posterior over z."""
        steps = self.select_steps(window, training)
        if training:
            steps = self.mask_components(steps)
        h = self.encode_steps(steps)
        return self.mu_norm(self.mu_head(h)), F.softplus(self.var_norm(self.var_head(h))).sqrt()

    def forward(self, window: th.Tensor, training: bool) -> th.Tensor:
        return self.forward_with_kl(window, training)[0]

    def forward_with_kl(self, window: th.Tensor, training: bool) -> tuple[th.Tensor, th.Tensor]:
        """z (a sample in training, the mean at evaluation) and KL(posterior || N(0, I))."""
        mu, std = self.posterior(window, training)
        z = mu + std * th.randn_like(std) if training else mu
        kl = (0.5 * (mu.pow(2) + std.pow(2) - 1.0) - th.log(std.clamp(min=1e-8))).mean()
        return z, kl
