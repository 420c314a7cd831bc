"""The shared machinery of the gymnasium MuJoCo tasks (WalkerGym, HopperGym): an inner v5 env driven by the context."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from aib.core import AIBEnv


class GymMujocoEnv(AIBEnv):
    """An AIB task around a gymnasium MuJoCo v5 env (composition: the inner env is built here, not wrapped).

    The inner env is built with ``terminate_when_unhealthy=False`` and its other v5 defaults (frame_skip 4). The context
    edits its model in place: ``gravity`` sets ``model.opt.gravity = [0, 0, -g]`` and ``actuator_strength`` sets
    ``model.actuator_gear = base_gear * s`` (from a copy of the XML's gears, so repeated contexts never compound).
    ``reset(seed=s)`` resets the inner env with the same seed, so the default context replays the gymnasium v5 env
    seeded with ``s`` exactly; unseeded resets continue the inner env's own generator.

    Subclasses set ``env_id``, ``inner_cls`` and optionally ``geom_margin``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 125}
    inner_cls: ClassVar[type[MujocoEnv]]
    geom_margin: ClassVar[float | None] = None
    """Every geom margin is set to this value when not ``None`` (see HopperGym)."""

    _inner: MujocoEnv

    def __init__(self, **kwargs: Any) -> None:
        self._pending_seed: int | None = None
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ inner env
    def _make_inner(self) -> None:
        self._inner = self.inner_cls(terminate_when_unhealthy=False, render_mode=self.render_mode)
        if self.geom_margin is not None:
            self._inner.model.geom_margin[:] = self.geom_margin
        self._base_gear = self._inner.model.actuator_gear.copy()

    @property
    def model(self) -> mujoco.MjModel:
        """The MuJoCo model of the inner env (edited in place by the context)."""
        return self._inner.model

    @property
    def data(self) -> mujoco.MjData:
        """The MuJoCo data of the inner env."""
        return self._inner.data

    @property
    def dt(self) -> float:
        """Simulated seconds per step (0.008: timestep 0.002, frame_skip 4)."""
        return self._inner.dt

    # ------------------------------------------------------------------ AIBEnv hooks
    def _build_spaces(self) -> tuple[spaces.Box, spaces.Box]:
        # AIBEnv.__init__ calls this after checking its arguments (render_mode included) and before the first
        # _apply_context, so the inner env is built here.
        self._make_inner()
        n_obs = self._inner.observation_space.shape[0]
        obs = spaces.Box(-np.inf, np.inf, shape=(n_obs,), dtype=np.float32)
        act = spaces.Box(-1.0, 1.0, shape=(self._inner.model.nu,), dtype=np.float32)
        return obs, act

    def _apply_context(self, context: dict[str, float]) -> None:
        model = self._inner.model
        model.opt.gravity[:] = (0.0, 0.0, -context["gravity"])
        model.actuator_gear[:] = self._base_gear * context["actuator_strength"]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._pending_seed = seed
        return super().reset(seed=seed, options=options)

    def _reset_task(self, rng: np.random.Generator) -> np.ndarray:
        # The inner env owns the physics randomness: reseed it with reset's seed (None continues its generator).
        seed, self._pending_seed = self._pending_seed, None
        obs, _ = self._inner.reset(seed=seed)
        return obs.astype(np.float32)

    def _step_task(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        obs, reward, _, _, inner_info = self._inner.step(action)
        # terminate_when_unhealthy=False: the inner env never terminates; the time limit (1000) comes from register.
        info = {key: float(value) for key, value in inner_info.items()}
        return obs.astype(np.float32), float(reward), False, info

    # ------------------------------------------------------------------ rendering, closing, pickling
    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn(f"{self.env_id}: render() was called without a render_mode (pass render_mode='rgb_array')")
            return None
        return self._inner.render()

    def close(self) -> None:
        self._inner.close()
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        # The inner env pickles as its constructor arguments (EzPickle), which would lose the context edits and the
        # simulation state: pickle the MjData and the inner generator instead and rebuild the rest.
        state = self.__dict__.copy()
        inner = state.pop("_inner")
        state["_inner_state"] = (inner.data, inner._np_random, inner._np_random_seed)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        data, np_random, np_random_seed = state.pop("_inner_state")
        super().__setstate__(state)
        self._make_inner()
        self._apply_context(self.context)
        mujoco.mj_copyData(self._inner.data, self._inner.model, data)
        self._inner._np_random, self._inner._np_random_seed = np_random, np_random_seed
