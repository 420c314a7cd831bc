"""BallInCup: dm_control's ball_in_cup ``catch`` with variable gravity and string length."""

from __future__ import annotations

from typing import Any

from dm_control.suite import ball_in_cup
from lxml import etree

from aib.dmc.common import ContextActionMixin, DMCEnv, find, fmt, parse, set_gravity

DEFAULT_DISTANCE = 0.3


class _BallInCup(ContextActionMixin, ball_in_cup.BallInCup):
    pass


class BallInCupEnv(DMCEnv):
    """## Description
    dm_control's ball_in_cup ``catch``: a planar cup (x and z slide motors, gear 5) is tied by a string to a ball
    that starts at a random collision-free position below it; the ball must be swung into the cup. The hidden context
    is the ``gravity`` magnitude (default 9.81) and the string length ``distance`` (default 0.3). No inversion.

    Model edits: ``<option gravity="0 0 -gravity">``; the string tendon's ``range="0 distance"``, and the ball body's
    initial height raised by ``0.3 - distance`` (so a shorter string starts the ball closer to the cup). Physics step
    0.002 s, control step 0.02 s (10 substeps).

    ## Spaces
    Observation (8, float32, unbounded), keys sorted: ``position`` (cup x, z, ball x, z), ``velocity`` (same
    order). Action: cup x and z commands in Box[-1, 1]^2.

    ## Rewards
    Sparse: 1 while the ball is inside the cup, else 0. 1000 steps, never terminates (truncated at step 1000).
    ``info["in_target"]`` says whether the ball is in the cup.

    ## Arguments
    ``render_width``, ``render_height``, ``camera_id`` (see :class:`aib.dmc.common.DMCEnv`) and the context arguments of
    :class:`aib.core.AIBEnv`. ``distance`` cannot change in the middle of an episode (``context_schedule``): only
    ``gravity`` can; ``invert_at`` negates the commands and reports ``info["context"]["action_sign"]``.

    ## Version History
    v0: the paper's ``dm_control/ball_in_cup-catch-v0`` (gravity x string length).
    """

    env_id = "AIB-BallInCup-v0"
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    domain = ball_in_cup
    obs_dim = 8
    action_dim = 2
    time_limit = 20.0
    control_timestep = 0.02
    _model_keys = ("gravity", "distance")
    episode_fixed_keys = ("distance",)  # the string length moves the ball's frame: only a reset can change it

    def _edit_model(self, root: etree._Element, context: dict[str, float]) -> None:
        distance = context["distance"]
        set_gravity(root, context["gravity"])
        find(root, "spatial", "string").set("range", fmt([0.0, distance]))
        ball = find(root, "body", "ball")
        pos = parse(ball.get("pos"))
        pos[2] += DEFAULT_DISTANCE - distance
        ball.set("pos", fmt(pos))

    def _make_task(self) -> _BallInCup:
        return _BallInCup()

    def _task_info(self, physics: Any, observation: Any, reward: float) -> dict[str, Any]:
        return {"in_target": reward == 1.0}
