"""Reacher(E), Reacher(H) and Reacher(H)-Perm: dm_control's reacher with an arm-length context and an inversion or
a permutation of the two actuators."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from dm_control.suite import reacher
from lxml import etree

from aib.dmc.common import ContextActionMixin, DMCEnv, find, scale_attribute

EASY_TARGET_SIZE = 0.05
HARD_TARGET_SIZE = 0.015
SCALED_BODIES = ("hand", "finger")
"""Bodies whose ``pos`` x scales with the length context."""
SCALED_GEOMS = ("arm", "hand")
"""Capsules whose ``fromto`` end-point x scales with the length context."""


class _Reacher(ContextActionMixin, reacher.Reacher):
    pass


class ReacherEasyEnv(DMCEnv):
    """## Description
    dm_control's reacher: a planar two-link arm (shoulder and wrist motors, both gear 0.05) starts at random joint
    angles and must put its fingertip on a target placed at angle U(0, 2 pi) and radius U(0.05, 0.20) (unchanged by the
    context). ``AIB-ReacherEasy-v0`` uses the ``easy`` target radius 0.05, ``AIB-ReacherHard-v0`` the ``hard`` one,
    0.015. The hidden context is the arm/hand length scale ``length`` (default 1) and the sign ``action_factor`` (+1 or
    -1) that multiplies both commands; ``AIB-ReacherHardPerm-v0`` replaces the sign by ``swap`` (1: the shoulder
    receives the second command and the wrist the first).

    Model edit for ``length`` = s: the x of ``pos`` of the bodies hand and finger and the x end-point of ``fromto`` of
    the geoms arm and hand are multiplied by s. Physics and control step 0.02 s (no contacts).

    ## Spaces
    Observation (6, float32, unbounded), keys sorted: ``position`` (2 joint angles), ``to_target`` (2, target minus
    fingertip in the plane), ``velocity`` (2). Action: shoulder and wrist commands in Box[-1, 1]^2.

    ## Rewards
    1 while the fingertip-target distance is within the target radius plus the finger radius (0.01), else 0. 1000
    steps, never terminates (truncated at step 1000). ``info["distance"]`` holds the fingertip-target distance.

    ## Arguments
    ``render_width``, ``render_height``, ``camera_id`` (see :class:`aib.dmc.common.DMCEnv`) and the context arguments of
    :class:`aib.core.AIBEnv`. ``length`` cannot change in the middle of an episode (``context_schedule``): only
    ``action_factor`` (``swap`` in Reacher(H)-Perm) can.

    ## Version History
    v0: the paper's ``dm_control/reacher-easy_morph-v0`` and ``reacher-hard_morph-v0`` (length scale x action_factor);
    Reacher(H)-Perm (length scale x swap) is our design from the paper's v2 text.
    """

    env_id = "AIB-ReacherEasy-v0"
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    domain = reacher
    obs_dim = 6
    action_dim = 2
    time_limit = 20.0
    _model_keys = ("length",)
    episode_fixed_keys = ("length",)  # a morphology change: only a reset can change it
    target_size: ClassVar[float] = EASY_TARGET_SIZE

    def _edit_model(self, root: etree._Element, context: dict[str, float]) -> None:
        scale = context["length"]
        for name in SCALED_BODIES:
            scale_attribute(find(root, "body", name), "pos", scale, (0,))
        for name in SCALED_GEOMS:
            scale_attribute(find(root, "geom", name), "fromto", scale, (3,))

    def _make_task(self) -> _Reacher:
        return _Reacher(target_size=self.target_size)

    def _task_info(self, physics: Any, observation: Any, reward: float) -> dict[str, Any]:
        return {"distance": float(np.linalg.norm(observation["to_target"]))}


class ReacherHardEnv(ReacherEasyEnv):
    """Reacher(H): :class:`ReacherEasyEnv` with the ``hard`` target radius 0.015 (context: length x action_factor)."""

    env_id = "AIB-ReacherHard-v0"
    target_size = HARD_TARGET_SIZE


class ReacherHardPermEnv(ReacherEasyEnv):
    """Reacher(H)-Perm: Reacher(H) with context (length, swap); ``swap = 1`` exchanges the shoulder and wrist commands.

    Both motors have gear 0.05 and ctrlrange [-1, 1], so swapping the commands is exactly swapping the actuators.
    """

    env_id = "AIB-ReacherHardPerm-v0"
    target_size = HARD_TARGET_SIZE
