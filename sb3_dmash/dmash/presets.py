"""The seven methods of the paper's comparison, as settings of one algorithm.

``DMASHSAC(method=...)`` expands a preset into policy settings; explicit ablation arguments and ``policy_kwargs``
override it. All presets share the SAC update, the replay buffer and the evaluation, so that a comparison differs only
in how the context reaches the networks (see ``docs/presets.md``).
"""

from __future__ import annotations

from typing import Any

# policy settings of each preset (DMASHPolicy keyword arguments)
METHODS: dict[str, dict[str, Any]] = {
    # DMA*-SH: inferred z, one hypernetwork (the forward model's) generates adapters shared by actor and critics
    "dmash": dict(
        context_source="inferred",
        encoder="lstm",
        rl_merge="hypernet_shared",
        fm_merge="hypernet",
        input_norm="avg_l1",
        output_norm="simnorm",
        input_mask_prob=0.4,
        kl_weight=0.0,
    ),
    # DMA*: inferred z concatenated to every network's input; normalised encoder, mask 0.2
    "dma_star": dict(
        context_source="inferred",
        encoder="lstm",
        rl_merge="concat",
        fm_merge="concat",
        input_norm="avg_l1",
        output_norm="simnorm",
        input_mask_prob=0.2,
        kl_weight=0.0,
    ),
    # DMA: the same without input/output normalisation and masking
    "dma": dict(
        context_source="inferred",
        encoder="lstm",
        rl_merge="concat",
        fm_merge="concat",
        input_norm="none",
        output_norm="none",
        input_mask_prob=0.0,
        kl_weight=0.0,
    ),
    # DMA-Pearl: Gaussian posterior over z, dynamics loss x (1 + 0.4 KL); LayerNorm on the heads (the reference's quirk)
    "dma_pearl": dict(
        context_source="inferred",
        encoder="plstm",
        rl_merge="concat",
        fm_merge="concat",
        input_norm="none",
        output_norm="layer",
        input_mask_prob=0.0,
        kl_weight=0.4,
    ),
    # Concat: the true context values (context_aware=True envs) appended to the inputs; no encoder, no forward model
    "concat": dict(context_source="observed", rl_merge="concat", fm_merge=None),
    # Decision Adapter: the true context into a hypernetwork of each network, trained by that network's RL loss
    "decision_adapter": dict(context_source="observed", rl_merge="hypernet", fm_merge=None),
    # DR: context-unaware SAC over the training contexts
    "dr": dict(context_source="none", rl_merge="none", fm_merge=None),
}

PAPER_NAMES = {
    "dmash": "DMA*-SH",
    "dma_star": "DMA*",
    "dma": "DMA",
    "dma_pearl": "DMA-Pearl",
    "concat": "Concat",
    "decision_adapter": "DA",
    "dr": "DR",
}

ABLATIONS = (
    "input_mask_prob",
    "input_norm",
    "output_norm",
    "shared_hypernet",
    "dynamics_alignment",
    "actor_detach",
    "critic_detach",
)


def resolve_method(method: str, policy_kwargs: dict[str, Any] | None = None, **ablations: Any) -> dict[str, Any]:
    """The policy kwargs of ``method`` with the ablation switches and the user's ``policy_kwargs`` applied.

    :param method: one of :data:`METHODS`.
    :param policy_kwargs: the user's policy kwargs (they win over the preset).
    :param ablations: the switches of :data:`ABLATIONS`; ``None`` keeps the preset's value.
        ``shared_hypernet=False`` gives every network its own hypernetwork (DMA*-H); ``dynamics_alignment=False``
        removes the forward model, so the encoder is trained by the critic loss unless the detach flags say otherwise.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; expected one of {list(METHODS)}")
    unknown = set(ablations) - set(ABLATIONS)
    if unknown:
        raise ValueError(f"unknown ablation switches {sorted(unknown)}; expected {ABLATIONS}")
    resolved = dict(METHODS[method])
    switches = {k: v for k, v in ablations.items() if v is not None}
    inferred = resolved["context_source"] == "inferred"
    if switches and not inferred:
        raise ValueError(
            f"the ablation switches {sorted(switches)} apply to the inferred-context methods, not method={method!r}"
        )
    for key in ("input_mask_prob", "input_norm", "output_norm", "actor_detach", "critic_detach"):
        if key in switches:
            resolved[key] = switches[key]
    if switches.get("shared_hypernet") is False:
        if resolved["rl_merge"] != "hypernet_shared":
            raise ValueError(f"shared_hypernet=False applies to a method with a shared hypernetwork (dmash), not {method!r}")
        resolved["rl_merge"] = "hypernet"
    if switches.get("dynamics_alignment") is False:
        resolved["fm_merge"] = None
        resolved.setdefault("critic_detach", False)
    for key, value in (policy_kwargs or {}).items():
        if key in resolved and key in switches and resolved[key] != value:
            raise ValueError(f"policy_kwargs[{key!r}]={value!r} contradicts the ablation switch {key}={switches[key]!r}")
        resolved[key] = value
    return resolved
