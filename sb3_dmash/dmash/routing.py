"""How a method's context reaches the networks, resolved once: :class:`ContextRouting`.

``DMASHSAC(method=...)`` and the ablation switches resolve into three settings (the policy's ``context_source``,
``rl_merge`` and ``fm_merge`` keyword arguments, kept as SB3 ``policy_kwargs``); this object validates them together
and answers the questions the policy, the algorithm and the tooling ask of a method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

CONTEXT_SOURCES = ("inferred", "observed", "none")
RL_MERGES = ("hypernet_shared", "hypernet", "concat", "none")
FM_MERGES = ("hypernet", "concat", None)
# what the actor and the critics can do with each source
ALLOWED_RL_MERGES = {
    "inferred": ("hypernet_shared", "hypernet", "concat"),
    "observed": ("hypernet", "concat"),
    "none": ("none",),
}


@dataclasses.dataclass(frozen=True)
class ContextRouting:
    """Where the context comes from and how each network reads it.

    :param source: ``"inferred"`` (an encoder reads the window of the last K transitions), ``"observed"`` (the true
        context values at the end of the observation) or ``"none"`` (context-unaware).
    :param rl_merge: how the actor and the critics read it: ``"hypernet_shared"`` (the adapter weights of the context
        module's one hypernetwork, DMA*-SH), ``"hypernet"`` (a hypernetwork per network), ``"concat"`` (appended to the
        input) or ``"none"``.
    :param fm_merge: how the forward model reads z (``"hypernet"``, ``"concat"``), or ``None``: no forward model.
    """

    source: str = "inferred"
    rl_merge: str = "hypernet_shared"
    fm_merge: str | None = "hypernet"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("context_source", self.source, CONTEXT_SOURCES),
            ("rl_merge", self.rl_merge, RL_MERGES),
            ("fm_merge", self.fm_merge, FM_MERGES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not allowed; expected one of {allowed}")
        if self.rl_merge not in ALLOWED_RL_MERGES[self.source]:
            raise ValueError(
                f"rl_merge={self.rl_merge!r} does not work with context_source={self.source!r}; "
                f"expected one of {ALLOWED_RL_MERGES[self.source]}"
            )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ContextRouting:
        """The routing of policy settings (``policy_kwargs`` or a preset); missing keys take the policy's defaults."""
        defaults = cls()
        return cls(
            settings.get("context_source", defaults.source),
            settings.get("rl_merge", defaults.rl_merge),
            settings.get("fm_merge", defaults.fm_merge),
        )

    @property
    def infers_context(self) -> bool:
        """An encoder reads a window of past transitions: history replay, rollout window, warm-up."""
        return self.source == "inferred"

    @property
    def observes_context(self) -> bool:
        """The true context values are the last entries of the observation (``context_aware=True`` envs)."""
        return self.source == "observed"

    @property
    def shares_adapter(self) -> bool:
        """The actor and the critics use the adapter weights of the context module's hypernetwork (DMA*-SH)."""
        return self.rl_merge == "hypernet_shared"

    @property
    def adapts_rl_networks(self) -> bool:
        """Adapter weights modulate the last hidden layer of the actor and the critics."""
        return self.rl_merge in ("hypernet_shared", "hypernet")

    @property
    def has_forward_model(self) -> bool:
        """A forward model is trained on the dynamics loss (dynamics alignment)."""
        return self.fm_merge is not None

    @property
    def has_context_hypernet(self) -> bool:
        """The context module holds a hypernetwork: the shared one, or the forward model's."""
        return self.shares_adapter or self.fm_merge == "hypernet"
