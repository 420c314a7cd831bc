"""Wrappers that apply an actuator inversion or permutation to any Box-action environment."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ActuatorInversion(gym.wrappers.TransformAction, gym.utils.RecordConstructorArgs):
    """Multiply each action by a sign (and optionally permute its channels) before it reaches the environment.

    ``env.step(a)`` executes ``sign * a[permutation]``. The AIB environments apply their own context internally; use
    this wrapper to add an inversion to any other environment with a Box action space symmetric around 0.

    :param env: the environment to wrap.
    :param sign: ``-1`` or ``+1`` for every channel, or one sign per action channel.
    :param permutation: optional order of the action channels (e.g. ``[1, 0]`` swaps two channels).
    """

    def __init__(self, env: gym.Env, sign: float | Sequence[float] = -1.0, permutation: Sequence[int] | None = None) -> None:
        if not isinstance(env.action_space, spaces.Box):
            raise TypeError(f"ActuatorInversion needs a Box action space, got {env.action_space}")
        shape = env.action_space.shape
        signs = (
            np.broadcast_to(np.asarray(sign, dtype=np.float32), shape).copy()
            if np.ndim(sign) == 0
            else np.asarray(sign, np.float32)
        )
        if signs.shape != shape or not np.all(np.isin(signs, (-1.0, 1.0))):
            raise ValueError(f"sign={sign!r} must be -1, +1 or one of them per action channel (shape {shape})")
        if not np.allclose(env.action_space.low, -env.action_space.high):
            raise ValueError("ActuatorInversion needs an action space symmetric around 0 (low == -high)")
        order = np.arange(shape[0]) if permutation is None else np.asarray(permutation)
        if sorted(order.tolist()) != list(range(shape[0])):
            raise ValueError(f"permutation={permutation!r} must be a permutation of range({shape[0]})")
        gym.utils.RecordConstructorArgs.__init__(self, sign=sign, permutation=permutation)
        self.sign, self.permutation = signs, order
        gym.wrappers.TransformAction.__init__(
            self, env, lambda a: (self.sign * np.asarray(a)[self.permutation]).astype(a.dtype), env.action_space
        )
