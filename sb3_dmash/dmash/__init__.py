"""DMA*-SH as an SB3 algorithm: :class:`DMASHSAC` and its policy."""

from sb3_dmash.common.windows import ContextState
from sb3_dmash.dmash.dmash_sac import DMASHSAC
from sb3_dmash.dmash.policies import DMASHPolicy, MlpPolicy

__all__ = ["DMASHSAC", "ContextState", "DMASHPolicy", "MlpPolicy"]
