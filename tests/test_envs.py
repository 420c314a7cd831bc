"""Generic tests of every AIB environment: gymnasium / SB3 API, episode length, context API, inversion,
the ``ActuatorInversion`` wrapper, the VecEnv helpers and the metadata (docs/benchmark.md).

Every test that is parametrised over ``aib.list_envs()`` runs on every id (the 1000-step dm_control and MuJoCo episodes
take about a second each); the expensive extras (SubprocVecEnv, long random-draw statistics) use the cheap DI ids.
"""

from __future__ import annotations

import math
import pickle

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import aib

ENV_IDS = aib.list_envs()

# (obs dim, act dim)
DIMS = {
    "AIB-DI-v0": (4, 2),
    "AIB-DIFriction-v0": (4, 2),
    "AIB-DIPerm-v0": (4, 2),
    "AIB-ODE-v0": (1, 2),
    "AIB-Cartpole-v0": (5, 1),
    "AIB-BallInCup-v0": (8, 2),
    "AIB-Walker-v0": (24, 6),
    "AIB-Cheetah-v0": (17, 6),
    "AIB-ReacherEasy-v0": (6, 2),
    "AIB-ReacherHard-v0": (6, 2),
    "AIB-ReacherHardPerm-v0": (6, 2),
    "AIB-WalkerGym-v0": (17, 6),
    "AIB-HopperGym-v0": (11, 3),
}

# (paper name, class, budget in vector steps, K, T, normalisation bounds, optional extra, in v1)
META = {
    "AIB-DI-v0": ("DI", "non-overlap", 100_000, 24, 100, (0, 100), None, True),
    "AIB-DIFriction-v0": ("DI-Friction", "overlap", 100_000, 24, 100, (0, 100), None, True),
    "AIB-DIPerm-v0": ("DI-Perm", "non-overlap", 100_000, 24, 100, (0, 100), None, False),
    "AIB-ODE-v0": ("ODE", "non-overlap", 100_000, 24, 200, (0, 200), None, True),
    "AIB-Cartpole-v0": ("Cartpole", "non-overlap", 100_000, 128, 1000, (0, 1000), "dmc", True),
    "AIB-BallInCup-v0": ("BallInCup", "overlap", 200_000, 128, 1000, (0, 1000), "dmc", True),
    "AIB-Walker-v0": ("Walker", "overlap", 200_000, 128, 1000, (0, 1000), "dmc", True),
    "AIB-Cheetah-v0": ("Cheetah", "non-overlap", 200_000, 128, 1000, (0, 1000), "dmc", True),
    "AIB-ReacherEasy-v0": ("Reacher(E)", "non-overlap", 200_000, 128, 1000, (0, 1000), "dmc", True),
    "AIB-ReacherHard-v0": ("Reacher(H)", "non-overlap", 200_000, 128, 1000, (0, 1000), "dmc", True),
    "AIB-ReacherHardPerm-v0": ("Reacher(H)-Perm", "non-overlap", 200_000, 128, 1000, (0, 1000), "dmc", False),
    "AIB-WalkerGym-v0": ("WalkerGym", "overlap", 500_000, 128, 1000, None, "mujoco", True),
    "AIB-HopperGym-v0": ("HopperGym", "overlap", 500_000, 128, 1000, None, "mujoco", True),
}

# ids whose physics is cheap to build; the dm_control ids compile a MuJoCo model per instance and context (~0.1 s)
CHEAP_TO_BUILD = [env_id for env_id in ENV_IDS if aib.env_info(env_id).requires != "dmc"]
INVERTIBLE = [env_id for env_id in ENV_IDS if "action_factor" in aib.default_context(env_id)]
SWAPPABLE = [env_id for env_id in ENV_IDS if "swap" in aib.default_context(env_id)]
CHEAP = ["AIB-DI-v0", "AIB-DIFriction-v0", "AIB-DIPerm-v0"]


def _keys(env_id: str) -> list[str]:
    return list(aib.default_context(env_id))


def _actions(env_id: str, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, DIMS[env_id][1])).astype(np.float32)


def _rollout(env: gym.Env, actions: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, _, _ = env.step(action)
        assert not terminated
        observations.append(obs)
        rewards.append(reward)
    return np.array(observations), np.array(rewards)


def _check_info(env: gym.Env, info: dict) -> None:
    unwrapped = env.unwrapped
    assert set(info) >= {"context", "context_id"}
    assert list(info["context"]) == _keys(unwrapped.env_id)
    assert info["context"] == unwrapped.context
    assert info["context_id"] == unwrapped.context_id


def _other_context(env_id: str) -> dict[str, float]:
    """A valid, non-default context (eval_out instance 3)."""
    context = aib.get_contexts(env_id, "eval_out")[3]
    assert context != aib.default_context(env_id)
    return context


# ---------------------------------------------------------------------------------------------------------------------
# API checkers and spaces
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_checkers_and_spaces(env_id: str) -> None:
    # a fixed context, as in the paper's protocol (the checkers' seeded resets then keep one compiled model)
    env = gym.make(env_id, context=_other_context(env_id))
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=True, skip_render_check=True)
    _check_spaces(env_id, env)
    env.close()
    aware = gym.make(env_id, context_aware=True, context=_other_context(env_id))
    gym_check_env(aware.unwrapped, skip_render_check=True)
    aware.close()


@pytest.mark.parametrize("env_id", [*CHEAP_TO_BUILD, "AIB-Cartpole-v0"])
def test_env_checkers_split_drawing(env_id: str) -> None:
    # the plain gym.make(id): every seeded reset of the checkers draws another context of the split (for the
    # dm_control ids each one compiles a model, so one of them stands in for all)
    env = gym.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=True, skip_render_check=True)
    env.close()
    aware = gym.make(env_id, context_aware=True, split="eval_out")
    gym_check_env(aware.unwrapped, skip_render_check=True)
    aware.close()


def _check_spaces(env_id: str, other: gym.Env) -> None:
    obs_dim, act_dim = DIMS[env_id]
    env = gym.make(env_id)
    assert isinstance(env.observation_space, spaces.Box)
    assert env.observation_space.dtype == np.float32
    assert env.observation_space.shape == (obs_dim,)
    assert isinstance(env.action_space, spaces.Box)
    assert env.action_space.dtype == np.float32
    assert env.action_space.shape == (act_dim,)
    np.testing.assert_array_equal(env.action_space.low, -np.ones(act_dim, np.float32))
    np.testing.assert_array_equal(env.action_space.high, np.ones(act_dim, np.float32))
    # the context is hidden by default: the spaces do not depend on it
    assert other.observation_space == env.observation_space and other.action_space == env.action_space
    obs, _ = other.reset(seed=0)
    assert obs.shape == (obs_dim,) and obs.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------------
# episodes
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_full_episode_ends_by_truncation(env_id: str) -> None:
    horizon = aib.env_info(env_id).max_episode_steps
    env = gym.make(env_id, split="eval_out")
    assert env.spec is not None and env.spec.max_episode_steps == horizon
    actions = _actions(env_id, horizon)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    _check_info(env, info)
    assert info["context_id"] == "eval_out/0"
    context = aib.get_contexts(env_id, "eval_out")[0]
    for t in range(horizon):
        obs, reward, terminated, truncated, info = env.step(actions[t])
        assert terminated is False, f"terminated at step {t}"
        assert truncated is (t == horizon - 1), f"truncated={truncated} at step {t}"
        assert type(reward) is float and math.isfinite(reward)
        assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
        assert np.all(np.isfinite(obs))
        assert info["context_id"] == "eval_out/0" and info["context"] == context
    assert env.observation_space.contains(obs)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory(env_id: str) -> None:
    actions = _actions(env_id, 60, seed=1)
    a = gym.make(env_id, split="eval_in")
    b = gym.make(env_id, split="eval_in")
    # seeds 20, 40: round robin gives both context 0 of the split (seed mod 20), the one compiled at construction
    obs_a, rew_a = _rollout(a, actions, seed=20)
    obs_b, rew_b = _rollout(b, actions, seed=20)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    # the same env, reset again with the same seed, repeats itself too
    obs_c, rew_c = _rollout(a, actions, seed=20)
    np.testing.assert_array_equal(obs_a, obs_c)
    np.testing.assert_array_equal(rew_a, rew_c)
    # another seed gives another initial state in the same context
    obs_d, info = a.reset(seed=40)
    assert info["context_id"] == "eval_in/0"
    assert not np.array_equal(obs_a[0], obs_d)


# ---------------------------------------------------------------------------------------------------------------------
# context API
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_info_on_reset_and_step(env_id: str) -> None:
    env = gym.make(env_id)
    _, info = env.reset(seed=0)
    _check_info(env, info)
    assert info["context_id"] == "train/0"
    assert info["context"] == aib.get_contexts(env_id, "train")[0]
    for action in _actions(env_id, 5):
        *_, info = env.step(action)
        _check_info(env, info)
        assert info["context_id"] == "train/0"
    # a fixed context reports "custom"
    env = gym.make(env_id, context={})
    _, info = env.reset(seed=0)
    assert info == {**info, "context": aib.default_context(env_id), "context_id": "custom"}
    *_, info = env.step(env.action_space.sample())
    assert info["context"] == aib.default_context(env_id) and info["context_id"] == "custom"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_context_aware(env_id: str) -> None:
    obs_dim, _ = DIMS[env_id]
    keys = _keys(env_id)
    hidden = gym.make(env_id, split="eval_out")
    aware = gym.make(env_id, split="eval_out", context_aware=True)
    assert hidden.unwrapped.context_aware is False
    assert hidden.observation_space.shape == (obs_dim,)
    assert aware.observation_space.shape == (obs_dim + len(keys),)
    assert aware.observation_space.dtype == np.float32
    np.testing.assert_array_equal(aware.observation_space.low[:obs_dim], hidden.observation_space.low)
    np.testing.assert_array_equal(aware.observation_space.high[:obs_dim], hidden.observation_space.high)
    actions = _actions(env_id, 5)
    for seed in (20, 1):  # two different contexts of the split (round robin: context seed mod 20)
        obs_h, _ = hidden.reset(seed=seed)
        obs_a, info_a = aware.reset(seed=seed)
        assert info_a["context_id"] == f"eval_out/{seed % 20}"
        expected = np.array([info_a["context"][k] for k in keys], dtype=np.float32)
        assert obs_a.shape == (obs_dim + len(keys),) and obs_a.dtype == np.float32
        np.testing.assert_array_equal(obs_a[obs_dim:], expected)
        np.testing.assert_array_equal(obs_a[:obs_dim], obs_h)
        for action in actions:
            obs_h, *_ = hidden.step(action)
            obs_a, *_ = aware.step(action)
            np.testing.assert_array_equal(obs_a[obs_dim:], expected)
            np.testing.assert_array_equal(obs_a[:obs_dim], obs_h)
    # a custom context is appended as given
    fixed = gym.make(env_id, context_aware=True, context=_other_context(env_id))
    obs, _ = fixed.reset(seed=0)
    np.testing.assert_array_equal(obs[obs_dim:], np.array([_other_context(env_id)[k] for k in keys], np.float32))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_fixed_context_persists(env_id: str) -> None:
    key = _keys(env_id)[0]
    value = _other_context(env_id)[key]
    env = gym.make(env_id, context={key: value})
    expected = {**aib.default_context(env_id), key: value}
    assert env.unwrapped.context == expected  # applied before the first reset
    for seed in (0, 1, None, None, 19):
        _, info = env.reset(seed=seed)
        assert info["context"] == expected and info["context_id"] == "custom"
    *_, info = env.step(env.action_space.sample())
    assert info["context"] == expected
    # the same with both keys given
    full = _other_context(env_id)
    env = gym.make(env_id, context=full)
    for seed in (0, None):
        _, info = env.reset(seed=seed)
        assert info["context"] == full and info["context_id"] == "custom"


def _split_for(env_id: str) -> str:
    """One split per id, cycling through the three (the split logic is generic; each id still gets a full check)."""
    return aib.SPLITS[ENV_IDS.index(env_id) % 3]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_split_round_robin(env_id: str) -> None:
    _check_round_robin(env_id, _split_for(env_id))


@pytest.mark.parametrize("split", ["train", "eval_in", "eval_out"])
def test_split_round_robin_di(split: str) -> None:
    _check_round_robin("AIB-DI-v0", split)


def _check_round_robin(env_id: str, split: str) -> None:
    contexts = aib.get_contexts(env_id, split)
    env = gym.make(env_id, split=split, context_selection="round_robin")
    assert env.unwrapped.context == contexts[0]  # usable before the first reset
    ids = []
    for seed in (19, None, 7, None):  # (each new context of a dm_control id compiles a model: keep the list short)
        _, info = env.reset(seed=seed)
        ids.append(info["context_id"])
        index = int(info["context_id"].split("/")[1])
        assert info["context"] == contexts[index]
        *_, info = env.step(env.action_space.sample())
        assert info["context"] == contexts[index]
    assert ids == [f"{split}/{i}" for i in (19, 0, 7, 8)]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_split_random(env_id: str) -> None:
    contexts = aib.get_contexts(env_id, "eval_in")

    env = gym.make(env_id, split="eval_in", context_selection="random")

    def draw(seed: int, n: int = 3) -> list[str]:
        ids = []
        for s in (seed, *[None] * (n - 1)):
            _, info = env.reset(seed=s)
            assert info["context"] == contexts[int(info["context_id"].split("/")[1])]
            assert info["context_id"].startswith("eval_in/")
            ids.append(info["context_id"])
        return ids

    first = draw(3)
    assert len(set(first)) > 1
    # Context values never come from the env's own RNG: the random draw leaves the initial state
    # identical to that of a fixed-context env reset with the same seed.
    obs_drawn, info = env.reset(seed=3)
    assert info["context_id"] == first[0]
    obs_fixed, _ = gym.make(env_id, context=info["context"]).reset(seed=3)
    np.testing.assert_array_equal(obs_drawn, obs_fixed)
    assert draw(3) == first  # reproducible from reset's seed
    assert draw(4, 2) != first[:2]


def test_split_random_covers_split() -> None:
    env = gym.make("AIB-DI-v0", split="eval_out", context_selection="random")
    env.reset(seed=0)
    seen = {env.reset()[1]["context_id"] for _ in range(400)}
    assert seen == {f"eval_out/{i}" for i in range(20)}
    # reseeding restarts the stream
    a = [env.reset(seed=9)[1]["context_id"]] + [env.reset()[1]["context_id"] for _ in range(10)]
    b = [env.reset(seed=9)[1]["context_id"]] + [env.reset()[1]["context_id"] for _ in range(10)]
    assert a == b


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_set_context_persists(env_id: str) -> None:
    env = gym.make(env_id, split="train")
    out = aib.get_contexts(env_id, "eval_out")
    env.unwrapped.set_context(("eval_out", 3))
    for seed in (None, 0, None, 5):
        _, info = env.reset(seed=seed)
        assert info["context"] == out[3] and info["context_id"] == "eval_out/3"
    *_, info = env.step(env.action_space.sample())
    assert info["context_id"] == "eval_out/3"
    # reset(options={"context": ...}) with a dict (missing keys default) persists too
    key = _keys(env_id)[0]
    value = aib.get_contexts(env_id, "eval_in")[5][key]
    expected = {**aib.default_context(env_id), key: value}
    _, info = env.reset(seed=1, options={"context": {key: value}})
    assert info["context"] == expected and info["context_id"] == "custom"
    for seed in (None, 2):
        _, info = env.reset(seed=seed)
        assert info["context"] == expected and info["context_id"] == "custom"
    # ... and with a (split, index) reference
    _, info = env.reset(options={"context": ("eval_out", 3)})
    assert info["context"] == out[3] and info["context_id"] == "eval_out/3"
    _, info = env.reset()
    assert info["context_id"] == "eval_out/3"
    # None goes back to drawing from the env's split
    env.unwrapped.set_context(None)
    _, info = env.reset(seed=20)
    assert info["context_id"] == "train/0" and info["context"] == aib.get_contexts(env_id, "train")[0]
    _, info = env.reset()
    assert info["context_id"] == "train/1"


def test_set_context_errors() -> None:
    env = gym.make("AIB-DI-v0").unwrapped
    with pytest.raises(ValueError, match=r"context index 20 is out of range for split 'eval_out'; expected 0 to 19"):
        env.set_context(("eval_out", 20))
    with pytest.raises(ValueError, match=r"context index -1 is out of range"):
        env.set_context(("train", -1))
    with pytest.raises(ValueError, match=r"split='test' is not allowed"):
        env.set_context(("test", 0))
    with pytest.raises(ValueError, match=r"context reference \('train', 1, 2\) must be a \(split, index\) pair"):
        env.set_context(("train", 1, 2))
    with pytest.raises(ValueError, match=r"context reference \('train', 1.0\) must be a \(split, index\) pair"):
        env.set_context(("train", 1.0))
    with pytest.raises(ValueError, match=r"context='train' must be a dict of context values, a \(split, index\) pair"):
        env.set_context("train")
    with pytest.raises(ValueError, match=r"context key 'bogus' is unknown"):
        env.set_context({"bogus": 1.0})
    with pytest.raises(ValueError, match=r"context\['mass'\] = -1.0 is not allowed"):
        env.reset(options={"context": {"mass": -1.0}})
    # a failed set_context leaves the env as it was
    _, info = env.reset(seed=2)
    assert info["context_id"] == "train/2"


def test_handcrafted_split_reference() -> None:
    env = gym.make("AIB-DI-v0").unwrapped
    env.set_context(("handcrafted_train", 5))
    _, info = env.reset(seed=0)
    assert info["context"] == aib.get_contexts("AIB-DI-v0", "handcrafted_train")[5]
    assert info["context_id"] == "handcrafted_train/5"


def test_ode_k() -> None:
    env = gym.make("AIB-ODE-v0", k=5, split="eval_out", split_seed=3, context_aware=True)
    contexts = aib.get_contexts("AIB-ODE-v0", "eval_out", seed=3, k=5)
    assert env.observation_space.shape == (1 + 5,)
    for seed in (0, 7):
        obs, info = env.reset(seed=seed)
        assert info["context"] == contexts[seed] and list(info["context"]) == [f"parameter_{j}" for j in range(5)]
        np.testing.assert_array_equal(obs[1:], np.array(list(contexts[seed].values()), np.float32))
    env.unwrapped.set_context(("train", 2))
    _, info = env.reset()
    assert info["context"] == aib.get_contexts("AIB-ODE-v0", "train", seed=3, k=5)[2]
    env = gym.make("AIB-ODE-v0", k=5, context={"parameter_4": 2.0})
    _, info = env.reset(seed=0)
    assert info["context"] == {**aib.default_context("AIB-ODE-v0", k=5), "parameter_4": 2.0}
    with pytest.raises(ValueError, match=r"context key 'parameter_5' is unknown"):
        gym.make("AIB-ODE-v0", k=5, context={"parameter_5": 2.0})
    with pytest.raises(ValueError, match=r"k=21 is not allowed"):
        gym.make("AIB-ODE-v0", k=21)


# ---------------------------------------------------------------------------------------------------------------------
# pickling and bad constructor input
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickle(env_id: str) -> None:
    env = gym.make(env_id, split="eval_out")
    env.unwrapped.set_context(("eval_out", 0))  # fixed: later seeded resets keep it (instead of eval_out/seed)
    env.reset(seed=1)
    env.step(env.action_space.sample())
    actions = _actions(env_id, 20)
    obs_a, rew_a = _rollout(env, actions, seed=3)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(env))
        assert copy.spec == env.spec
        assert copy.unwrapped.context == env.unwrapped.context and copy.unwrapped.context_id == "eval_out/0"
        obs_b, rew_b = _rollout(copy, actions, seed=3)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(rew_a, rew_b)
        assert copy.unwrapped.context_id == "eval_out/0"  # the fixed context survived the round trip
        copy.close()


def _bad_kwargs(env_id: str) -> list[tuple[dict, str]]:
    key = _keys(env_id)[0]
    return [
        ({"context": {"bogus": 1.0}}, r"context key 'bogus' is unknown"),
        ({"context": {key: math.nan}}, rf"context\['{key}'\] = nan is not allowed; expected"),
        ({"context": {key: "1.0"}}, rf"context\['{key}'\] = '1.0' has type str; expected"),
        ({"context": {key: True}}, rf"context\['{key}'\] = True has type bool; expected"),
        ({"context": "train"}, r"context='train' must be a dict"),
        ({"split": "test"}, r"split='test' is not allowed; expected one of \('train', 'eval_in', 'eval_out'\)"),
        ({"split": None}, r"split=None is not allowed"),
        ({"context_selection": "first"}, r"context_selection='first' is not allowed; expected one of \('round_robin', "),
        ({"context_aware": "yes"}, r"context_aware='yes' must be True or False"),
        ({"context_aware": 1}, r"context_aware=1 must be True or False"),
    ]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_bad_constructor_input(env_id: str) -> None:
    for kwargs, match in _bad_kwargs(env_id):
        with pytest.raises(ValueError, match=match):
            gym.make(env_id, **kwargs)


def test_bad_binary_context_values() -> None:
    with pytest.raises(ValueError, match=r"context\['action_factor'\] = 0.5 is not allowed; expected one of -1, 1"):
        gym.make("AIB-DI-v0", context={"action_factor": 0.5})
    with pytest.raises(ValueError, match=r"context\['swap'\] = 2.0 is not allowed; expected one of 0, 1"):
        gym.make("AIB-DIPerm-v0", context={"swap": 2})
    with pytest.raises(ValueError, match=r"context\['mass'\] = 0.0 is not allowed; expected a finite real number > 0"):
        gym.make("AIB-DIFriction-v0", context={"mass": 0.0})
    with pytest.raises(ValueError, match=r"goal_threshold=-1 must be a positive number"):
        gym.make("AIB-DI-v0", goal_threshold=-1)


def test_bad_action_shape() -> None:
    env = gym.make("AIB-DI-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action has shape \(3,\); expected \(2,\)"):
        env.step(np.zeros(3, np.float32))


# ---------------------------------------------------------------------------------------------------------------------
# inversion and permutation
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", INVERTIBLE)
def test_inversion_equals_negated_actions(env_id: str) -> None:
    assert env_id in {"AIB-DI-v0", "AIB-Cartpole-v0", "AIB-Cheetah-v0", "AIB-ReacherEasy-v0", "AIB-ReacherHard-v0"}
    key = _keys(env_id)[0]
    value = aib.get_contexts(env_id, "train")[7][key]
    inverted = gym.make(env_id, context={key: value, "action_factor": -1}).unwrapped
    nominal = gym.make(env_id, context={key: value, "action_factor": 1}).unwrapped
    actions = _actions(env_id, 150, seed=2)
    obs_inv, rew_inv = _rollout(inverted, actions, seed=4)
    obs_neg, rew_neg = _rollout(nominal, -actions, seed=4)
    np.testing.assert_array_equal(obs_inv, obs_neg)
    np.testing.assert_array_equal(rew_inv, rew_neg)
    # and the inversion does change the trajectory
    obs_nom, _ = _rollout(nominal, actions, seed=4)
    assert not np.array_equal(obs_inv, obs_nom)


@pytest.mark.parametrize("env_id", SWAPPABLE)
def test_swap_equals_swapped_channels(env_id: str) -> None:
    assert env_id in {"AIB-DIPerm-v0", "AIB-ReacherHardPerm-v0"}
    key = _keys(env_id)[0]
    value = aib.get_contexts(env_id, "train")[7][key]
    swapped = gym.make(env_id, context={key: value, "swap": 1}).unwrapped
    nominal = gym.make(env_id, context={key: value, "swap": 0}).unwrapped
    actions = _actions(env_id, 150, seed=2)
    obs_swap, rew_swap = _rollout(swapped, actions, seed=4)
    obs_perm, rew_perm = _rollout(nominal, actions[:, ::-1].copy(), seed=4)
    np.testing.assert_array_equal(obs_swap, obs_perm)
    np.testing.assert_array_equal(rew_swap, rew_perm)
    obs_nom, _ = _rollout(nominal, actions, seed=4)
    assert not np.array_equal(obs_swap, obs_nom)


@pytest.mark.parametrize("env_id", INVERTIBLE + SWAPPABLE)
def test_actuator_inversion_wrapper_matches_context(env_id: str) -> None:
    key = _keys(env_id)[0]
    value = aib.get_contexts(env_id, "train")[3][key]
    actions = _actions(env_id, 100, seed=5)
    if env_id in INVERTIBLE:
        by_context = gym.make(env_id, context={key: value, "action_factor": -1})
        by_wrapper = aib.ActuatorInversion(gym.make(env_id, context={key: value, "action_factor": 1}), sign=-1)
    else:
        by_context = gym.make(env_id, context={key: value, "swap": 1})
        by_wrapper = aib.ActuatorInversion(gym.make(env_id, context={key: value}), sign=1, permutation=[1, 0])
    obs_c, rew_c = _rollout(by_context, actions, seed=8)
    obs_w, rew_w = _rollout(by_wrapper, actions, seed=8)
    np.testing.assert_array_equal(obs_c, obs_w)
    np.testing.assert_array_equal(rew_c, rew_w)


# ---------------------------------------------------------------------------------------------------------------------
# the generic ActuatorInversion wrapper
# ---------------------------------------------------------------------------------------------------------------------
class _AsymmetricEnv(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Box(0.0, 1.0, (2,), np.float32)


def test_actuator_inversion_semantics() -> None:
    """``env.step(a)`` executes ``sign * a[permutation]``."""
    sign, permutation = np.array([-1.0, 1.0], np.float32), [1, 0]
    wrapped = aib.ActuatorInversion(gym.make("AIB-DI-v0", context={"mass": 0.7}), sign=[-1, 1], permutation=permutation)
    plain = gym.make("AIB-DI-v0", context={"mass": 0.7})
    actions = _actions("AIB-DI-v0", 100, seed=6)
    obs_w, rew_w = _rollout(wrapped, actions, seed=1)
    obs_p, rew_p = _rollout(plain, sign * actions[:, permutation], seed=1)
    np.testing.assert_array_equal(obs_w, obs_p)
    np.testing.assert_array_equal(rew_w, rew_p)
    assert wrapped.action_space == plain.action_space
    # the default is a full inversion
    default = aib.ActuatorInversion(gym.make("AIB-Cartpole-v0" if "AIB-Cartpole-v0" in ENV_IDS else "AIB-DI-v0"))
    assert np.all(default.sign == -1) and default.permutation.tolist() == list(range(default.action_space.shape[0]))


def test_actuator_inversion_errors() -> None:
    with pytest.raises(TypeError, match=r"ActuatorInversion needs a Box action space, got Discrete\(2\)"):
        aib.ActuatorInversion(gym.make("CartPole-v1"))
    di = gym.make("AIB-DI-v0")
    for sign in (0.5, 0, 2, [1, -1, 1], [1, 0], [[1, -1]]):
        with pytest.raises(ValueError, match=r"sign=.* must be -1, \+1 or one of them per action channel \(shape \(2,\)\)"):
            aib.ActuatorInversion(di, sign=sign)
    for permutation in ([0, 0], [0, 1, 2], [1], [1, 2]):
        with pytest.raises(ValueError, match=r"permutation=.* must be a permutation of range\(2\)"):
            aib.ActuatorInversion(di, permutation=permutation)
    with pytest.raises(ValueError, match=r"symmetric around 0"):
        aib.ActuatorInversion(_AsymmetricEnv())


def test_actuator_inversion_recreated_by_checker() -> None:
    wrapped = aib.ActuatorInversion(gym.make("AIB-DI-v0", context={"mass": 0.6}), sign=[-1, 1], permutation=[1, 0])
    spec = wrapped.spec
    assert spec is not None and spec.additional_wrappers[-1].name == "ActuatorInversion"
    assert spec.additional_wrappers[-1].kwargs == {"sign": [-1, 1], "permutation": [1, 0]}
    with pytest.warns(UserWarning, match="different from the unwrapped version"):
        gym_check_env(wrapped, skip_render_check=True)  # re-creates the stack from env.spec for its close check
    remade = spec.make()
    assert isinstance(remade, aib.ActuatorInversion)
    np.testing.assert_array_equal(remade.sign, wrapped.sign)
    np.testing.assert_array_equal(remade.permutation, wrapped.permutation)
    assert remade.unwrapped.context == {"mass": 0.6, "action_factor": 1.0}
    actions = _actions("AIB-DI-v0", 50)
    np.testing.assert_array_equal(_rollout(remade, actions, 0)[0], _rollout(wrapped, actions, 0)[0])
    sb3_check_env(wrapped, warn=True, skip_render_check=True)


# ---------------------------------------------------------------------------------------------------------------------
# VecEnv helpers: sub-env i runs context i of the split
# ---------------------------------------------------------------------------------------------------------------------
def _check_assignment(venv, env_id: str, split: str, n_envs: int, **kwargs) -> None:
    contexts = aib.get_contexts(env_id, split, **kwargs)
    expected_ids = [f"{split}/{i % 20}" for i in range(n_envs)]
    expected = [contexts[i % 20] for i in range(n_envs)]
    venv.reset()
    assert venv.get_attr("context_id") == expected_ids
    assert venv.get_attr("context") == expected
    assert [info["context"] for info in venv.reset_infos] == expected
    assert [info["context_id"] for info in venv.reset_infos] == expected_ids
    actions = np.stack([venv.action_space.sample() for _ in range(n_envs)])
    _, _, _, infos = venv.step(actions)
    assert [info["context"] for info in infos] == expected
    # a second reset keeps the assignment
    venv.reset()
    assert venv.get_attr("context_id") == expected_ids


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_env(env_id: str) -> None:
    # 20 sub-envs: one per context of the split. The dm_control ids compile one MuJoCo model per sub-env and context
    # (~0.1 s each), so they use 3 sub-envs (contexts 0..2): the assignment itself is generic and is checked with 20
    # and 25 sub-envs on the other ids.
    n_envs = 3 if aib.env_info(env_id).requires == "dmc" else 20
    split = _split_for(env_id)
    venv = aib.make_vec_env(env_id, split, n_envs=n_envs, seed=0)
    assert isinstance(venv, aib.AssignContexts) and isinstance(venv.venv, DummyVecEnv)
    assert venv.num_envs == n_envs
    _check_assignment(venv, env_id, split, n_envs)
    venv.close()


@pytest.mark.parametrize("split", ["train", "eval_in", "eval_out"])
def test_make_vec_env_di_full_episode(split: str) -> None:
    """Sub-env i keeps context i through SB3's automatic reset at the end of an episode."""
    venv = aib.make_vec_env("AIB-DI-v0", split, n_envs=25, seed=3)
    _check_assignment(venv, "AIB-DI-v0", split, 25)
    venv.reset()
    for t in range(100):
        _, _, dones, infos = venv.step(np.stack([venv.action_space.sample() for _ in range(25)]))
        assert dones.all() == (t == 99) and dones.any() == (t == 99)
    assert all(info["TimeLimit.truncated"] for info in infos)
    assert [info["context_id"] for info in venv.reset_infos] == [f"{split}/{i % 20}" for i in range(25)]
    venv.close()


def test_make_vec_env_seed_reproducible() -> None:
    def first_obs(seed: int) -> np.ndarray:
        venv = aib.make_vec_env("AIB-DIPerm-v0", "eval_out", n_envs=20, seed=seed)
        obs = venv.reset()
        venv.close()
        return obs

    np.testing.assert_array_equal(first_obs(5), first_obs(5))
    assert not np.array_equal(first_obs(5), first_obs(6))


def test_make_vec_env_kwargs() -> None:
    venv = aib.make_vec_env("AIB-DI-v0", "eval_in", n_envs=20, env_kwargs={"context_aware": True})
    obs = venv.reset()
    assert obs.shape == (20, 6)
    contexts = aib.get_contexts("AIB-DI-v0", "eval_in")
    np.testing.assert_array_equal(obs[:, 4:], np.array([list(c.values()) for c in contexts], np.float32))
    venv.close()
    for key in ("split", "context"):
        with pytest.raises(ValueError, match=rf"env_kwargs\['{key}'\] is set by aib.make_vec_env"):
            aib.make_vec_env("AIB-DI-v0", "train", env_kwargs={key: "train" if key == "split" else {}})
    with pytest.raises(ValueError, match=r"split='test' is not allowed"):
        aib.make_vec_env("AIB-DI-v0", "test")


def test_make_vec_env_ode_k() -> None:
    venv = aib.make_vec_env("AIB-ODE-v0", "eval_out", n_envs=20, env_kwargs={"k": 5, "split_seed": 2})
    _check_assignment(venv, "AIB-ODE-v0", "eval_out", 20, k=5, seed=2)
    venv.close()


def test_make_vec_env_subproc() -> None:
    venv = aib.make_vec_env(
        "AIB-DI-v0", "eval_out", n_envs=20, seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"}
    )
    assert isinstance(venv.venv, SubprocVecEnv)
    _check_assignment(venv, "AIB-DI-v0", "eval_out", 20)
    venv.close()


@pytest.mark.parametrize("env_id", CHEAP)
def test_assign_contexts(env_id: str) -> None:
    # rl-zoo3 style: every sub-env built with the same kwargs, then the wrapper assigns context i to sub-env i
    venv = aib.AssignContexts(sb3_make_vec_env(env_id, n_envs=22, env_kwargs={"split": "eval_in"}))
    assert venv.splits == ["eval_in"] * 22
    _check_assignment(venv, env_id, "eval_in", 22)
    venv.close()
    # an explicit split wins over the env kwarg
    venv = aib.AssignContexts(sb3_make_vec_env(env_id, n_envs=20), split="eval_out")
    _check_assignment(venv, env_id, "eval_out", 20)
    venv.close()


def test_assign_contexts_subproc_and_errors() -> None:
    base = sb3_make_vec_env("AIB-DIPerm-v0", n_envs=4, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"})
    venv = aib.AssignContexts(base, split="eval_in")
    _check_assignment(venv, "AIB-DIPerm-v0", "eval_in", 4)
    venv.close()
    with pytest.raises(ValueError, match=r"split='test' is not allowed"):
        aib.AssignContexts(sb3_make_vec_env("AIB-DI-v0", n_envs=1), split="test")


# ---------------------------------------------------------------------------------------------------------------------
# metadata and registration
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_info(env_id: str) -> None:
    name, env_class, budget, history_len, horizon, bounds, requires, in_v1 = META[env_id]
    info = aib.env_info(env_id)
    assert info.env_id == env_id and info.name == name and info.display_name == name
    assert info.env_class == env_class
    assert info.budget == budget
    assert info.history_len == history_len
    assert info.max_episode_steps == horizon
    assert info.return_bounds == bounds
    assert info.requires == requires
    assert info.in_v1 is in_v1
    assert info.env_kwargs == {}
    assert gym.spec(env_id).max_episode_steps == horizon
    assert gym.spec(env_id).entry_point == info.entry_point
    module = {None: "aib.toy.", "dmc": "aib.dmc.", "mujoco": "aib.mujoco."}[requires]
    assert info.entry_point.startswith(module)
    env = gym.make(env_id)
    assert type(env.unwrapped).__name__ == info.entry_point.split(":")[1]
    assert env.unwrapped.env_id == env_id


def test_list_envs_and_suites() -> None:
    assert ENV_IDS == list(META)
    assert len(ENV_IDS) == 13
    v1 = aib.list_envs("AIB-v1")
    assert len(v1) == 11
    assert v1 == [env_id for env_id in ENV_IDS if env_id not in ("AIB-DIPerm-v0", "AIB-ReacherHardPerm-v0")]
    v2 = aib.SUITES["AIB-v2"]
    assert len(v2) == 14
    assert [info.env_id for info in v2] == [*ENV_IDS, "AIB-ODE-v0"]
    ode_k = v2[-1]
    assert ode_k.name == "ODE-k5" and ode_k.env_kwargs == {"k": 5} and ode_k.in_v1 is False
    assert (ode_k.budget, ode_k.history_len, ode_k.max_episode_steps) == (100_000, 24, 200)
    assert aib.list_envs("AIB-v2") == [*ENV_IDS, "AIB-ODE-v0"]
    overlap = {i.name for i in aib.SUITES["AIB-v1"] if i.env_class == "overlap"}
    assert overlap == {"DI-Friction", "BallInCup", "Walker", "WalkerGym", "HopperGym"}
    with pytest.raises(ValueError, match=r"suite='AIB-v3' is unknown; expected one of \['AIB-v1', 'AIB-v2'\]"):
        aib.list_envs("AIB-v3")


def test_registry() -> None:
    from gymnasium.envs.registration import registry

    for env_id in ENV_IDS:
        assert env_id in registry
    aib.register_envs()  # idempotent
    assert sum(env_id.startswith("AIB-") for env_id in registry) == 13


def test_unsupported_render_mode() -> None:
    from aib.toy.double_integrator import DoubleIntegratorEnv

    # TypeError, so that SB3's make_vec_env (which tries render_mode="rgb_array" first) falls back to no render mode
    with pytest.raises(TypeError, match=r"render_mode='human' is not supported; expected one of \['rgb_array'\]"):
        DoubleIntegratorEnv(render_mode="human")
    venv = sb3_make_vec_env("AIB-DI-v0", n_envs=1)
    assert venv.get_attr("render_mode") == ["rgb_array"]  # SB3 asks for rgb_array, which every AIB env supports
    venv.reset()
    assert venv.render().shape[-1] == 3
    venv.close()


@pytest.mark.parametrize("env_id", ["AIB-DI-v0", "AIB-ODE-v0"])
def test_toy_rgb_array_render(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    for _ in range(20):
        env.step(np.ones(env.action_space.shape, dtype=np.float32))
    assert first.dtype == np.uint8 and first.ndim == 3
    assert not np.array_equal(first, env.render())  # the point moved
