"""Cartpole: dm_control's cartpole ``balance`` with a variable pole length and an actuator inversion."""

from __future__ import annotations

from typing import Any

from dm_control.suite import cartpole
from lxml import etree

from aib.dmc.common import ContextActionMixin, DMCEnv, find, fmt

POLE_MASS = 0.1
HINGE_DAMPING = 2e-6


class _Balance(ContextActionMixin, cartpole.Balance):
    pass


class CartpoleEnv(DMCEnv):
    """## Description
    dm_control's cartpole ``balance``: a cart on a rail (slider motor, gear 10) carries a hinged pole that starts near
    upright (cart position U(-0.1, 0.1), pole angle U(-0.034, 0.034) rad, small random velocities) and must be kept
    upright and centred. The hidden context is the pole half-length ``length`` (default 0.5) and the sign
    ``action_factor`` (+1 or -1) that multiplies the command before it reaches the motor.

    Model edit for ``length`` = l: the pole geom gets ``fromto="0 0 0 0 0 2l"``; its mass (0.1) and the hinge
    damping (2e-6) are written explicitly (equal to the suite's defaults, so the mass does not grow with the length).
    Physics and control step 0.01 s (RK4, no contacts).

    ## Spaces
    Observation (5, float32, unbounded), the dm_control dict flattened with keys sorted: ``position`` (cart position,
    cosine and sine of the pole angle), ``velocity`` (cart, pole). Action: slider command in Box[-1, 1]^1.

    ## Rewards
    dm_control's smooth balance reward in [0, 1]: upright x centred x small control x small velocity (the control term
    reads the command after the inversion; it is symmetric). 1000 steps, never terminates (truncated at step 1000).
    ``info`` holds ``cart_position`` and ``pole_angle_cosine``.

    ## Arguments
    ``render_width``, ``render_height``, ``camera_id`` (see :class:`aib.dmc.common.DMCEnv`) and the context arguments of
    :class:`aib.core.AIBEnv`. ``length`` cannot change in the middle of an episode (``context_schedule``): only
    ``action_factor`` can.

    ## Version History
    v0: the paper's ``dm_control/cartpole-balance-v0`` (pole length x action_factor).
    """

    env_id = "AIB-Cartpole-v0"
    metadata = {"render_modes": ["rgb_array"], "render_fps": 100}
    domain = cartpole
    obs_dim = 5
    action_dim = 1
    time_limit = 10.0
    _model_keys = ("length",)
    episode_fixed_keys = ("length",)  # a morphology change: only a reset can change it

    def _edit_model(self, root: etree._Element, context: dict[str, float]) -> None:
        length = context["length"]
        pole = find(root, "geom", "pole_1")
        pole.set("fromto", fmt([0.0, 0.0, 0.0, 0.0, 0.0, 2.0 * length]))
        pole.set("mass", fmt(POLE_MASS))
        find(root, "joint", "hinge_1").set("damping", fmt(HINGE_DAMPING))

    def _make_task(self) -> _Balance:
        return _Balance(swing_up=False, sparse=False)

    def _task_info(self, physics: Any, observation: Any, reward: float) -> dict[str, Any]:
        return {"cart_position": float(physics.cart_position()), "pole_angle_cosine": float(physics.pole_angle_cosine()[0])}
