"""The dm_control AIB environments (extra ``sb3-dmash[dmc]``).

Checked here, before any domain module imports dm_control, so that a missing extra gives one clear error.
"""

from aib._optional import require

require("dm_control.suite", "dmc")
