"""DI, DI-Friction and DI-Perm: a 2-D point mass that must reach the origin (sparse reward)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from aib.core import AIBEnv
from aib.toy import RENDER_SIZE, draw_disc, to_pixel

DT = 0.1


class DoubleIntegratorEnv(AIBEnv):
    """## Description
    A point mass on [-1, 1]^2 starts at rest in a random corner (both |x| > 0.8 and |y| > 0.8) and must reach the
    origin. The force command is applied through the hidden context: in ``AIB-DI-v0`` its sign is flipped by
    ``action_factor``, in ``AIB-DIPerm-v0`` its two components are swapped by ``swap``, in ``AIB-DIFriction-v0``
    the velocity decays with ``friction``. Euler steps of 0.1 s, in float32 like the reference:

    1. ``F = clip(P_swap(action_factor * a), -1, 1)``;
    2. ``p <- p + v dt`` (old velocity);
    3. ``v <- v (1 - dt friction / mass) + F / mass * dt``;
    4. ``p, v`` clipped to [-1, 1].

    ## Spaces
    Observation ``[x, y, v_x, v_y]`` in Box[-1, 1]^4 (float32); action ``(a_x, a_y)`` in Box[-1, 1]^2.

    ## Rewards
    1 when the new position is within ``goal_threshold`` (0.1) of the origin, else 0; 100 steps, never terminates.
    ``info["distance"]`` holds the distance to the goal.

    ## Arguments
    ``goal_threshold`` (default 0.1) and the context arguments of :class:`aib.core.AIBEnv`.

    ## Version History
    v0: the paper's ``dmash/DI-sparse-v0`` (and DI-friction; DI-Perm is our design from the paper's v2 text).
    """

    env_id = "AIB-DI-v0"
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, goal_threshold: float = 0.1, **kwargs: Any) -> None:
        if not (isinstance(goal_threshold, (int, float)) and goal_threshold > 0):
            raise ValueError(f"goal_threshold={goal_threshold!r} must be a positive number")
        self.goal_threshold = float(goal_threshold)
        self._state = np.zeros(4, dtype=np.float32)
        super().__init__(**kwargs)

    def _build_spaces(self) -> tuple[spaces.Box, spaces.Box]:
        obs = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        act = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        return obs, act

    def _apply_context(self, context: dict[str, float]) -> None:
        self.mass = context["mass"]
        self.action_factor = context.get("action_factor", 1.0)
        self.friction = context.get("friction", 0.0)
        self.swap = context.get("swap", 0.0) == 1.0

    def _reset_task(self, rng: np.random.Generator) -> np.ndarray:
        while True:
            pos = rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
            if np.all(np.abs(pos) > 0.8):
                break
        self._state = np.concatenate([pos, np.zeros(2, dtype=np.float32)])
        return self._state.copy()

    def _step_task(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        if self.swap:
            action = action[::-1]
        force = np.clip(self.action_factor * action, -1.0, 1.0).astype(np.float32)
        pos, vel = self._state[:2], self._state[2:]
        pos = pos + vel * DT
        vel = vel * (1.0 - DT * self.friction / self.mass) + force / self.mass * DT
        self._state = np.clip(np.concatenate([pos, vel]), -1.0, 1.0).astype(np.float32)
        distance = float(np.linalg.norm(self._state[:2]))
        reward = 1.0 if distance <= self.goal_threshold else 0.0
        return self._state.copy(), reward, False, {"distance": distance}

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the goal region (green) and the point mass (blue) on [-1, 1]^2, y up."""
        if self.render_mode != "rgb_array":
            return None
        image = np.full((RENDER_SIZE, RENDER_SIZE, 3), 255, dtype=np.uint8)
        center = to_pixel(0.0, -1, 1)
        draw_disc(image, (center, center), self.goal_threshold * (RENDER_SIZE - 1) / 2, (150, 220, 150))
        x, y = self._state[:2]
        draw_disc(image, (to_pixel(x, -1, 1), to_pixel(-y, -1, 1)), 4, (40, 60, 200))
        return image


class DoubleIntegratorFrictionEnv(DoubleIntegratorEnv):
    """DI-Friction: DI with context (mass, friction) and no inversion (an overlapping environment)."""

    env_id = "AIB-DIFriction-v0"


class DoubleIntegratorPermEnv(DoubleIntegratorEnv):
    """DI-Perm: DI with context (mass, swap); ``swap = 1`` exchanges the two force components."""

    env_id = "AIB-DIPerm-v0"
