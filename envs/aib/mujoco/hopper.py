"""HopperGym: gymnasium's Hopper-v5 that never terminates, with gravity and actuator strength as the context."""

from __future__ import annotations

from gymnasium.envs.mujoco.hopper_v5 import HopperEnv

from aib.mujoco.base import GymMujocoEnv

REFERENCE_GEOM_MARGIN = 0.0005


class HopperGymEnv(GymMujocoEnv):
    """## Description
    Gymnasium's ``Hopper-v5`` (a planar one-legged hopper, frame_skip 4, dt 0.008 s) built with
    ``terminate_when_unhealthy=False``, so it hops (or lies) for the whole 1000-step episode. The hidden context edits
    the model in place: ``gravity`` g sets ``model.opt.gravity = [0, 0, -g]``; ``actuator_strength`` s sets
    ``model.actuator_gear = s * base_gear`` (base gear 200 on each of the 3 hinge motors). ``reset(seed=s)`` reseeds
    the inner env with ``s``.

    **Contact margins.** Every geom margin is set to 0.0005 (the XML says 0.001). The paper's reference ran on
    mujoco 3.3.4, where a contact's margin was the larger of the two geoms' margins (0.001: contact starts 1 mm
    apart). Newer MuJoCo (we need >= 3.17) adds the two margins (2 mm), and the hopper then leaves the reference
    trajectory at its first ground contact. Halving every margin restores the reference's contact physics
    (trajectories agree to about 5e-6), so HopperGym scores mean what the paper's mean.

    ## Spaces
    Observation (11, float32): qpos without the x coordinate (5) and qvel clipped to [-10, 10] (6), the v5 layout;
    action: Box[-1, 1]^3 (torques of the thigh, leg and foot hinges).

    ## Rewards
    As ``Hopper-v5``: ``x_velocity + 1 * [healthy] - 1e-3 * |a|^2``. ``info`` holds the inner env's terms
    (``reward_forward``, ``reward_ctrl``, ``reward_survive``) and ``x_position``, ``z_distance_from_origin``,
    ``x_velocity``. Never terminates; the time limit (1000) comes from ``register``.

    ## Arguments
    The context arguments of :class:`aib.core.AIBEnv` (context keys ``gravity``: 9.81, train [4.91, 14.71];
    ``actuator_strength``: 1.0, train [0.5, 1.5]) and ``render_mode="rgb_array"``.

    ## Version History
    v0: the paper's ``dmash/Hopper-v5``, with the contact margins of mujoco 3.3.4.
    """

    env_id = "AIB-HopperGym-v0"
    inner_cls = HopperEnv
    geom_margin = REFERENCE_GEOM_MARGIN
