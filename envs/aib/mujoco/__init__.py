"""The gymnasium MuJoCo AIB environments (extra ``sb3-dmash[mujoco]``).

Checked here, before any module imports MuJoCo, so that a missing extra gives one clear error.
"""

from aib._optional import require

require("mujoco", "mujoco")
