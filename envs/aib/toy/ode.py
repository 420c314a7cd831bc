"""ODE and ODE-k: a scalar state driven through a context-dependent polynomial of a complex action (dense, banded reward)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from aib.core import AIBEnv
from aib.toy import RENDER_SIZE, draw_disc, to_pixel

DT = 0.01
MAX_X = 20.0
# Reward bands on |x| after the update, tested in order with strict inequalities; |x| >= 2 gives 0.
REWARD_BANDS: tuple[tuple[float, float], ...] = ((0.05, 1.0), (0.1, 1.0 / 2), (0.2, 1.0 / 3), (0.5, 1.0 / 4), (2.0, 0.05))


def band_reward(distance: float) -> tuple[float, int]:
    """The reward of ``|x| = distance`` and its band: 0 (``< 0.05``, reward 1) ... 4 (``< 2``, 0.05), 5 (``>= 2``, 0)."""
    for level, (bound, reward) in enumerate(REWARD_BANDS):
        if distance < bound:
            return reward, level
    return 0.0, len(REWARD_BANDS)


class ODEEnv(AIBEnv):
    """## Description
    Adapted from Beukman et al.'s ComplexODE (Decision Adapter, NeurIPS 2023). A scalar ``x`` starts at
    ``x_0 ~ U(-1, 1)`` and must be kept near 0. The action ``(a_0, a_1)`` is read as the complex number
    ``u = a_0 + i a_1`` and drives ``x`` through the hidden coefficients ``c_j`` (context ``parameter_j``):

    1. ``x_dot = Re(sum_{j=0}^{k-1} c_j u^(j+1))`` (k = 2: ``c_0 a_0 + c_1 (a_0^2 - a_1^2)``;
       k = 3 adds ``c_2 (a_0^3 - 3 a_0 a_1^2)``);
    2. ``x <- clip(x + x_dot dt, -20, 20)`` with ``dt = 0.01``.

    The state ``env.x`` is kept in double precision like the reference (a Python complex polynomial of the
    single-precision action); the observation is float32. The sign of ``c_0`` decides which way the first-order term
    pushes, so ODE is "weakly non-overlapping": no context-free policy is good for every context.

    ## Spaces
    Observation ``[x]`` in Box[-20, 20]^1 (float32); action ``(a_0, a_1)`` in Box[-1, 1]^2.

    ## Rewards
    By ``|x|`` after the update (strict inequalities): ``< 0.05`` gives 1, ``< 0.1`` gives 1/2, ``< 0.2`` gives 1/3,
    ``< 0.5`` gives 1/4, ``< 2`` gives 0.05, otherwise 0. 200 steps (maximum return 200), never terminates.
    ``info["distance"]`` holds ``|x|`` and ``info["reward_level"]`` the band index (0 for reward 1 ... 5 for reward 0).

    ## Arguments
    ``k`` (integer 1 to 20, default 2): the number of coefficients, i.e. the context variables ``parameter_0`` ...
    ``parameter_{k-1}``. ``k = 2`` is the paper's ODE; other values are ODE-k (the splits of ``k > 2`` are drawn at
    random with ``split_seed``). The nominal context is ``c = (1, 0, ..., 0)``. Plus the context arguments of
    :class:`aib.core.AIBEnv`.

    ## Version History
    v0: the paper's ``dmash/ODE-v0`` (``k = 2``) and ``dmash/ODE-{k}-v0`` (ODE-k, the paper's v2) as one id.
    """

    env_id = "AIB-ODE-v0"
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, k: int = 2, **kwargs: Any) -> None:
        self.x = 0.0
        self._coefficients: tuple[float, ...] = ()
        # AIBEnv validates k (an integer from 1 to 20, else ValueError naming k) when it builds the context variables.
        super().__init__(k=k, **kwargs)
        self.k = len(self.context_keys)

    def _build_spaces(self) -> tuple[spaces.Box, spaces.Box]:
        obs = spaces.Box(-MAX_X, MAX_X, shape=(1,), dtype=np.float32)
        act = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        return obs, act

    def _apply_context(self, context: dict[str, float]) -> None:
        self._coefficients = tuple(float(context[key]) for key in self.context_keys)

    def _reset_task(self, rng: np.random.Generator) -> np.ndarray:
        self.x = float(rng.uniform(-1.0, 1.0))
        return np.array([self.x], dtype=np.float32)

    def x_dot(self, action: np.ndarray) -> float:
        """``Re(sum_j c_j u^(j+1))`` for ``u = action[0] + i action[1]`` under the current context."""
        u = complex(float(action[0]), float(action[1]))
        power, total = u, 0j
        for c in self._coefficients:
            total += c * power
            power *= u
        return total.real

    def _step_task(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        self.x = min(max(self.x + self.x_dot(action) * DT, -MAX_X), MAX_X)
        distance = abs(self.x)
        reward, level = band_reward(distance)
        return np.array([self.x], dtype=np.float32), reward, False, {"distance": distance, "reward_level": level}

    def render(self) -> np.ndarray | None:
        """``rgb_array``: x on [-2, 2] (clipped at the border), the reward bands around 0 shaded."""
        if self.render_mode != "rgb_array":
            return None
        image = np.full((RENDER_SIZE // 4, RENDER_SIZE, 3), 255, dtype=np.uint8)
        for half_width, shade in ((0.5, 230), (0.2, 210), (0.1, 190), (0.05, 170)):
            lo, hi = int(to_pixel(-half_width, -2, 2)), int(to_pixel(half_width, -2, 2))
            image[:, lo : hi + 1] = (shade, 240, shade)
        draw_disc(image, (to_pixel(self.x, -2, 2), RENDER_SIZE // 8), 4, (40, 60, 200))
        return image
