"""AIB-ODE-v0 (and ODE-k), AIB-WalkerGym-v0 and AIB-HopperGym-v0: dynamics, rewards, contexts, seeding, inversion."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest

import aib
from aib.toy.ode import ODEEnv, band_reward

GYM_IDS = ("AIB-WalkerGym-v0", "AIB-HopperGym-v0")


# ---------------------------------------------------------------------------------------------------------------- ODE
def ode_at(x: float, k: int = 2, **context: float) -> ODEEnv:
    """An ODE env reset and then placed at state ``x`` under the given coefficients."""
    env = ODEEnv(k=k, context=context)
    env.reset(seed=0)
    env.x = x
    return env


def ode_step(env: ODEEnv, a0: float, a1: float) -> tuple[np.ndarray, float, dict]:
    obs, reward, terminated, truncated, info = env.step(np.array([a0, a1], dtype=np.float32))
    assert not terminated and not truncated
    return obs, reward, info


@pytest.mark.parametrize(
    "k, context, action, expected_dx",
    [
        (2, {"parameter_0": 1.0, "parameter_1": 0.0}, (1.0, 0.0), 0.01),  # c0 * a0 * dt
        (2, {"parameter_0": 1.0, "parameter_1": 0.0}, (-0.5, 0.75), -0.005),  # a1 has no first-order effect
        (2, {"parameter_0": -2.0, "parameter_1": 0.0}, (0.5, 0.0), -0.01),  # the sign of c0 inverts the response
        (2, {"parameter_0": 0.0, "parameter_1": 1.0}, (0.5, 0.25), 0.01 * (0.25 - 0.0625)),  # c1 (a0^2 - a1^2)
        (2, {"parameter_0": 0.0, "parameter_1": 3.0}, (0.0, 1.0), -0.03),  # Re(i^2) = -1
        (2, {"parameter_0": 2.0, "parameter_1": -1.0}, (0.5, 0.5), 0.01 * (2.0 * 0.5 - 1.0 * 0.0)),
        (3, {"parameter_0": 0.0, "parameter_1": 0.0, "parameter_2": 1.0}, (0.5, 0.5), 0.01 * (0.125 - 3 * 0.125)),
        (3, {"parameter_0": 0.0, "parameter_1": 0.0, "parameter_2": 2.0}, (1.0, 0.0), 0.02),
        (1, {"parameter_0": 4.0}, (0.25, -1.0), 0.01),
    ],
)
def test_ode_hand_computed_steps(k: int, context: dict, action: tuple, expected_dx: float) -> None:
    env = ode_at(0.3, k=k, **context)
    obs, _, _ = ode_step(env, *action)
    assert env.x == pytest.approx(0.3 + expected_dx, abs=1e-12)
    assert obs.dtype == np.float32 and obs.shape == (1,)
    assert obs[0] == np.float32(env.x)


def test_ode_k_matches_complex_polynomial() -> None:
    rng = np.random.default_rng(0)
    k = 7
    c = np.round(rng.uniform(-5, 5, size=k), 4)
    env = ode_at(0.0, k=k, **{f"parameter_{j}": float(v) for j, v in enumerate(c)})
    for _ in range(20):
        a = rng.uniform(-1, 1, size=2).astype(np.float32)
        u = complex(float(a[0]), float(a[1]))
        expected = sum(cj * u ** (j + 1) for j, cj in enumerate(c)).real
        assert env.x_dot(a) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    "x, reward, level",
    [
        (0.0, 1.0, 0),
        (0.0499, 1.0, 0),
        (0.05, 0.5, 1),
        (0.0999, 0.5, 1),
        (0.1, 1 / 3, 2),
        (0.1999, 1 / 3, 2),
        (0.2, 0.25, 3),
        (0.4999, 0.25, 3),
        (0.5, 0.05, 4),
        (1.9999, 0.05, 4),
        (2.0, 0.0, 5),
        (15.0, 0.0, 5),
    ],
)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ode_reward_bands_are_strict(x: float, reward: float, level: int, sign: float) -> None:
    env = ode_at(sign * x)
    _, r, info = ode_step(env, 0.0, 0.0)  # u = 0: x does not move
    assert env.x == sign * x
    assert r == pytest.approx(reward)
    assert info["reward_level"] == level
    assert info["distance"] == x
    assert band_reward(x) == (pytest.approx(reward), level)


@pytest.mark.parametrize("start, a0, bound", [(19.995, 1.0, 20.0), (-19.995, -1.0, -20.0)])
def test_ode_clips_at_20(start: float, a0: float, bound: float) -> None:
    env = ode_at(start, parameter_0=1.0, parameter_1=0.0)
    for _ in range(3):
        obs, reward, _ = ode_step(env, a0, 0.0)
        assert env.x == bound and obs[0] == np.float32(bound)
        assert reward == 0.0
    assert env.observation_space.contains(obs)
    obs, _, _ = ode_step(env, -a0, 0.0)  # and it comes back from the bound
    assert env.x == pytest.approx(bound - np.sign(bound) * 0.01)


def test_ode_reset_and_default_context() -> None:
    env = gym.make("AIB-ODE-v0", context={})
    starts = [float(env.reset(seed=s)[0][0]) for s in range(50)]
    assert all(-1.0 <= x < 1.0 for x in starts) and len(set(starts)) == 50
    assert env.reset(seed=3)[0][0] == env.reset(seed=3)[0][0]
    assert env.unwrapped.context == {"parameter_0": 1.0, "parameter_1": 0.0} == aib.default_context("AIB-ODE-v0")
    assert env.unwrapped.k == 2


@pytest.mark.parametrize("k", [1, 2, 3, 5, 20])
def test_ode_k_sizes(k: int) -> None:
    env = gym.make("AIB-ODE-v0", k=k)
    assert env.observation_space.shape == (1,) and env.action_space.shape == (2,)
    obs, info = env.reset(seed=0)
    assert obs.shape == (1,)
    assert list(info["context"]) == [f"parameter_{j}" for j in range(k)]
    assert env.unwrapped.k == k
    aware = gym.make("AIB-ODE-v0", k=k, context_aware=True)
    obs, info = aware.reset(seed=0)
    assert aware.observation_space.shape == obs.shape == (1 + k,)
    np.testing.assert_array_equal(obs[1:], np.array(list(info["context"].values()), dtype=np.float32))


@pytest.mark.parametrize("k", [0, 21, -1, "2", 2.0, True, None])
def test_ode_rejects_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match=r"\bk="):
        ODEEnv(k=k)
    with pytest.raises(ValueError, match=r"\bk="):
        gym.make("AIB-ODE-v0", k=k)


# ------------------------------------------------------------------------------------------------------ Walker, Hopper
def rollout(env: gym.Env, actions: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        assert not terminated and not truncated
        observations.append(obs)
        rewards.append(reward)
    return np.array(observations), np.array(rewards)


def random_actions(env: gym.Env, n: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * rng.uniform(-1, 1, size=(n, *env.action_space.shape))).astype(np.float32)


@pytest.mark.parametrize("env_id, n_obs, n_act", [("AIB-WalkerGym-v0", 17, 6), ("AIB-HopperGym-v0", 11, 3)])
def test_gym_spaces_and_info(env_id: str, n_obs: int, n_act: int) -> None:
    env = gym.make(env_id)
    assert env.observation_space.shape == (n_obs,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (n_act,) and env.action_space.dtype == np.float32
    assert env.spec.max_episode_steps == 1000
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (n_obs,)
    obs, reward, _, _, info = env.step(env.action_space.sample())
    assert obs.dtype == np.float32
    assert reward == pytest.approx(info["reward_forward"] + info["reward_ctrl"] + info["reward_survive"])
    assert {"x_position", "x_velocity", "z_distance_from_origin"} <= set(info)
    assert env.unwrapped.metadata["render_modes"] == ["rgb_array"]


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_gym_gravity_reaches_model(env_id: str) -> None:
    env = gym.make(env_id, context={"gravity": 3.5})
    env.reset(seed=0)
    np.testing.assert_array_equal(env.unwrapped.model.opt.gravity, [0.0, 0.0, -3.5])
    env.unwrapped.set_context({"gravity": 19.62})
    env.reset()
    np.testing.assert_array_equal(env.unwrapped.model.opt.gravity, [0.0, 0.0, -19.62])


@pytest.mark.parametrize("env_id, base_gear", [("AIB-WalkerGym-v0", 100.0), ("AIB-HopperGym-v0", 200.0)])
def test_gym_strength_scales_gear_without_compounding(env_id: str, base_gear: float) -> None:
    env = gym.make(env_id).unwrapped
    gear = env.model.actuator_gear
    for strength in (1.5, 0.5, 1.5, 1.5, 2.0, 0.1, 1.5):
        env.set_context({"actuator_strength": strength})
        env.reset(seed=1)
        np.testing.assert_allclose(gear[:, 0], base_gear * strength, rtol=1e-12)
        np.testing.assert_array_equal(gear[:, 1:], 0.0)
        env.reset(options={"context": {"actuator_strength": strength}})
        np.testing.assert_allclose(gear[:, 0], base_gear * strength, rtol=1e-12)
    env.set_context(None)  # back to drawing from the split: every context sets the gear from the base value
    for i in range(20):
        _, info = env.reset(seed=0) if i == 0 else env.reset()
        np.testing.assert_allclose(gear[:, 0], base_gear * info["context"]["actuator_strength"], rtol=1e-12)


def test_hopper_margins_and_walker_untouched() -> None:
    hopper = gym.make("AIB-HopperGym-v0").unwrapped
    assert hopper.model.ngeom == 5
    np.testing.assert_array_equal(hopper.model.geom_margin, 0.0005)
    walker = gym.make("AIB-WalkerGym-v0").unwrapped
    np.testing.assert_array_equal(walker.model.geom_margin, 0.0)  # walker2d_v5.xml has no margins to restore


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_gym_never_terminates_after_falling(env_id: str) -> None:
    env = gym.make(env_id, context={"gravity": 19.62, "actuator_strength": 2.0})
    env.reset(seed=0)
    actions = np.sign(random_actions(env, 400, seed=1))  # bang-bang: falls within a few dozen steps
    survive = []
    for a in actions:
        _, _, terminated, truncated, info = env.step(a)
        assert not terminated and not truncated
        survive.append(info["reward_survive"])
    assert survive[-1] == 0.0 and sum(survive) < 200  # it did fall (unhealthy) and the episode went on


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_gym_same_seed_same_trajectory(env_id: str) -> None:
    env_a, env_b = gym.make(env_id, context={"gravity": 7.0}), gym.make(env_id, context={"gravity": 7.0})
    actions = random_actions(env_a, 150)
    obs_a, rew_a = rollout(env_a, actions, seed=5)
    obs_b, rew_b = rollout(env_b, actions, seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    obs_c, _ = rollout(env_a, actions, seed=6)
    assert not np.array_equal(obs_a[0], obs_c[0])
    # unseeded resets after a seeded one are reproducible too
    first = [env.reset(seed=9)[0] for env in (env_a, env_b)]
    second = [env.reset()[0] for env in (env_a, env_b)]
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_array_equal(second[0], second[1])
    assert not np.array_equal(first[0], second[0])


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_gym_nominal_context_replays_gymnasium_v5(env_id: str) -> None:
    env = gym.make(env_id, context={})
    inner_cls = type(env.unwrapped._inner)
    reference = inner_cls(terminate_when_unhealthy=False)
    reference.model.geom_margin[:] = env.unwrapped.model.geom_margin  # Hopper: the restored margins
    actions = random_actions(env, 100, seed=2)
    obs, rewards = rollout(env, actions, seed=11)
    ref_obs = [reference.reset(seed=11)[0]]
    ref_rewards = []
    for a in actions:
        o, r, *_ = reference.step(a)
        ref_obs.append(o)
        ref_rewards.append(r)
    np.testing.assert_array_equal(obs, np.array(ref_obs, dtype=np.float32))
    np.testing.assert_array_equal(rewards, ref_rewards)


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_gym_inversion_wrapper_equals_negated_gear(env_id: str) -> None:
    context = {"gravity": 8.0, "actuator_strength": 1.3}
    wrapped = aib.ActuatorInversion(gym.make(env_id, context=context), sign=-1.0)
    negated = gym.make(env_id, context=context)
    negated.reset(seed=0)
    negated.unwrapped.model.actuator_gear[:, 0] *= -1.0  # persists across resets (the context does not change)
    actions = random_actions(negated, 300, seed=3)
    obs_w, rew_w = rollout(wrapped, actions, seed=4)
    obs_n, rew_n = rollout(negated, actions, seed=4)
    np.testing.assert_array_equal(obs_w, obs_n)
    np.testing.assert_array_equal(rew_w, rew_n)
    plain_obs, _ = rollout(gym.make(env_id, context=context), actions, seed=4)
    assert not np.allclose(plain_obs, obs_n)  # the inversion does change the trajectory


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_gym_pickle_keeps_context_and_state(env_id: str) -> None:
    env = gym.make(env_id, context={"gravity": 2.0, "actuator_strength": 0.4}).unwrapped
    env.reset(seed=0)
    actions = random_actions(env, 60, seed=5)
    for a in actions[:30]:
        env.step(a)
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(clone.model.opt.gravity, [0.0, 0.0, -2.0])
    np.testing.assert_allclose(clone.model.actuator_gear, env.model.actuator_gear)
    np.testing.assert_array_equal(clone.model.geom_margin, env.model.geom_margin)
    for a in actions[30:]:
        np.testing.assert_array_equal(env.step(a)[0], clone.step(a)[0])
    np.testing.assert_array_equal(env.reset()[0], clone.reset()[0])
