"""Shared adapter of the dm_control AIB environments: an edited suite model, a cached compiled physics per context.

Each domain module subclasses :class:`DMCEnv` and provides

* ``_edit_model(root, context)``: edit the parsed MJCF of the suite domain (``lxml`` element tree) for ``context``;
* ``_make_task()``: the suite's ``Task`` (with :class:`ContextActionMixin` first in its bases);
* ``_task_info(physics, observation, reward)``: a few cheap diagnostic values for ``info``.

The adapter builds a :class:`dm_control.rl.control.Environment` directly (no shimmy, no Dict space), flattens the
observation dict with its keys sorted alphabetically into float32, seeds the task's ``RandomState`` from the env's own
RNG at every reset, and applies ``action_factor`` / ``swap`` in the task's ``before_step``, i.e. to the command just
before ``physics.set_control``.

Compiling a suite model takes about 0.1 s, so the compiled environments are cached per instance, keyed by the values
of the context keys that change the model (``_model_keys``); a sub-env that keeps its context compiles once.
Every instance owns its physics (the tasks write into the model, e.g. the reacher's target).

In the middle of an episode (``invert_at``, ``context_schedule``) ``action_factor`` and ``swap`` only change the
task's action transform. A model key outside ``episode_fixed_keys`` (gravity, actuator strength) switches to the
compiled environment of the new context and copies the whole integration state (``mj_getState``: time, qpos, qvel,
act, ctrl, warmstart...) and the step count into it, so the motion goes on where it was.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any, ClassVar

import mujoco
import numpy as np
from dm_control.rl import control
from dm_control.suite import base
from gymnasium import spaces
from lxml import etree

from aib.core import AIBEnv

_SETTOTALMASS = "settotalmass"


class _DropSettotalmass(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _SETTOTALMASS not in record.getMessage()


@contextlib.contextmanager
def quiet_settotalmass() -> Iterator[None]:
    """Silence MuJoCo's ``settotalmass`` deprecation notice while a model compiles (and only then).

    dm_control routes MuJoCo's compiler warnings to absl logging; other MuJoCo front ends raise a Python warning.
    Both are filtered for the duration of the block; every other message passes.
    """
    log_filter = _DropSettotalmass()
    logger = logging.getLogger("absl")
    logger.addFilter(log_filter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f".*{_SETTOTALMASS}.*")
            yield
    finally:
        logger.removeFilter(log_filter)


def fmt(values: Any) -> str:
    """MJCF attribute text of a number or a sequence of numbers (shortest round-trip representation)."""
    return " ".join(repr(float(v)) for v in np.atleast_1d(values))


def parse(text: str | None) -> np.ndarray:
    """The numbers of an MJCF attribute as a float array."""
    if text is None:
        raise ValueError("missing MJCF attribute")
    return np.array([float(v) for v in text.split()], dtype=np.float64)


def find(root: etree._Element, tag: str, name: str) -> etree._Element:
    """The unique element ``<tag name="name">`` of the model; raise if the suite XML changed."""
    found = root.findall(f".//{tag}[@name='{name}']")
    if len(found) != 1:
        raise RuntimeError(f"expected one <{tag} name={name!r}> in the dm_control model, found {len(found)}")
    return found[0]


def scale_attribute(element: etree._Element, attribute: str, factor: float, indices: tuple[int, ...]) -> None:
    """Multiply the given components of a numeric attribute by ``factor``."""
    values = parse(element.get(attribute))
    values[list(indices)] *= factor
    element.set(attribute, fmt(values))


def set_gravity(root: etree._Element, gravity: float) -> None:
    """Write ``<option gravity="0 0 -g">`` (keeps every other option)."""
    option = root.find("option")
    if option is None:
        option = etree.Element("option")
        root.insert(0, option)
    option.set("gravity", fmt([0.0, 0.0, -gravity]))


class ContextActionMixin:
    """Put this first in the bases of a suite ``Task``: the context's action transform runs in ``before_step``.

    ``swap`` reverses the two action channels, ``action_factor`` multiplies the whole action; the result goes to the
    suite's ``before_step`` (``physics.set_control``).
    """

    action_factor: float = 1.0
    swap: bool = False

    def before_step(self, action: Any, physics: Any) -> None:
        action = np.asarray(action, dtype=np.float64)
        if self.swap:
            action = action[::-1]
        if self.action_factor != 1.0:
            action = self.action_factor * action
        super().before_step(action, physics)  # type: ignore[misc]


class DMCEnv(AIBEnv):
    """Base class of the dm_control AIB environments (see the module docstring).

    :param render_width: width of ``render()`` images in pixels.
    :param render_height: height of ``render()`` images in pixels.
    :param camera_id: camera of ``render()`` (index or name of an MJCF camera; -1: free camera).
    :param kwargs: the context arguments of :class:`aib.core.AIBEnv`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 100}

    domain: ClassVar[ModuleType]
    """The ``dm_control.suite`` module of the domain (its ``get_model_and_assets`` and ``Physics``)."""
    obs_dim: ClassVar[int]
    action_dim: ClassVar[int]
    time_limit: ClassVar[float]
    """The suite task's time limit in seconds: ``max_episode_steps`` control steps."""
    control_timestep: ClassVar[float | None] = None
    """Control step in seconds (``None``: one physics step per control step)."""
    max_episode_steps: ClassVar[int] = 1000
    _model_keys: ClassVar[tuple[str, ...]] = ()
    """The context keys that change the compiled model (the cache key); the others act on the action."""
    cache_size: ClassVar[int] = 32
    """Compiled environments kept per instance (least recently used first out); a split has 20 contexts."""

    def __init__(self, render_width: int = 480, render_height: int = 480, camera_id: int | str = 0, **kwargs: Any) -> None:
        for name, value in (("render_width", render_width), ("render_height", render_height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        self.render_width, self.render_height, self.camera_id = int(render_width), int(render_height), camera_id
        self._cache: collections.OrderedDict[tuple[float, ...], control.Environment] = collections.OrderedDict()
        self._dm_env: control.Environment | None = None
        self._action_factor, self._swap = 1.0, False
        self._obs_keys: tuple[str, ...] = ()
        self._needs_reset = True
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ hooks for the domain modules
    def _edit_model(self, root: etree._Element, context: dict[str, float]) -> None:
        raise NotImplementedError

    def _make_task(self) -> base.Task:
        raise NotImplementedError

    def _task_info(self, physics: Any, observation: collections.OrderedDict, reward: float) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ model construction and cache
    def model_xml(self, context: dict[str, float]) -> str:
        """The suite domain's MJCF edited for ``context``."""
        xml, _ = self.domain.get_model_and_assets()
        root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
        self._edit_model(root, context)
        return etree.tostring(root, encoding="unicode")

    def _build(self, context: dict[str, float]) -> control.Environment:
        xml = self.model_xml(context)
        _, assets = self.domain.get_model_and_assets()
        try:
            with quiet_settotalmass():
                physics = self.domain.Physics.from_xml_string(xml, assets)
        except Exception as error:  # MuJoCo's compiler rejects the edited model
            values = {k: context[k] for k in self._model_keys}
            raise ValueError(f"context {values} gives a model MuJoCo cannot compile for {self.env_id}: {error}") from error
        task = self._make_task()
        return control.Environment(physics, task, time_limit=self.time_limit, control_timestep=self.control_timestep)

    def _cache_key(self, context: dict[str, float]) -> tuple[float, ...]:
        return tuple(float(context[k]) for k in self._model_keys)

    def _lookup(self, context: dict[str, float]) -> control.Environment:
        """The compiled environment of ``context`` (built on a cache miss; nothing is evicted here)."""
        key = self._cache_key(context)
        dm_env = self._cache.get(key)
        if dm_env is None:
            dm_env = self._build(context)
            self._cache[key] = dm_env
        else:
            self._cache.move_to_end(key)
        return dm_env

    def _evict(self) -> None:
        """Free the least recently used compiled environments beyond ``cache_size``."""
        while len(self._cache) > self.cache_size:
            _, old = self._cache.popitem(last=False)
            old.physics.free()

    def _use(self, dm_env: control.Environment, context: dict[str, float]) -> None:
        """Make ``dm_env`` the current environment, with the action transform of ``context``."""
        self._dm_env = dm_env
        self._action_factor = float(context.get("action_factor", 1.0))
        self._swap = context.get("swap", 0.0) == 1.0
        dm_env.task.action_factor, dm_env.task.swap = self._action_factor, self._swap

    def _apply_context(self, context: dict[str, float]) -> None:
        self._use(self._lookup(context), context)
        self._evict()
        self._needs_reset = True

    def _change_context(self, context: dict[str, float]) -> None:
        old = self._dm_env
        if old is None:  # closed: step() asks for a reset anyway
            self._apply_context(context)
            return
        new = self._lookup(context)
        if new is not old:
            _transfer_state(old, new)
        self._use(new, context)
        self._evict()

    # ------------------------------------------------------------------ AIBEnv hooks
    def _build_spaces(self) -> tuple[spaces.Box, spaces.Box]:
        obs = spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float32)
        act = spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        return obs, act

    def _flatten(self, observation: collections.OrderedDict) -> np.ndarray:
        if not self._obs_keys:
            self._obs_keys = tuple(sorted(observation))
        return np.concatenate([np.ravel(observation[k]) for k in self._obs_keys], dtype=np.float32)

    def _reset_task(self, rng: np.random.Generator) -> np.ndarray:
        if self._dm_env is None:  # closed: compile again
            self._apply_context(self.context)
        assert self._dm_env is not None
        # The task draws its initial state from its own RandomState: seed it from the env's RNG, so that
        # reset(seed=s) fixes the trajectory (and unseeded resets continue the env's stream).
        self._dm_env.task.random.seed(int(rng.integers(2**32)))
        time_step = self._dm_env.reset()
        self._needs_reset = False
        return self._flatten(time_step.observation)

    def _step_task(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        if self._needs_reset or self._dm_env is None:
            raise RuntimeError(
                f"{self.env_id}: call reset() before step() (after construction, after close(), or at the end "
                f"of an episode at dm_control's step limit of {self.max_episode_steps})"
            )
        time_step = self._dm_env.step(action)
        if time_step.last():
            # dm_control's own time limit (the same step as gymnasium's TimeLimit): a truncation, never a termination.
            self._needs_reset = True
        reward = float(time_step.reward)
        info = self._task_info(self._dm_env.physics, time_step.observation, reward)
        return self._flatten(time_step.observation), reward, False, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, self._needs_reset, info

    # ------------------------------------------------------------------ access, rendering, closing
    @property
    def dm_env(self) -> control.Environment:
        """The dm_control environment of the current context."""
        if self._dm_env is None:
            self._apply_context(self.context)
        assert self._dm_env is not None
        return self._dm_env

    @property
    def physics(self) -> Any:
        """The dm_control ``Physics`` of the current context."""
        return self.dm_env.physics

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.physics.render(height=self.render_height, width=self.render_width, camera_id=self.camera_id)

    def close(self) -> None:
        for dm_env in self._cache.values():
            dm_env.physics.free()
        self._cache.clear()
        self._dm_env = None
        self._needs_reset = True
        super().close()


def _transfer_state(source: control.Environment, target: control.Environment) -> None:
    """Continue ``source``'s episode in ``target`` (same model structure, other parameters such as gravity or gears)."""
    src, dst = source.physics, target.physics
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(src.model.ptr, spec), dtype=np.float64)
    mujoco.mj_getState(src.model.ptr, src.data.ptr, state, spec)
    mujoco.mj_setState(dst.model.ptr, dst.data.ptr, state, spec)
    # dm_control's legacy step starts with mj_step2: the derived quantities must be those of the new model.
    dst.forward()
    # control.Environment keeps the episode's step count (its time limit) and the task its random stream.
    target._step_count, target._reset_next_step = source._step_count, source._reset_next_step
    target.task.random.set_state(source.task.random.get_state())
