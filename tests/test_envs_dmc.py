"""The dm_control AIB environments: context edits of the model, inversion and permutation, seeding, caching.

Generic checks over every id (gymnasium/SB3 checkers, episode length, splits) live elsewhere; these are the
dm_control-specific ones. Rollouts are short (tens of steps).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("dm_control")

import aib
from aib.dmc.cartpole import CartpoleEnv
from aib.dmc.cheetah import LEG_BODIES, LEG_GEOMS, CheetahEnv
from aib.dmc.common import DMCEnv, quiet_settotalmass

DMC_IDS = [
    "AIB-Cartpole-v0",
    "AIB-BallInCup-v0",
    "AIB-Walker-v0",
    "AIB-Cheetah-v0",
    "AIB-ReacherEasy-v0",
    "AIB-ReacherHard-v0",
    "AIB-ReacherHardPerm-v0",
]
INVERSION_IDS = ["AIB-Cartpole-v0", "AIB-Cheetah-v0", "AIB-ReacherEasy-v0", "AIB-ReacherHard-v0"]
REACHER_IDS = ["AIB-ReacherEasy-v0", "AIB-ReacherHard-v0", "AIB-ReacherHardPerm-v0"]
OBS_DIMS = {
    "AIB-Cartpole-v0": 5,
    "AIB-BallInCup-v0": 8,
    "AIB-Walker-v0": 24,
    "AIB-Cheetah-v0": 17,
    "AIB-ReacherEasy-v0": 6,
    "AIB-ReacherHard-v0": 6,
    "AIB-ReacherHardPerm-v0": 6,
}
ACT_DIMS = {
    "AIB-Cartpole-v0": 1,
    "AIB-BallInCup-v0": 2,
    "AIB-Walker-v0": 6,
    "AIB-Cheetah-v0": 6,
    "AIB-ReacherEasy-v0": 2,
    "AIB-ReacherHard-v0": 2,
    "AIB-ReacherHardPerm-v0": 2,
}
SUITE_TASKS = {
    "AIB-Cartpole-v0": ("cartpole", "balance"),
    "AIB-BallInCup-v0": ("ball_in_cup", "catch"),
    "AIB-Walker-v0": ("walker", "walk"),
    "AIB-Cheetah-v0": ("cheetah", "run"),
    "AIB-ReacherEasy-v0": ("reacher", "easy"),
    "AIB-ReacherHard-v0": ("reacher", "hard"),
    "AIB-ReacherHardPerm-v0": ("reacher", "hard"),
}
# A non-default context for each id (the second key at its non-nominal value where it acts on the action).
CONTEXTS = {
    "AIB-Cartpole-v0": {"length": 0.85, "action_factor": -1.0},
    "AIB-BallInCup-v0": {"gravity": 12.0, "distance": 0.36},
    "AIB-Walker-v0": {"gravity": 14.71, "actuator_strength": 1.5},
    "AIB-Cheetah-v0": {"length": 1.2, "action_factor": -1.0},
    "AIB-ReacherEasy-v0": {"length": 1.2, "action_factor": -1.0},
    "AIB-ReacherHard-v0": {"length": 1.2, "action_factor": -1.0},
    "AIB-ReacherHardPerm-v0": {"length": 1.2, "swap": 1.0},
}
N_STEPS = 40


def make(env_id: str, **context: float) -> DMCEnv:
    env = gym.make(env_id, context={**aib.default_context(env_id), **context}).unwrapped
    assert isinstance(env, DMCEnv)
    return env


def actions(env_id: str, n: int = N_STEPS, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, ACT_DIMS[env_id])).astype(np.float32)


def rollout(env: gym.Env, seed: int, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in acts:
        obs, reward, terminated, truncated, _ = env.step(a)
        assert not terminated and not truncated
        observations.append(obs)
        rewards.append(reward)
    return np.array(observations), np.array(rewards)


def assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ---------------------------------------------------------------------------------------------- spaces and layout
@pytest.mark.parametrize("env_id", DMC_IDS)
def test_spaces_observation_layout_and_info(env_id: str) -> None:
    env = make(env_id)
    assert env.env_id == env_id
    assert env.observation_space.shape == (OBS_DIMS[env_id],) and env.observation_space.dtype == np.float32
    assert np.all(np.isinf(env.observation_space.low)) and np.all(np.isinf(env.observation_space.high))
    assert env.action_space.shape == (ACT_DIMS[env_id],) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1.0) and np.all(env.action_space.high == 1.0)
    assert env.action_space.shape == (env.physics.model.nu,)
    assert env.metadata["render_modes"] == ["rgb_array"] and env.metadata["render_fps"] > 0

    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (OBS_DIMS[env_id],)
    assert info["context"] == aib.default_context(env_id) and info["context_id"] == "custom"
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    # The dm_control observation dict, flattened with its keys in alphabetical order.
    raw = env.dm_env.task.get_observation(env.physics)
    expected = np.concatenate([np.ravel(raw[k]) for k in sorted(raw)]).astype(np.float32)
    np.testing.assert_array_equal(obs, expected)
    assert isinstance(reward, float) and 0.0 <= reward <= 1.0
    assert terminated is False and truncated is False
    assert info["context"] == aib.default_context(env_id)


def test_walker_observation_starts_with_height_and_reacher_has_to_target() -> None:
    walker = make("AIB-Walker-v0")
    obs, _ = walker.reset(seed=0)
    assert obs[0] == np.float32(walker.physics.torso_height())  # "height" < "orientations" < "velocity"
    reacher = make("AIB-ReacherEasy-v0")
    obs, _ = reacher.reset(seed=0)
    np.testing.assert_array_equal(obs[2:4], reacher.physics.finger_to_target().astype(np.float32))


@pytest.mark.parametrize("env_id", DMC_IDS)
def test_default_context_reproduces_the_suite_task(env_id: str) -> None:
    """Nominal context: the edited model, the seeding and the flattening give exactly the suite task's trajectory."""
    from dm_control import suite

    seed = 11
    env = make(env_id)
    acts = actions(env_id, 25)
    ours = rollout(env, seed, acts)
    # The env seeds the task's RandomState with one draw from its own RNG (gymnasium's np_random).
    task_seed = int(gym.utils.seeding.np_random(seed)[0].integers(2**32))
    domain, task = SUITE_TASKS[env_id]
    with quiet_settotalmass():
        reference = suite.load(domain, task, task_kwargs={"random": task_seed})
    time_step = reference.reset()

    def flat(observation: dict) -> np.ndarray:
        return np.concatenate([np.ravel(observation[k]) for k in sorted(observation)]).astype(np.float32)

    observations, rewards = [flat(time_step.observation)], []
    for a in acts:
        time_step = reference.step(a)
        observations.append(flat(time_step.observation))
        rewards.append(time_step.reward)
    assert_same(ours, (np.array(observations), np.array(rewards)))
    for field in ("body_mass", "body_pos", "geom_size", "geom_pos", "actuator_gear", "tendon_range", "dof_damping"):
        np.testing.assert_array_equal(getattr(env.physics.model, field), getattr(reference.physics.model, field), field)
    np.testing.assert_array_equal(env.physics.model.opt.gravity, reference.physics.model.opt.gravity)


# ---------------------------------------------------------------------------------------------- model edits
@pytest.mark.parametrize("length", [0.1, 0.85, 2.0])
def test_cartpole_pole_length(length: float) -> None:
    env = make("AIB-Cartpole-v0", length=length)
    model = env.physics.named.model
    assert model.geom_size["pole_1", 1] == pytest.approx(length)  # capsule half-length
    np.testing.assert_allclose(model.geom_pos["pole_1"], [0.0, 0.0, length])
    assert model.body_mass["pole_1"] == pytest.approx(0.1)  # explicit: does not grow with the length
    assert model.dof_damping["hinge_1"] == pytest.approx(2e-6)


def test_ball_in_cup_gravity_and_string_length() -> None:
    default_env, env = make("AIB-BallInCup-v0"), make("AIB-BallInCup-v0", gravity=12.0, distance=0.36)
    default_physics, physics = default_env.physics, env.physics
    np.testing.assert_array_equal(default_physics.model.opt.gravity, [0.0, 0.0, -9.81])
    np.testing.assert_array_equal(physics.model.opt.gravity, [0.0, 0.0, -12.0])
    default, model = default_physics.named.model, physics.named.model
    np.testing.assert_allclose(default.tendon_range["string"], [0.0, 0.3])
    np.testing.assert_allclose(model.tendon_range["string"], [0.0, 0.36])
    np.testing.assert_allclose(model.body_pos["ball"], default.body_pos["ball"] + [0.0, 0.0, 0.3 - 0.36])
    # The other context keeps its default.
    low_gravity = make("AIB-BallInCup-v0", gravity=1.0)
    np.testing.assert_allclose(low_gravity.physics.named.model.tendon_range["string"], [0.0, 0.3])


def test_walker_gravity_and_actuator_strength() -> None:
    envs = (
        make("AIB-Walker-v0"),
        make("AIB-Walker-v0", gravity=14.71, actuator_strength=1.5),
        make("AIB-Walker-v0", actuator_strength=0.1),
    )
    default, model, weak = (env.physics.model for env in envs)
    np.testing.assert_array_equal(default.actuator_gear[:, 0], [100, 50, 20, 100, 50, 20])
    np.testing.assert_allclose(model.actuator_gear[:, 0], 1.5 * default.actuator_gear[:, 0])
    np.testing.assert_array_equal(model.actuator_gear[:, 1:], default.actuator_gear[:, 1:])
    np.testing.assert_array_equal(model.opt.gravity, [0.0, 0.0, -14.71])
    np.testing.assert_allclose(weak.actuator_gear[:, 0], 0.1 * default.actuator_gear[:, 0])
    np.testing.assert_array_equal(weak.opt.gravity, [0.0, 0.0, -9.81])


@pytest.mark.parametrize("scale", [0.4, 1.2])
def test_cheetah_leg_length(scale: float) -> None:
    envs = make("AIB-Cheetah-v0"), make("AIB-Cheetah-v0", length=scale)  # keep the envs (and their physics) alive
    default, model = (env.physics.named.model for env in envs)
    for name in LEG_GEOMS:
        np.testing.assert_allclose(model.geom_pos[name], default.geom_pos[name] * [scale, 1.0, scale], err_msg=name)
        np.testing.assert_allclose(model.geom_size[name], default.geom_size[name] * [1.0, scale, 1.0], err_msg=name)
        np.testing.assert_allclose(model.geom_quat[name], default.geom_quat[name], err_msg=name)
    for name in LEG_BODIES:
        np.testing.assert_allclose(model.body_pos[name], default.body_pos[name] * [scale, 1.0, scale], err_msg=name)
    for name in ("torso", "bthigh", "fthigh"):  # the thighs stay attached to the torso ends
        np.testing.assert_array_equal(model.body_pos[name], default.body_pos[name])
    np.testing.assert_array_equal(model.geom_size["torso"], default.geom_size["torso"])
    # settotalmass="14" is kept: the total mass stays, its distribution changes.
    assert model.body_mass[1:].sum() == pytest.approx(14.0) and default.body_mass[1:].sum() == pytest.approx(14.0)
    assert not np.allclose(model.body_mass, default.body_mass)


@pytest.mark.parametrize("env_id", REACHER_IDS)
def test_reacher_arm_length_and_target_size(env_id: str) -> None:
    default_env, env = make(env_id), make(env_id, length=1.6)
    default, model = default_env.physics.named.model, env.physics.named.model
    for name in ("hand", "finger"):
        np.testing.assert_allclose(model.body_pos[name], default.body_pos[name] * [1.6, 1.0, 1.0])
    for name, length in (("arm", 0.12), ("hand", 0.1)):  # capsule fromto "0 0 0 L 0 0": centre L/2, half-length L/2
        assert model.geom_size[name, 1] == pytest.approx(1.6 * length / 2)
        np.testing.assert_allclose(model.geom_pos[name], [1.6 * length / 2, 0.0, 0.0], atol=1e-12)
    env.reset(seed=0)
    assert model.geom_size["target", 0] == (0.05 if env_id == "AIB-ReacherEasy-v0" else 0.015)
    # Target placement is unchanged by the length context: radius in [0.05, 0.20].
    assert 0.05 <= np.linalg.norm(model.geom_pos["target", :2]) <= 0.20


# ---------------------------------------------------------------------------------------------- inversion and swap
@pytest.mark.parametrize("env_id", INVERSION_IDS)
def test_action_factor_negates_the_action(env_id: str) -> None:
    acts = actions(env_id)
    inverted = rollout(make(env_id, action_factor=-1.0), 5, acts)
    assert_same(inverted, rollout(make(env_id, action_factor=1.0), 5, -acts))
    assert not np.array_equal(inverted[0], rollout(make(env_id, action_factor=1.0), 5, acts)[0])


@pytest.mark.parametrize("env_id", DMC_IDS)
def test_inversion_equals_negated_actuator_gear(env_id: str) -> None:
    """The command-side inversion is physically the actuator with its gear negated (symmetric ctrlranges)."""
    acts = actions(env_id)
    if env_id in INVERSION_IDS:
        inverted: gym.Env = make(env_id, action_factor=-1.0)
    else:  # no inversion context: the generic wrapper must agree with the gear edit too
        inverted = aib.ActuatorInversion(make(env_id), sign=-1.0)
    flipped = make(env_id)
    flipped.reset(seed=0)  # compiles and caches the +1 model; the gear edit persists across resets
    flipped.physics.model.actuator_gear[:, 0] *= -1.0
    assert np.all(flipped.physics.model.actuator_ctrlrange[:, 0] == -flipped.physics.model.actuator_ctrlrange[:, 1])
    assert_same(rollout(inverted, 7, acts), rollout(flipped, 7, acts))


def test_swap_reverses_the_two_commands() -> None:
    env_id = "AIB-ReacherHardPerm-v0"
    acts = actions(env_id)
    swapped = rollout(make(env_id, swap=1.0), 2, acts)
    assert_same(swapped, rollout(make(env_id, swap=0.0), 2, acts[:, ::-1]))
    assert not np.array_equal(swapped[0], rollout(make(env_id, swap=0.0), 2, acts)[0])
    # ... which is physically the two motors exchanging their joints (both gear 0.05).
    exchanged = make(env_id, swap=0.0)
    model = exchanged.physics.model
    assert model.actuator_gear[0, 0] == model.actuator_gear[1, 0] == 0.05
    model.actuator_trnid[:] = model.actuator_trnid[::-1].copy()
    assert_same(swapped, rollout(exchanged, 2, acts))


# ---------------------------------------------------------------------------------------------- seeding and caching
@pytest.mark.parametrize("env_id", DMC_IDS)
def test_same_seed_same_trajectory(env_id: str) -> None:
    context = CONTEXTS[env_id]
    acts = actions(env_id, 30)
    env = make(env_id, **context)
    first = rollout(env, 123, acts)
    assert_same(first, rollout(make(env_id, **context), 123, acts))  # a fresh env
    assert_same(first, rollout(env, 123, acts))  # the same env, after an episode (the state is fully reset)
    other, _ = env.reset(seed=124)
    assert not np.array_equal(other, first[0][0])
    unseeded, _ = env.reset()  # unseeded resets continue the env's stream
    assert not np.array_equal(unseeded, other)


@pytest.mark.parametrize("env_id", ["AIB-Cartpole-v0", "AIB-BallInCup-v0", "AIB-ReacherHardPerm-v0"])
def test_compiled_model_is_cached_per_context(env_id: str) -> None:
    env = make(env_id)
    env.reset(seed=0)
    physics_a = env.physics
    key = next(iter(CONTEXTS[env_id]))
    env.set_context(CONTEXTS[env_id])
    env.reset(seed=0)
    physics_b = env.physics
    assert physics_b is not physics_a
    env.set_context(aib.default_context(env_id))
    env.reset(seed=0)
    assert env.physics is physics_a and env.physics.model is physics_a.model  # no recompilation
    assert len(env._cache) == 2
    second = list(aib.default_context(env_id))[1]
    env.reset(options={"context": {second: CONTEXTS[env_id][second]}})
    assert env.context[second] == CONTEXTS[env_id][second] and env.context[key] == aib.default_context(env_id)[key]
    if second in env._model_keys:  # BallInCup: a third physical context
        assert env.physics is not physics_a and len(env._cache) == 3
    else:  # a change of the action transform alone reuses the compiled model of the same physical context
        assert env.physics is physics_a and len(env._cache) == 2


def test_split_draws_compile_each_physical_context_once() -> None:
    env_id = "AIB-Cartpole-v0"
    env = gym.make(env_id, split="eval_out").unwrapped
    assert isinstance(env, DMCEnv)
    seen = {}
    for _ in range(25):  # round robin: every context of the split, then five again
        env.reset()
        seen.setdefault(env.context["length"], env.physics)
        assert env.physics is seen[env.context["length"]]
    assert len(env._cache) == len({c["length"] for c in aib.get_contexts(env_id, "eval_out")}) == len(seen)


def test_close_then_reset_rebuilds() -> None:
    env = make("AIB-Cheetah-v0")
    first = rollout(env, 1, actions("AIB-Cheetah-v0", 5))
    env.close()
    assert len(env._cache) == 0
    assert_same(first, rollout(env, 1, actions("AIB-Cheetah-v0", 5)))


class _ShortCheetah(CheetahEnv):
    time_limit = 0.05  # dm_control's step limit after 5 control steps


def test_dm_control_step_limit_is_a_truncation() -> None:
    env = _ShortCheetah()
    env.reset(seed=0)
    for _ in range(4):
        assert env.step(np.zeros(6, np.float32))[2:4] == (False, False)
    _, _, terminated, truncated, _ = env.step(np.zeros(6, np.float32))
    assert terminated is False and truncated is True
    with pytest.raises(RuntimeError, match="reset"):  # never a silent dm_control auto-reset
        env.step(np.zeros(6, np.float32))
    env.reset()
    assert env.step(np.zeros(6, np.float32))[3] is False


def test_step_before_reset_raises() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        CartpoleEnv().step(np.zeros(1, np.float32))


def test_settotalmass_notice_is_filtered_only_while_compiling(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    make("AIB-Cheetah-v0", length=0.6)
    assert not any("settotalmass" in r.getMessage() for r in caplog.records)
    with quiet_settotalmass():
        logging.getLogger("absl").warning("another compiler warning")
    logging.getLogger("absl").warning("settotalmass outside the block")
    assert [r.getMessage() for r in caplog.records] == ["another compiler warning", "settotalmass outside the block"]


# ---------------------------------------------------------------------------------------------- rendering
def test_render_mode_none_returns_none() -> None:
    assert make("AIB-Cartpole-v0").render() is None
    with pytest.raises((TypeError, ValueError), match="render_mode"):
        CartpoleEnv(render_mode="human")
    with pytest.raises(ValueError, match="render_width"):
        CartpoleEnv(render_width=0)


def test_render_rgb_array() -> None:
    """Rendering needs an OpenGL backend; run it in a child process (EGL unless MUJOCO_GL is already chosen)."""
    code = textwrap.dedent(
        f"""
        import json, gymnasium as gym, aib
        shapes = {{}}
        for env_id in {DMC_IDS!r}:
            env = gym.make(env_id, render_mode="rgb_array", render_width=64, render_height=48)
            env.reset(seed=0)
            frame = env.render()
            shapes[env_id] = [list(frame.shape), str(frame.dtype), int(frame.max())]
            env.close()
        print(json.dumps(shapes))
        """
    )
    child_env = dict(os.environ)
    child_env.setdefault("MUJOCO_GL", "egl")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env, timeout=120)
    if result.returncode != 0:
        if any(word in result.stderr for word in ("OpenGL", "EGL", "egl", "GLFW", "rendering backend")):
            pytest.skip(f"no OpenGL backend for MUJOCO_GL={child_env['MUJOCO_GL']}: {result.stderr.strip()[-300:]}")
        raise AssertionError(result.stderr)
    shapes = json.loads(result.stdout.strip().splitlines()[-1])
    for env_id in DMC_IDS:
        shape, dtype, peak = shapes[env_id]
        assert shape == [48, 64, 3] and dtype == "uint8" and peak > 0, env_id
