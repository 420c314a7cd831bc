"""sb3-dmash: DMA*-SH (dynamics-aligned shared hypernetworks) for Stable-Baselines3.

``from sb3_dmash import DMASHSAC`` gives a drop-in replacement for SB3's ``SAC`` that infers a hidden context from the
last K transitions. The torch-heavy parts load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from sb3_dmash.version import __version__

_LAZY = {
    "DMASHSAC": "sb3_dmash.dmash",
    "DMASHPolicy": "sb3_dmash.dmash",
    "MlpPolicy": "sb3_dmash.dmash",
    "HistoryReplayBuffer": "sb3_dmash.common.buffers",
    "StratifiedReplayBuffer": "sb3_dmash.common.buffers",
    "DynamicsAlignmentCallback": "sb3_dmash.common.callbacks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sb3_dmash' has no attribute {name!r}")


__all__ = [
    "DMASHSAC",
    "DMASHPolicy",
    "DynamicsAlignmentCallback",
    "HistoryReplayBuffer",
    "MlpPolicy",
    "StratifiedReplayBuffer",
    "__version__",
]
