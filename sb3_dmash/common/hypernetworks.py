"""The hypernetwork that turns an inferred context z into adapter weights, and the adapted MLP trunk.

An adapter (Decision Adapter, Beukman et al. 2023) sits at the pre-activation ``h`` of a trunk's last hidden layer:

    y = ReLU(h + W2 ReLU(W1 h + b1) + b2),   W1: (r, d), b1: (r,), W2: (d, r), b2: (d,)

with a bottleneck ``r = d // 8``. In DMA*-SH the weights ``omega = (W1, b1, W2, b2)`` are generated per sample by one
hypernetwork from z, and the same omega serves the forward model, the actor and every critic.

Per-sample weights are applied as batched row-vector products (``h[:, None, :] @ W1^T``), which is several times
faster than ``einsum("bij,bj->bi")`` forward and backward. Each tensor of omega has its own output head, so that no
16k-wide output is ever sliced while gradients flow (autograd would then allocate and sum zero-filled gradients of
the whole output for every slice).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F

HEAD_DTYPES = {"float32": th.float32, "bfloat16": th.bfloat16}


@functools.cache
def _cpu_has_bf16_matmul() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        return bool(th.cpu._is_avx512_bf16_supported() or th.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


class AdapterWeights(NamedTuple):
    """Per-sample adapter weights, stored transposed for row-vector products.

    ``w1t``: (B, d, r) = W1^T; ``b1``: (B, r); ``w2t``: (B, r, d) = W2^T; ``b2``: (B, d).
    """

    w1t: th.Tensor
    b1: th.Tensor
    w2t: th.Tensor
    b2: th.Tensor

    @property
    def n_params(self) -> int:
        """Number of generated numbers per sample."""
        return sum(t[0].numel() for t in self)

    def flat(self) -> th.Tensor:
        """All generated numbers of each sample as one (B, n_params) tensor (for diagnostics)."""
        return th.cat([t.flatten(1) for t in self], dim=1)


def apply_adapter(h: th.Tensor, weights: AdapterWeights) -> th.Tensor:
    """``ReLU(h + W2 ReLU(W1 h + b1) + b2)`` for pre-activations ``h`` and per-sample weights.

    ``h`` is (B, d), or (B, n, d) for n networks that share the weights (e.g. the critics): the per-sample weights are
    then read once for all n, which is what makes the shared adapter cheap (its products are memory-bound).
    """
    if h.dim() == 2:
        return apply_adapter(h.unsqueeze(1), weights).squeeze(1)
    u = F.relu(th.baddbmm(weights.b1.unsqueeze(1), h, weights.w1t))
    return F.relu(h + th.baddbmm(weights.b2.unsqueeze(1), u, weights.w2t))


def apply_adapter_loop(h: th.Tensor, weights: AdapterWeights) -> th.Tensor:
    """The straightforward per-sample version of :func:`apply_adapter` (the reference's loop); for tests only."""
    out = []
    for i in range(h.shape[0]):
        u = F.relu(weights.w1t[i].T @ h[i] + weights.b1[i])
        out.append(F.relu(h[i] + weights.w2t[i].T @ u + weights.b2[i]))
    return th.stack(out)


class HyperNetwork(nn.Module):
    """``z -> omega``: an MLP ``context_dim -> 64 -> 64`` (ReLU) with one linear head per adapter tensor.

    Separate heads equal one linear layer over all 16,672 outputs (same fan-in, so the same default init).

    :param context_dim: size of z.
    :param adapted_dim: width ``d`` of the adapted layer.
    :param bottleneck_dim: adapter bottleneck ``r`` (default ``d // 8``).
    :param net_arch: hidden sizes of the hypernetwork.
    :param head_dtype: ``"float32"`` (exact) or ``"bfloat16"``: an opt-in approximation that runs the four heads'
        matrix products (the bulk of the hypernetwork's arithmetic) in bfloat16 and returns float32 weights. The
        parameters and their gradients stay float32. It is faster only where the hardware has bfloat16 matrix units
        (CUDA, CPUs with AMX or AVX-512 BF16). Elsewhere (where torch's bf16 kernels are about 10x slower than fp32)
        the products get the same rounding of operands and result but run in fp32: same numerics, no speed-up.
    """

    def __init__(
        self,
        context_dim: int,
        adapted_dim: int,
        bottleneck_dim: int | None = None,
        net_arch: list[int] | None = None,
        head_dtype: str = "float32",
    ):
        super().__init__()
        if head_dtype not in HEAD_DTYPES:
            raise ValueError(f"head_dtype={head_dtype!r} is not allowed; expected one of {tuple(HEAD_DTYPES)}")
        self.head_dtype = head_dtype
        net_arch = [64, 64] if net_arch is None else list(net_arch)
        self.adapted_dim = adapted_dim
        self.bottleneck_dim = bottleneck_dim if bottleneck_dim is not None else max(1, adapted_dim // 8)
        layers: list[nn.Module] = []
        last = context_dim
        for width in net_arch:
            layers += [nn.Linear(last, width), nn.ReLU()]
            last = width
        self.trunk = nn.Sequential(*layers)
        d, r = self.adapted_dim, self.bottleneck_dim
        self.w1_head = nn.Linear(last, d * r)
        self.b1_head = nn.Linear(last, r)
        self.w2_head = nn.Linear(last, r * d)
        self.b2_head = nn.Linear(last, d)

    @property
    def n_generated(self) -> int:
        return 2 * self.adapted_dim * self.bottleneck_dim + self.adapted_dim + self.bottleneck_dim

    def _head(self, head: nn.Linear, x: th.Tensor) -> th.Tensor:
        if self.head_dtype == "float32":
            return head(x)
        dtype = HEAD_DTYPES[self.head_dtype]
        # Casts are differentiable: gradients reach the float32 parameters (in float32, after the bf16 products).
        x_low, weight_low, bias_low = x.to(dtype), head.weight.to(dtype), head.bias.to(dtype)
        if x.is_cuda or _cpu_has_bf16_matmul():
            return F.linear(x_low, weight_low, bias_low).float()
        # No bf16 matrix units (torch would emulate them about 10x slower than fp32): the same rounding of the
        # operands and of the result, with the product accumulated in fp32 as a bf16 kernel does.
        return F.linear(x_low.float(), weight_low.float(), bias_low.float()).to(dtype).float()

    def forward(self, z: th.Tensor) -> AdapterWeights:
        x = self.trunk(z)
        d, r = self.adapted_dim, self.bottleneck_dim
        return AdapterWeights(
            self._head(self.w1_head, x).view(-1, d, r),
            self._head(self.b1_head, x),
            self._head(self.w2_head, x).view(-1, r, d),
            self._head(self.b2_head, x),
        )


class AdaptedMLP(nn.Module):
    """An MLP trunk whose last hidden layer can be modulated by adapter weights.

    Without weights it is a plain ``Linear -> ReLU -> ... -> Linear -> ReLU`` trunk; with weights the last ReLU is
    replaced by the adapter (which ends with its own ReLU).

    :param input_dim: input size.
    :param net_arch: hidden sizes (the adapter acts on the last one; empty: no hidden layer, nothing to adapt).
    :param activation_fn: activation between layers.
    """

    def __init__(self, input_dim: int, net_arch: list[int], activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        layers: list[nn.Module] = []
        last = input_dim
        for i, width in enumerate(net_arch):
            layers.append(nn.Linear(last, width))
            if i < len(net_arch) - 1:
                layers.append(activation_fn())
            last = width
        self.body = nn.Sequential(*layers)
        # no hidden layer (net_arch=[]): the input itself, for the methods that adapt nothing (SAC's linear policy)
        self.activation = activation_fn() if net_arch else nn.Identity()
        self.output_dim = last

    def forward(self, x: th.Tensor, adapter: AdapterWeights | None = None) -> th.Tensor:
        h = self.body(x)
        if adapter is None:
            return self.activation(h)
        if len(self.body) == 0:
            raise ValueError("an MLP without hidden layers has no layer to adapt")
        return apply_adapter(h, adapter)
