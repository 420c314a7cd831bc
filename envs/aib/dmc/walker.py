"""Walker: dm_control's planar walker ``walk`` with variable gravity and actuator strength."""

from __future__ import annotations

from typing import Any

from dm_control.suite import walker
from lxml import etree

from aib.dmc.common import ContextActionMixin, DMCEnv, fmt, parse, set_gravity

WALK_SPEED = 1.0


class _PlanarWalker(ContextActionMixin, walker.PlanarWalker):
    pass


class WalkerEnv(DMCEnv):
    """## Description
    dm_control's planar walker ``walk``: a 2-D biped (hips, knees, ankles; gears 100, 50, 20 per leg) starts in a
    random joint configuration and must stand up and walk forward at 1 m/s. The hidden context is the ``gravity``
    magnitude (default 9.81) and ``actuator_strength`` (default 1), a multiplier of every actuator's gear. No
    inversion.

    Model edits: ``<option gravity="0 0 -gravity">``; every ``<motor gear>`` times ``actuator_strength``. Physics
    step 0.0025 s, control step 0.025 s (10 substeps).

    ## Spaces
    Observation (24, float32, unbounded), keys sorted: ``height`` (1, torso height), ``orientations`` (14, the xx
    and xz entries of the 7 body rotation matrices), ``velocity`` (9). Action: the 6 joint commands in Box[-1, 1]^6.

    ## Rewards
    dm_control's walk reward in [0, 1]: stand x (5 move + 1) / 6, with stand = (3 tall + upright) / 4 and move = forward
    speed tolerance at 1 m/s. 1000 steps, never terminates (truncated at step 1000). ``info`` holds ``torso_height``,
    ``torso_upright`` and ``horizontal_velocity``.

    ## Arguments
    ``render_width``, ``render_height``, ``camera_id`` (see :class:`aib.dmc.common.DMCEnv`) and the context arguments
    of :class:`aib.core.AIBEnv`.

    ## Version History
    v0: the paper's ``dm_control/walker-walk-v0`` (gravity x actuator strength).
    """

    env_id = "AIB-Walker-v0"
    metadata = {"render_modes": ["rgb_array"], "render_fps": 40}
    domain = walker
    obs_dim = 24
    action_dim = 6
    time_limit = 25.0
    control_timestep = 0.025
    _model_keys = ("gravity", "actuator_strength")

    def _edit_model(self, root: etree._Element, context: dict[str, float]) -> None:
        set_gravity(root, context["gravity"])
        strength = context["actuator_strength"]
        for motor in root.iterfind("./actuator/motor"):
            motor.set("gear", fmt(parse(motor.get("gear")) * strength))

    def _make_task(self) -> _PlanarWalker:
        return _PlanarWalker(move_speed=WALK_SPEED)

    def _task_info(self, physics: Any, observation: Any, reward: float) -> dict[str, Any]:
        return {
            "torso_height": float(physics.torso_height()),
            "torso_upright": float(physics.torso_upright()),
            "horizontal_velocity": float(physics.horizontal_velocity()),
        }
