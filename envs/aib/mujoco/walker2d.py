"""WalkerGym: gymnasium's Walker2d-v5 that never terminates, with gravity and actuator strength as the context."""

from __future__ import annotations

from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from aib.mujoco.base import GymMujocoEnv


class WalkerGymEnv(GymMujocoEnv):
    """## Description
    Gymnasium's ``Walker2d-v5`` (a planar biped, frame_skip 4, dt 0.008 s) built with
    ``terminate_when_unhealthy=False``, so it walks (or lies) for the whole 1000-step episode. The hidden context edits
    the model in place: ``gravity`` g sets ``model.opt.gravity = [0, 0, -g]``; ``actuator_strength`` s sets
    ``model.actuator_gear = s * base_gear`` (base gear 100 on each of the 6 hinge motors). ``reset(seed=s)`` reseeds
    the inner env with ``s``: the nominal context reproduces ``Walker2d-v5`` seeded with ``s`` step for step.

    ## Spaces
    Observation (17, float32): qpos without the x coordinate (8) and qvel clipped to [-10, 10] (9), the v5 layout;
    action: Box[-1, 1]^6 (torques of the right and left thigh, leg and foot hinges).

    ## Rewards
    As ``Walker2d-v5``: ``x_velocity + 1 * [healthy] - 1e-3 * |a|^2``. ``info`` holds the inner env's terms
    (``reward_forward``, ``reward_ctrl``, ``reward_survive``) and ``x_position``, ``z_distance_from_origin``,
    ``x_velocity``. Never terminates; the time limit (1000) comes from ``register``.

    ## Arguments
    The context arguments of :class:`aib.core.AIBEnv` (context keys ``gravity``: 9.81, train [4.91, 14.71];
    ``actuator_strength``: 1.0, train [0.5, 1.5]) and ``render_mode="rgb_array"``.

    ## Version History
    v0: the paper's ``dmash/Walker2d-v5``.
    """

    env_id = "AIB-WalkerGym-v0"
    inner_cls = Walker2dEnv
