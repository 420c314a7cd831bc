"""Cheetah: dm_control's cheetah ``run`` with a leg-length morphology context and an actuator inversion."""

from __future__ import annotations

from typing import Any

from dm_control.suite import cheetah
from lxml import etree

from aib.dmc.common import ContextActionMixin, DMCEnv, find, scale_attribute

LEG_GEOMS = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
"""Geoms whose ``pos`` (x, z) and half-length ``size[1]`` scale with the length context."""
LEG_BODIES = ("bshin", "bfoot", "fshin", "ffoot")
"""Bodies whose ``pos`` (x, z) scales with the length context (the thighs stay attached to the torso ends)."""
X_AND_Z = (0, 2)


class _Cheetah(ContextActionMixin, cheetah.Cheetah):
    pass


class CheetahEnv(DMCEnv):
    """## Description
    dm_control's cheetah ``run``: a planar cheetah (6 joint motors: bthigh, bshin, bfoot, fthigh, fshin, ffoot with
    gears 120, 90, 60, 90, 60, 30) starts from random joint angles, settled for 200 physics steps, and must run forward.
    The hidden context is the leg-segment length scale ``length`` (default 1) and the sign ``action_factor`` (+1 or
    -1) that multiplies all 6 commands before they reach the motors.

    Model edit for ``length`` = s: the x and z of ``pos`` and the half-length ``size[1]`` of the geoms bthigh,
    bshin, bfoot, fthigh, fshin, ffoot, and the x and z of ``pos`` of the bodies bshin, bfoot, fshin, ffoot, are
    multiplied by s. The model keeps ``settotalmass="14"``: longer legs take a larger share of the same total mass
    (MuJoCo's deprecation notice for that attribute is silenced while compiling). Physics and control step 0.01 s.

    ## Spaces
    Observation (17, float32, unbounded), keys sorted: ``position`` (8, joint positions without the horizontal
    root position), ``velocity`` (9). Action: the 6 joint commands in Box[-1, 1]^6.

    ## Rewards
    Forward speed / 10 clipped to [0, 1] (dm_control's linear tolerance with margin 10). 1000 steps, never terminates
    (truncated at step 1000). ``info["speed"]`` holds the torso subtree's forward speed.

    ## Arguments
    ``render_width``, ``render_height``, ``camera_id`` (see :class:`aib.dmc.common.DMCEnv`) and the context arguments of
    :class:`aib.core.AIBEnv`. ``length`` cannot change in the middle of an episode (``context_schedule``): only
    ``action_factor`` can.

    ## Version History
    v0: the paper's ``dm_control/cheetah-run_morph-v0`` (leg length scale x action_factor).
    """

    env_id = "AIB-Cheetah-v0"
    metadata = {"render_modes": ["rgb_array"], "render_fps": 100}
    domain = cheetah
    obs_dim = 17
    action_dim = 6
    time_limit = 10.0
    _model_keys = ("length",)
    episode_fixed_keys = ("length",)  # a morphology change: only a reset can change it

    def _edit_model(self, root: etree._Element, context: dict[str, float]) -> None:
        scale = context["length"]
        for name in LEG_GEOMS:
            geom = find(root, "geom", name)
            scale_attribute(geom, "pos", scale, X_AND_Z)
            scale_attribute(geom, "size", scale, (1,))
        for name in LEG_BODIES:
            scale_attribute(find(root, "body", name), "pos", scale, X_AND_Z)

    def _make_task(self) -> _Cheetah:
        return _Cheetah()

    def _task_info(self, physics: Any, observation: Any, reward: float) -> dict[str, Any]:
        return {"speed": float(physics.speed())}
