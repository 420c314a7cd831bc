"""Faults in the middle of an episode: ``invert_at`` and ``context_schedule`` (docs/benchmark.md).

Every equivalence runs two copies of an environment from the same seed: the one with a fault given actions ``a`` must
reproduce the one without a fault given the faulted actions (``-a`` after an inversion, ``a[::-1]`` after a swap).
"""

from __future__ import annotations

import pickle
import warnings

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import aib
from aib.core import ACTION_SIGN_KEY

T = 7  # the fault step of most tests
N = 30  # steps per rollout

# one toy id, dm_control ids with action_factor and with neither key, and the ids without action_factor/swap
INVERSION_IDS = ["AIB-DI-v0", "AIB-Cheetah-v0", "AIB-Walker-v0", "AIB-WalkerGym-v0", "AIB-ODE-v0"]
SIGN_IDS = [env_id for env_id in aib.list_envs() if not {"action_factor", "swap"} & set(aib.default_context(env_id))]


def _actions(env: gym.Env, n: int = N, seed: int = 0) -> np.ndarray:
    shape = env.action_space.shape
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, *shape)).astype(np.float32)


def _rollout(env: gym.Env, actions: np.ndarray, seed: int = 4) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    obs, info = env.reset(seed=seed)
    observations, rewards, contexts = [obs], [], [info["context"]]
    for action in actions:
        obs, reward, terminated, _, info = env.step(action)
        assert not terminated
        observations.append(obs)
        rewards.append(reward)
        contexts.append(info["context"])
    return np.array(observations), np.array(rewards), contexts


def _context(env_id: str) -> dict[str, float]:
    """A fixed, non-default context (eval_out instance 3), as in test_envs.py."""
    return aib.get_contexts(env_id, "eval_out")[3]


def _close(*envs: gym.Env) -> None:
    for env in envs:
        env.close()


def test_sign_ids() -> None:
    assert SIGN_IDS == [
        "AIB-DIFriction-v0",
        "AIB-ODE-v0",
        "AIB-BallInCup-v0",
        "AIB-Walker-v0",
        "AIB-WalkerGym-v0",
        "AIB-HopperGym-v0",
    ]


# ---------------------------------------------------------------------------------------------------------------------
# invert_at: the dynamics flip exactly at step t
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", INVERSION_IDS)
def test_inversion_equals_negated_actions_from_t(env_id: str) -> None:
    context = _context(env_id)
    faulty = gym.make(env_id, context=context, invert_at=T)
    nominal = gym.make(env_id, context=context)
    actions = _actions(faulty)
    negated = actions.copy()
    negated[T:] *= -1.0
    obs_f, rew_f, _ = _rollout(faulty, actions)
    obs_n, rew_n, _ = _rollout(nominal, negated)
    # before t both agree with identical actions, from t on a acts as -a did (bitwise: the sign flip is exact)
    np.testing.assert_array_equal(obs_f, obs_n)
    np.testing.assert_array_equal(rew_f, rew_n)
    # and the fault does change the trajectory from step t on (observation t + 1 is the first one it reaches)
    obs_same, _, _ = _rollout(nominal, actions)
    np.testing.assert_array_equal(obs_f[: T + 1], obs_same[: T + 1])
    assert not np.array_equal(obs_f[T + 1], obs_same[T + 1])
    _close(faulty, nominal)


@pytest.mark.parametrize("env_id", ["AIB-DI-v0", "AIB-ODE-v0"])
def test_invert_at_zero_inverts_the_whole_episode(env_id: str) -> None:
    faulty = gym.make(env_id, context=_context(env_id), invert_at=0)
    nominal = gym.make(env_id, context=_context(env_id))
    actions = _actions(faulty)
    obs_f, rew_f, _ = _rollout(faulty, actions)
    obs_n, rew_n, _ = _rollout(nominal, -actions)
    np.testing.assert_array_equal(obs_f, obs_n)
    np.testing.assert_array_equal(rew_f, rew_n)


@pytest.mark.parametrize("env_id", ["AIB-DIPerm-v0", "AIB-ReacherHardPerm-v0"])
@pytest.mark.parametrize("swap", [0.0, 1.0])
def test_perm_fault_exchanges_the_channels(env_id: str, swap: float) -> None:
    context = {**_context(env_id), "swap": swap}
    faulty = gym.make(env_id, context=context, invert_at=T)
    nominal = gym.make(env_id, context=context)
    actions = _actions(faulty)
    exchanged = actions.copy()
    exchanged[T:] = actions[T:, ::-1]
    obs_f, rew_f, contexts = _rollout(faulty, actions)
    obs_n, rew_n, _ = _rollout(nominal, exchanged)
    np.testing.assert_array_equal(obs_f, obs_n)
    np.testing.assert_array_equal(rew_f, rew_n)
    # contexts[i] is the info of step i - 1 (contexts[0]: reset)
    assert [c["swap"] for c in contexts] == [swap] * (T + 1) + [1.0 - swap] * (N - T)
    obs_same, _, _ = _rollout(nominal, actions)
    assert not np.array_equal(obs_f, obs_same)
    _close(faulty, nominal)


# ---------------------------------------------------------------------------------------------------------------------
# info["context"]
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1.0, -1.0])
def test_info_context_action_factor(factor: float) -> None:
    context = {"mass": 0.8, "action_factor": factor}
    env = gym.make("AIB-DI-v0", context=context, invert_at=T, context_aware=True)
    observations, _, contexts = _rollout(env, _actions(env))
    # the reset info and the infos of steps 0 .. t - 1 report the episode's context, those of steps t .. the fault
    assert contexts[: T + 1] == [context] * (T + 1)
    assert contexts[T + 1 :] == [{"mass": 0.8, "action_factor": -factor}] * (N - T)
    assert env.unwrapped.context == contexts[-1]
    # the aware observation shows the context that acted on the step that returned it
    np.testing.assert_array_equal(observations[:, -1], [factor] * (T + 1) + [-factor] * (N - T))
    assert ACTION_SIGN_KEY not in contexts[-1]
    # the next reset goes back to the episode's context
    _, info = env.reset()
    assert info["context"] == context and env.unwrapped.context == context


@pytest.mark.parametrize("env_id", ["AIB-ODE-v0", "AIB-WalkerGym-v0", "AIB-DIFriction-v0"])
def test_info_context_action_sign(env_id: str) -> None:
    context = _context(env_id)
    env = gym.make(env_id, context=context, invert_at=T)
    _, _, contexts = _rollout(env, _actions(env, 2 * T))
    assert [c[ACTION_SIGN_KEY] for c in contexts] == [1.0] * (T + 1) + [-1.0] * T
    for c in contexts:  # the key set never changes; the context values themselves stay the episode's
        assert c == {**context, ACTION_SIGN_KEY: c[ACTION_SIGN_KEY]}
    _, info = env.reset()
    assert info["context"] == {**context, ACTION_SIGN_KEY: 1.0}
    # the key is there only once a fault is configured
    for kwargs in ({}, {"context_schedule": {3: {}}}):
        plain = gym.make(env_id, context=context, **kwargs)
        _, _, plain_contexts = _rollout(plain, _actions(plain, 5))
        assert all(ACTION_SIGN_KEY not in c for c in plain_contexts)
        plain.close()
    env.close()


def test_invert_at_with_split_and_make_vec_env() -> None:
    env = gym.make("AIB-DI-v0", split="eval_out", invert_at=2)
    _, info = env.reset(seed=5)
    episode = info["context"]
    assert info["context_id"] == "eval_out/5"
    for step in range(4):
        _, _, _, _, info = env.step(env.action_space.sample())
        factor = episode["action_factor"] * (-1 if step >= 2 else 1)
        assert info["context"] == {**episode, "action_factor": factor}
    venv = aib.make_vec_env("AIB-DI-v0", "train", n_envs=3, seed=0, env_kwargs={"invert_at": 1})
    venv.reset()
    first = [dict(c["context"]) for c in venv.reset_infos]
    for step in range(3):
        _, _, _, infos = venv.step(np.zeros((3, 2), np.float32))
        for before, info in zip(first, infos, strict=True):
            assert info["context"]["action_factor"] == before["action_factor"] * (-1 if step >= 1 else 1)
    assert venv.get_attr("invert_at") == [1, 1, 1]
    venv.close()


# ---------------------------------------------------------------------------------------------------------------------
# context_schedule
# ---------------------------------------------------------------------------------------------------------------------
def test_schedule_di_mass() -> None:
    context = {"mass": 1.2, "action_factor": -1.0}
    env = gym.make("AIB-DI-v0", context=context, context_schedule={T: {"mass": 0.4}})
    nominal = gym.make("AIB-DI-v0", context=context)
    actions = _actions(env)
    obs_s, _, contexts = _rollout(env, actions)
    obs_n, _, _ = _rollout(nominal, actions)
    np.testing.assert_array_equal(obs_s[: T + 1], obs_n[: T + 1])
    assert contexts[: T + 1] == [context] * (T + 1)
    assert contexts[T + 1 :] == [{"mass": 0.4, "action_factor": -1.0}] * (N - T)  # only the mass changed
    # the state is continuous: from the state reached at step t, a DI of mass 0.4 continues exactly like the schedule
    light = gym.make("AIB-DI-v0", context={"mass": 0.4, "action_factor": -1.0})
    light.reset(seed=0)
    light.unwrapped._state = obs_s[T].copy()
    continued = np.array([light.step(a)[0] for a in actions[T:]])
    np.testing.assert_array_equal(obs_s[T + 1 :], continued)
    assert not np.array_equal(obs_s[T + 2 :], obs_n[T + 2 :])


def _copy_dmc_state(source: gym.Env, target: gym.Env) -> None:
    """Put ``target``'s physics in ``source``'s state (qpos, qvel, act, time), independently of the implementation."""
    src, dst = source.unwrapped.physics, target.unwrapped.physics
    with dst.reset_context():
        dst.set_state(src.get_state())
        dst.data.time = src.data.time


def test_schedule_walker_actuator_strength() -> None:
    context = {"gravity": 9.81, "actuator_strength": 1.0}
    schedule = {T: {"actuator_strength": 0.5}}
    env = gym.make("AIB-Walker-v0", context=context, context_schedule=schedule)
    nominal = gym.make("AIB-Walker-v0", context=context)
    weak = gym.make("AIB-Walker-v0", context={"gravity": 9.81, "actuator_strength": 0.5})
    actions = _actions(env)
    env.reset(seed=4)
    nominal.reset(seed=4)
    weak.reset(seed=9)
    for step, action in enumerate(actions):
        if step == T:
            # the state the change finds: the walker of the weaker actuators continues from it
            _copy_dmc_state(env, weak)
            time = env.unwrapped.physics.data.time
        obs, reward, _, _, info = env.step(action)
        obs_n, reward_n, _, _, _ = nominal.step(action)
        if step < T:
            assert info["context"] == context
            np.testing.assert_array_equal(obs, obs_n)
            assert reward == reward_n
        else:
            assert info["context"] == {"gravity": 9.81, "actuator_strength": 0.5}
            obs_w, reward_w, _, _, _ = weak.step(action)
            np.testing.assert_allclose(obs, obs_w, rtol=0, atol=1e-6)
            assert reward == pytest.approx(reward_w, abs=1e-9)
    assert not np.allclose(obs, obs_n)
    # time and the episode's step count go on across the change: the episode still ends at step 1000
    assert env.unwrapped.physics.data.time == pytest.approx(time + (N - T) * 0.025)
    steps = N
    while True:
        _, _, terminated, truncated, info = env.step(actions[0])
        steps += 1
        assert not terminated
        if truncated:
            break
    assert steps == 1000 and info["context"]["actuator_strength"] == 0.5
    _close(env, nominal, weak)


def test_schedule_walker_gym_in_place() -> None:
    context = {"gravity": 9.81, "actuator_strength": 1.0}
    env = gym.make("AIB-WalkerGym-v0", context=context, context_schedule={T: {"gravity": 4.0, "actuator_strength": 1.5}})
    other = gym.make("AIB-WalkerGym-v0", context={"gravity": 4.0, "actuator_strength": 1.5})
    actions = _actions(env)
    env.reset(seed=4)
    other.reset(seed=4)
    for action in actions[:T]:
        env.step(action)
    inner, inner_other = env.unwrapped._inner, other.unwrapped._inner
    inner_other.set_state(inner.data.qpos.copy(), inner.data.qvel.copy())
    for action in actions[T:]:
        obs, reward, _, _, info = env.step(action)
        obs_o, reward_o, _, _, _ = other.step(action)
        assert info["context"] == {"gravity": 4.0, "actuator_strength": 1.5}
        np.testing.assert_allclose(obs, obs_o, rtol=0, atol=1e-5)
        assert reward == pytest.approx(reward_o, abs=1e-6)
    _close(env, other)


def test_schedule_and_inversion_order() -> None:
    # at the same step the schedule applies first, then the inversion; later entries stay inverted
    context = {"mass": 1.0, "action_factor": 1.0}
    schedule = {3: {"mass": 0.8, "action_factor": -1.0}, 6: {"action_factor": 1.0}, 9: {"mass": 1.3}}
    env = gym.make("AIB-DI-v0", context=context, context_schedule=schedule, invert_at=3)
    _, _, contexts = _rollout(env, _actions(env, 12))
    steps = contexts[1:]
    assert steps[:3] == [context] * 3
    assert steps[3:6] == [{"mass": 0.8, "action_factor": 1.0}] * 3
    assert steps[6:9] == [{"mass": 0.8, "action_factor": -1.0}] * 3
    assert steps[9:] == [{"mass": 1.3, "action_factor": -1.0}] * 3
    # a schedule without an inversion sets the values it says
    env = gym.make("AIB-DI-v0", context=context, context_schedule=schedule)
    _, _, contexts = _rollout(env, _actions(env, 12))
    assert [c["action_factor"] for c in contexts[1:]] == [1.0] * 3 + [-1.0] * 3 + [1.0] * 6
    # steps given in any order, numpy integers included
    env = gym.make("AIB-DI-v0", context=context, context_schedule={np.int64(5): {"mass": 0.7}, 2: {"mass": 0.9}})
    assert list(env.unwrapped.context_schedule) == [2, 5]
    _, _, contexts = _rollout(env, _actions(env, 7))
    assert [c["mass"] for c in contexts[1:]] == [1.0, 1.0, 0.9, 0.9, 0.9, 0.7, 0.7]


def test_schedule_ode_k() -> None:
    env = gym.make("AIB-ODE-v0", k=3, context={}, context_schedule={2: {"parameter_2": 1.5}})
    _, _, contexts = _rollout(env, _actions(env, 4))
    assert [c["parameter_2"] for c in contexts] == [0.0, 0.0, 0.0, 1.5, 1.5]
    assert all(c["parameter_0"] == 1.0 and c["parameter_1"] == 0.0 for c in contexts)


# ---------------------------------------------------------------------------------------------------------------------
# episodes: the fault repeats after reset; beyond the episode length it never fires
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("AIB-DI-v0", {"invert_at": T}),
        ("AIB-WalkerGym-v0", {"invert_at": T, "context_schedule": {3: {"gravity": 5.0}}}),
        ("AIB-Walker-v0", {"invert_at": T, "context_schedule": {3: {"actuator_strength": 0.5}}}),
        ("AIB-Cheetah-v0", {"invert_at": T}),
    ],
)
def test_fault_repeats_every_episode(env_id: str, kwargs: dict) -> None:
    context = aib.default_context(env_id)
    env = gym.make(env_id, context=context, **kwargs)
    actions = _actions(env)
    obs_1, rew_1, ctx_1 = _rollout(env, actions, seed=4)
    _, _, ctx_2 = _rollout(env, _actions(env, seed=1), seed=5)  # ends in the faulted context
    obs_3, rew_3, ctx_3 = _rollout(env, actions, seed=4)
    fresh = gym.make(env_id, context=context, **kwargs)
    obs_f, rew_f, ctx_f = _rollout(fresh, actions, seed=4)
    for obs, rew in ((obs_3, rew_3), (obs_f, rew_f)):
        np.testing.assert_array_equal(obs_1, obs)
        np.testing.assert_array_equal(rew_1, rew)
    assert ctx_1 == ctx_2 == ctx_3 == ctx_f  # every episode starts in its own context and has the same faults
    assert ctx_1[T] != ctx_1[T + 1]
    _close(env, fresh)


@pytest.mark.parametrize("invert_at", [100, 10**9])
def test_invert_at_beyond_the_episode_never_fires(invert_at: int) -> None:
    env = gym.make("AIB-DI-v0", context={"mass": 0.9}, invert_at=invert_at)
    nominal = gym.make("AIB-DI-v0", context={"mass": 0.9})
    for seed in (0, 1):  # two whole episodes of T = 100 steps
        env.reset(seed=seed)
        nominal.reset(seed=seed)
        for action in _actions(env, 100, seed=seed):
            obs, reward, _, truncated, info = env.step(action)
            obs_n, reward_n, _, truncated_n, _ = nominal.step(action)
            np.testing.assert_array_equal(obs, obs_n)
            assert reward == reward_n and truncated == truncated_n
            assert info["context"] == {"mass": 0.9, "action_factor": 1.0}
        assert truncated


# ---------------------------------------------------------------------------------------------------------------------
# bad values
# ---------------------------------------------------------------------------------------------------------------------
INVERT_AT_ALLOWED = r"expected None or an integer >= 0 \(the 0-based step of the episode from which the actions are inverted\)"


@pytest.mark.parametrize(
    ("env_id", "kwargs", "match"),
    [
        ("AIB-DI-v0", {"invert_at": -1}, rf"invert_at=-1 is not allowed; {INVERT_AT_ALLOWED}"),
        ("AIB-DI-v0", {"invert_at": 2.5}, rf"invert_at=2.5 is not allowed; {INVERT_AT_ALLOWED}"),
        ("AIB-DI-v0", {"invert_at": True}, rf"invert_at=True is not allowed; {INVERT_AT_ALLOWED}"),
        ("AIB-DI-v0", {"invert_at": "5"}, rf"invert_at='5' is not allowed; {INVERT_AT_ALLOWED}"),
        (
            "AIB-DI-v0",
            {"context_schedule": [(5, {"mass": 1.0})]},
            r"context_schedule=\[\(5, \{'mass': 1.0\}\)\] must be a dict \{step: \{context key: value\}\} or None for "
            r"AIB-DI-v0",
        ),
        (
            "AIB-DI-v0",
            {"context_schedule": {-1: {"mass": 1.0}}},
            r"context_schedule step -1 is not allowed; expected an integer >= 0 \(the 0-based step of the episode",
        ),
        ("AIB-DI-v0", {"context_schedule": {1.5: {"mass": 1.0}}}, r"context_schedule step 1.5 is not allowed"),
        ("AIB-DI-v0", {"context_schedule": {True: {"mass": 1.0}}}, r"context_schedule step True is not allowed"),
        (
            "AIB-DI-v0",
            {"context_schedule": {5: 0.5}},
            r"context_schedule\[5\]=0.5 must be a dict of context values for AIB-DI-v0",
        ),
        (
            "AIB-DI-v0",
            {"context_schedule": {5: {"frction": 1.0}}},
            r"context_schedule\[5\]: context key 'frction' is unknown for AIB-DI-v0; allowed keys: "
            r"\['mass', 'action_factor'\]",
        ),
        (
            "AIB-DI-v0",
            {"context_schedule": {5: {"mass": -1.0}}},
            r"context_schedule\[5\]: context\['mass'\] = -1.0 is not allowed; expected a finite real number > 0",
        ),
        (
            "AIB-DI-v0",
            {"context_schedule": {5: {"action_factor": 0.5}}},
            r"context_schedule\[5\]: context\['action_factor'\] = 0.5 is not allowed; expected one of -1, 1",
        ),
        (
            "AIB-Walker-v0",
            {"context_schedule": {5: {"actuator_strength": "weak"}}},
            r"context_schedule\[5\]: context\['actuator_strength'\] = 'weak' has type str; expected a finite real number",
        ),
        (
            "AIB-Cheetah-v0",
            {"context_schedule": {200: {"length": 0.8}}},
            r"context_schedule\[200\] changes 'length', which cannot change in the middle of an episode of AIB-Cheetah-v0 "
            r"\(it needs a new model, so only a reset can change it\); keys that can: \['action_factor'\]",
        ),
        (
            "AIB-BallInCup-v0",
            {"context_schedule": {3: {"distance": 0.25}}},
            r"context_schedule\[3\] changes 'distance', which cannot change .* keys that can: \['gravity'\]",
        ),
        (
            "AIB-Cartpole-v0",
            {"context_schedule": {3: {"length": 0.6}}},
            r"changes 'length'.* keys that can: \['action_factor'\]",
        ),
        ("AIB-ReacherHardPerm-v0", {"context_schedule": {3: {"length": 0.9}}}, r"keys that can: \['swap'\]"),
    ],
)
def test_bad_values(env_id: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, **kwargs)


def test_mid_episode_keys() -> None:
    expected = {
        "AIB-DI-v0": ("mass", "action_factor"),
        "AIB-ODE-v0": ("parameter_0", "parameter_1"),
        "AIB-Walker-v0": ("gravity", "actuator_strength"),
        "AIB-BallInCup-v0": ("gravity",),
        "AIB-Cheetah-v0": ("action_factor",),
        "AIB-HopperGym-v0": ("gravity", "actuator_strength"),
    }
    for env_id, keys in expected.items():
        env = gym.make(env_id)
        assert env.unwrapped.mid_episode_keys == keys
        env.close()


# ---------------------------------------------------------------------------------------------------------------------
# env checkers and pickling with a fault configured
# ---------------------------------------------------------------------------------------------------------------------
FAULTS = {
    "AIB-DI-v0": {"invert_at": 1, "context_schedule": {2: {"mass": 0.7}}},
    "AIB-DIPerm-v0": {"invert_at": 1},
    "AIB-ODE-v0": {"invert_at": 0, "context_schedule": {1: {"parameter_1": 2.0}}},
    "AIB-Cheetah-v0": {"invert_at": 1},
    "AIB-Walker-v0": {"invert_at": 2, "context_schedule": {1: {"actuator_strength": 0.6}}},
    "AIB-WalkerGym-v0": {"invert_at": 1, "context_schedule": {2: {"gravity": 5.0}}},
}


@pytest.mark.parametrize("env_id", list(FAULTS))
def test_env_checkers_with_faults(env_id: str) -> None:
    env = gym.make(env_id, context=_context(env_id), **FAULTS[env_id])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning (e.g. about determinism) fails the test ...
        warnings.filterwarnings("ignore", message=r".*Box observation space m\w+ value is -?infinity")  # ... but unbounded obs
        gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=True, skip_render_check=True)
    env.close()
    aware = gym.make(env_id, context_aware=True, split="eval_out", **FAULTS[env_id])
    gym_check_env(aware.unwrapped, skip_render_check=True)
    aware.close()


@pytest.mark.parametrize("env_id", list(FAULTS))
def test_pickle_with_faults(env_id: str) -> None:
    env = gym.make(env_id, context=_context(env_id), **FAULTS[env_id])
    actions = _actions(env, 12)
    env.reset(seed=3)
    for action in actions[:4]:  # past the faults: the copy must go on in the faulted context
        env.step(action)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(env))
        assert copy.unwrapped.invert_at == env.unwrapped.invert_at
        assert copy.unwrapped.context_schedule == env.unwrapped.context_schedule
        assert copy.unwrapped.context == env.unwrapped.context
        for action in actions[4:8]:
            obs, reward, _, _, info = env.step(action)
            obs_c, reward_c, _, _, info_c = copy.step(action)
            np.testing.assert_array_equal(obs, obs_c)
            assert reward == reward_c and info["context"] == info_c["context"]
        # and the copy's next episode repeats the faults
        obs_a, rew_a, ctx_a = _rollout(env, actions, seed=6)
        obs_b, rew_b, ctx_b = _rollout(copy, actions, seed=6)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(rew_a, rew_b)
        assert ctx_a == ctx_b
        copy.close()
    env.close()


FAULT_STATE = ("invert_at", "context_schedule", "_signed_inversion", "_episode_step", "_action_sign", "_scheduled_context")


@pytest.mark.parametrize("env_id", ["AIB-DI-v0", "AIB-Cheetah-v0", "AIB-WalkerGym-v0"])
def test_unpickle_snapshot_from_before_faults(env_id: str) -> None:
    """An env pickled before the fault state existed (an in-run checkpoint of a study that spans the change) resumes
    fault-free and steps exactly as the env it was pickled from."""
    env = gym.make(env_id, context=_context(env_id)).unwrapped
    actions = _actions(env, 8)
    env.reset(seed=3)
    for action in actions[:3]:
        env.step(action)
    state = pickle.loads(pickle.dumps(env.__getstate__()))  # a copy: the plain __dict__ shares the physics
    for key in FAULT_STATE:
        del state[key]
    old = type(env).__new__(type(env))
    old.__setstate__(state)
    assert old.invert_at is None and old.context_schedule == {}
    for action in actions[3:]:
        obs, reward, _, _, info = env.step(action)
        obs_o, reward_o, _, _, info_o = old.step(action)
        np.testing.assert_array_equal(obs, obs_o)
        assert reward == reward_o and info["context"] == info_o["context"]
    old.close()
    env.close()
