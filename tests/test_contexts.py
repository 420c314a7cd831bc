"""Context variables, validation and the named splits of AIB (docs/benchmark.md).

The split tables below are transcribed from the paper (values in sub-env order 0..19). They are written out
here, not recomputed, so that any change of the split construction shows up as a test failure.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

import aib
from aib.contexts import context_variables

# ---------------------------------------------------------------------------------------------------------------------
# the paper's split tables
# ---------------------------------------------------------------------------------------------------------------------
# The binary column is the same in every split of every continuous x binary env (docs/benchmark.md): 11 inverted, 9 nominal.
ACTION_FACTOR = [-1, 1, -1, 1, -1, -1, 1, -1, 1, -1, -1, 1, -1, 1, -1, -1, 1, -1, 1, 1]
# DI-Perm / ReacherHardPerm (DESIGN CHOICE): 0 wherever action_factor is -1, 1 wherever it is +1.
SWAP = [0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 1]

DI_MASS = {
    "train": [0.5, 0.5408, 0.602, 0.6429, 0.7041, 0.7653, 0.8061, 0.8673, 0.9082, 0.9694, 1.0306, 1.0714, 1.1327, 1.1735,
              1.2347, 1.2959, 1.3367, 1.398, 1.4388, 1.5],
    "eval_in": [0.51, 0.55, 0.61, 0.65, 0.71, 0.77, 0.81, 0.87, 0.91, 0.97, 1.03, 1.07, 1.13, 1.17, 1.23, 1.29, 1.33, 1.39,
                1.43, 1.49],
    "eval_out": [0.1, 0.1325, 0.1813, 0.2138, 0.2625, 0.3113, 0.3438, 0.3925, 0.425, 0.4738, 1.5304, 1.5712, 1.6325, 1.6733,
                 1.7346, 1.7958, 1.8367, 1.8979, 1.9388, 2.0],
}  # fmt: skip

TABLE_DI = {(split, "mass"): DI_MASS[split] for split in DI_MASS} | {
    (split, "action_factor"): ACTION_FACTOR for split in DI_MASS
}
TABLE_DI_PERM = {(split, "mass"): DI_MASS[split] for split in DI_MASS} | {(split, "swap"): SWAP for split in DI_MASS}

TABLE_DI_FRICTION = {
    ("train", "mass"): [0.5, 0.5408, 0.602, 0.6429, 0.7041, 0.7653, 0.8061, 0.8673, 0.9286, 0.9694, 1.0306, 1.0714, 1.1327,
                        1.1939, 1.2347, 1.2959, 1.3571, 1.398, 1.4592, 1.5],
    ("train", "friction"): [0.5, 1.1327, 0.7653, 1.398, 1.0306, 0.6429, 1.2959, 0.9082, 0.5408, 1.1735, 0.8061, 1.4388,
                            1.0714, 0.6837, 1.3367, 0.949, 0.5816, 1.2143, 0.8469, 1.5],
    ("eval_in", "mass"): [0.51, 0.55, 0.61, 0.65, 0.71, 0.77, 0.81, 0.87, 0.93, 0.97, 1.03, 1.07, 1.13, 1.19, 1.23, 1.29,
                          1.35, 1.39, 1.45, 1.49],
    ("eval_in", "friction"): [0.51, 1.13, 0.77, 1.39, 1.03, 0.65, 1.29, 0.91, 0.55, 1.17, 0.81, 1.43, 1.07, 0.69, 1.33,
                              0.95, 0.59, 1.21, 0.85, 1.49],
    ("eval_out", "mass"): [0.1, 0.1325, 0.1813, 0.2138, 0.2625, 0.3113, 0.3438, 0.3925, 0.4412, 0.4738, 1.5304, 1.5712,
                           1.6325, 1.6938, 1.7346, 1.7958, 1.8571, 1.8979, 1.9592, 2.0],
    ("eval_out", "friction"): [0.1, 1.6325, 0.3113, 1.8979, 1.5304, 0.2138, 1.7958, 0.425, 0.1325, 1.6733, 0.3438, 1.9388,
                               1.5712, 0.2462, 1.8367, 0.4575, 0.165, 1.7142, 0.3762, 2.0],
}  # fmt: skip

TABLE_ODE = {
    ("train", "parameter_0"): [-5.0, -4.5918, -3.9796, -3.5714, -2.9592, -2.3469, -1.9388, -1.3265, -0.7143, -0.3061,
                               0.3061, 0.7143, 1.3265, 1.9388, 2.3469, 2.9592, 3.5714, 3.9796, 4.5918, 5.0],
    ("train", "parameter_1"): [-5.0, 1.3265, -2.3469, 3.9796, 0.3061, -3.5714, 2.9592, -0.9184, -4.5918, 1.7347, -1.9388,
                               4.3878, 0.7143, -3.1633, 3.3673, -0.5102, -4.1837, 2.1429, -1.5306, 5.0],
    ("eval_in", "parameter_0"): [-4.9, -4.5, -3.9, -3.5, -2.9, -2.3, -1.9, -1.3, -0.7, -0.3, 0.3, 0.7, 1.3, 1.9, 2.3, 2.9,
                                 3.5, 3.9, 4.5, 4.9],
    ("eval_in", "parameter_1"): [-4.9, 1.3, -2.3, 3.9, 0.3, -3.5, 2.9, -0.9, -4.5, 1.7, -1.9, 4.3, 0.7, -3.1, 3.3, -0.5,
                                 -4.1, 2.1, -1.5, 4.9],
    ("eval_out", "parameter_0"): [-10.0, -9.5917, -8.9792, -8.5708, -7.9583, -7.3458, -6.9375, -6.325, -5.7125, -5.3042,
                                  5.3042, 5.7125, 6.325, 6.9375, 7.3458, 7.9583, 8.5708, 8.9792, 9.5917, 10.0],
    ("eval_out", "parameter_1"): [-10.0, 6.325, -7.3458, 8.9792, 5.3042, -8.5708, 7.9583, -5.9167, -9.5917, 6.7333,
                                  -6.9375, 9.3875, 5.7125, -8.1625, 8.3667, -5.5083, -9.1833, 7.1417, -6.5292, 10.0],
}  # fmt: skip

TABLE_CARTPOLE = {
    ("train", "length"): [0.3, 0.3224, 0.3561, 0.3786, 0.4122, 0.4459, 0.4684, 0.502, 0.5245, 0.5582, 0.5918, 0.6143,
                          0.648, 0.6704, 0.7041, 0.7378, 0.7602, 0.7939, 0.8163, 0.85],
    ("train", "action_factor"): ACTION_FACTOR,
    ("eval_in", "length"): [0.3055, 0.3275, 0.3605, 0.3825, 0.4155, 0.4485, 0.4705, 0.5035, 0.5255, 0.5585, 0.5915, 0.6135,
                            0.6465, 0.6685, 0.7015, 0.7345, 0.7565, 0.7895, 0.8115, 0.8445],
    ("eval_in", "action_factor"): ACTION_FACTOR,
    ("eval_out", "length"): [0.1, 0.1162, 0.1405, 0.1567, 0.181, 0.2054, 0.2216, 0.2459, 0.2621, 0.2864, 0.9032, 0.9986,
                             1.1416, 1.237, 1.3801, 1.5231, 1.6185, 1.7616, 1.8569, 2.0],
    ("eval_out", "action_factor"): ACTION_FACTOR,
}  # fmt: skip

TABLE_BALL_IN_CUP = {
    ("train", "gravity"): [8.0, 8.1633, 8.4082, 8.5714, 8.8163, 9.0612, 9.2245, 9.4694, 9.7143, 9.8776, 10.1224, 10.2857,
                           10.5306, 10.7755, 10.9388, 11.1837, 11.4286, 11.5918, 11.8367, 12.0],
    ("train", "distance"): [0.24, 0.3159, 0.2718, 0.3478, 0.3037, 0.2571, 0.3355, 0.289, 0.2449, 0.3208, 0.2767, 0.3527,
                            0.3086, 0.262, 0.3404, 0.2939, 0.2498, 0.3257, 0.2816, 0.36],
    ("eval_in", "gravity"): [8.04, 8.2, 8.44, 8.6, 8.84, 9.08, 9.24, 9.48, 9.72, 9.88, 10.12, 10.28, 10.52, 10.76, 10.92,
                             11.16, 11.4, 11.56, 11.8, 11.96],
    ("eval_in", "distance"): [0.2412, 0.3156, 0.2724, 0.3468, 0.3036, 0.258, 0.3348, 0.2892, 0.246, 0.3204, 0.2772,
                              0.3516, 0.3084, 0.2628, 0.3396, 0.294, 0.2508, 0.3252, 0.282, 0.3588],
    ("eval_out", "gravity"): [1.0, 1.58, 2.45, 3.03, 3.9, 4.77, 5.35, 6.22, 7.09, 7.67, 12.3717, 13.035, 14.03, 15.025,
                              15.6883, 16.6833, 17.6783, 18.3417, 19.3367, 20.0],
    ("eval_out", "distance"): [0.1, 0.3959, 0.1752, 0.4711, 0.367, 0.1405, 0.4422, 0.2157, 0.1116, 0.4075, 0.1867, 0.4826,
                               0.3785, 0.152, 0.4537, 0.2272, 0.1231, 0.419, 0.1983, 0.5],
}  # fmt: skip

TABLE_WALKER = {
    ("train", "gravity"): [4.91, 5.31, 5.91, 6.31, 6.91, 7.51, 7.91, 8.51, 9.11, 9.51, 10.11, 10.51, 11.11, 11.71, 12.11,
                           12.71, 13.31, 13.71, 14.31, 14.71],
    ("train", "actuator_strength"): [0.5, 1.1327, 0.7653, 1.398, 1.0306, 0.6429, 1.2959, 0.9082, 0.5408, 1.1735, 0.8061,
                                     1.4388, 1.0714, 0.6837, 1.3367, 0.949, 0.5816, 1.2143, 0.8469, 1.5],
    ("eval_in", "gravity"): [5.008, 5.4, 5.988, 6.38, 6.968, 7.556, 7.948, 8.536, 9.124, 9.516, 10.104, 10.496, 11.084,
                             11.672, 12.064, 12.652, 13.24, 13.632, 14.22, 14.612],
    ("eval_in", "actuator_strength"): [0.51, 1.13, 0.77, 1.39, 1.03, 0.65, 1.29, 0.91, 0.55, 1.17, 0.81, 1.43, 1.07, 0.69,
                                       1.33, 0.95, 0.59, 1.21, 0.85, 1.49],
    ("eval_out", "gravity"): [0.98, 1.2993, 1.7783, 2.0977, 2.5767, 3.0557, 3.375, 3.854, 4.333, 4.6523, 15.0085, 15.4095,
                              16.011, 16.6125, 17.0135, 17.615, 18.2165, 18.6175, 19.219, 19.62],
    ("eval_out", "actuator_strength"): [0.1, 1.6325, 0.3113, 1.8979, 1.5304, 0.2138, 1.7958, 0.425, 0.1325, 1.6733, 0.3438,
                                        1.9388, 1.5712, 0.2462, 1.8367, 0.4575, 0.165, 1.7142, 0.3762, 2.0],
}  # fmt: skip

MORPH_LENGTH = {
    "train": [0.8, 0.8163, 0.8408, 0.8571, 0.8816, 0.9061, 0.9224, 0.9469, 0.9633, 0.9878, 1.0122, 1.0286, 1.0531, 1.0694,
              1.0939, 1.1184, 1.1347, 1.1592, 1.1755, 1.2],
    "eval_in": [0.804, 0.82, 0.844, 0.86, 0.884, 0.908, 0.924, 0.948, 0.964, 0.988, 1.012, 1.028, 1.052, 1.068, 1.092, 1.116,
                1.132, 1.156, 1.172, 1.196],
    "eval_out": [0.4, 0.433, 0.4825, 0.5155, 0.565, 0.6145, 0.6475, 0.697, 0.73, 0.7795, 1.2205, 1.2535, 1.303, 1.336,
                 1.3855, 1.435, 1.468, 1.5175, 1.5505, 1.6],
}  # fmt: skip
TABLE_MORPH = {(split, "length"): MORPH_LENGTH[split] for split in MORPH_LENGTH} | {
    (split, "action_factor"): ACTION_FACTOR for split in MORPH_LENGTH
}
TABLE_MORPH_PERM = {(split, "length"): MORPH_LENGTH[split] for split in MORPH_LENGTH} | {
    (split, "swap"): SWAP for split in MORPH_LENGTH
}

# env id -> (variable order of its context table, table)
APPENDIX_A = {
    "AIB-DI-v0": (("mass", "action_factor"), TABLE_DI),
    "AIB-DIFriction-v0": (("mass", "friction"), TABLE_DI_FRICTION),
    "AIB-DIPerm-v0": (("mass", "swap"), TABLE_DI_PERM),
    "AIB-ODE-v0": (("parameter_0", "parameter_1"), TABLE_ODE),
    "AIB-Cartpole-v0": (("length", "action_factor"), TABLE_CARTPOLE),
    "AIB-BallInCup-v0": (("gravity", "distance"), TABLE_BALL_IN_CUP),
    "AIB-Walker-v0": (("gravity", "actuator_strength"), TABLE_WALKER),
    "AIB-Cheetah-v0": (("length", "action_factor"), TABLE_MORPH),
    "AIB-ReacherEasy-v0": (("length", "action_factor"), TABLE_MORPH),
    "AIB-ReacherHard-v0": (("length", "action_factor"), TABLE_MORPH),
    "AIB-ReacherHardPerm-v0": (("length", "swap"), TABLE_MORPH_PERM),
    "AIB-WalkerGym-v0": (("gravity", "actuator_strength"), TABLE_WALKER),
    "AIB-HopperGym-v0": (("gravity", "actuator_strength"), TABLE_WALKER),
}

# the grid construction (docs/benchmark.md)
PICKS_2500 = [0, 131, 263, 394, 526, 657, 789, 920, 1052, 1183, 1315, 1446, 1578, 1709, 1841, 1972, 2104, 2235, 2367, 2499]
PICKS_100 = [0, 5, 10, 15, 20, 26, 31, 36, 41, 46, 52, 57, 62, 67, 72, 78, 83, 88, 93, 99]

SPLITS = ("train", "eval_in", "eval_out")


def test_appendix_a_covers_every_env() -> None:
    assert sorted(APPENDIX_A) == sorted(aib.list_envs())
    assert aib.SPLITS == SPLITS


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("env_id", list(APPENDIX_A))
def test_appendix_a(env_id: str, split: str) -> None:
    keys, table = APPENDIX_A[env_id]
    contexts = aib.get_contexts(env_id, split)
    assert len(contexts) == 20
    for context in contexts:
        assert tuple(context) == keys  # the variables in context-table order
        assert all(type(v) is float for v in context.values())
    for key in keys:
        # exact equality: 4-decimal np.round values, as the reference produces them
        assert [c[key] for c in contexts] == [float(v) for v in table[(split, key)]], (env_id, split, key)
    # splits() returns the same lists
    assert aib.splits(env_id)[split] == contexts


@pytest.mark.parametrize("split", SPLITS)
def test_ode_k2_is_ode(split: str) -> None:
    assert aib.get_contexts("AIB-ODE-v0", split, k=2) == aib.get_contexts("AIB-ODE-v0", split)
    # the <= 2-variable construction does not read the seed
    assert aib.get_contexts("AIB-ODE-v0", split, seed=123) == aib.get_contexts("AIB-ODE-v0", split)


def test_binary_pattern_counts() -> None:
    # 11 inverted / 9 nominal; 11 unswapped / 9 swapped (docs/benchmark.md)
    assert ACTION_FACTOR.count(-1) == 11 and ACTION_FACTOR.count(1) == 9
    assert SWAP.count(0) == 11 and SWAP.count(1) == 9


def test_di_eval_out_three_decimals() -> None:
    # the DI eval-out masses rounded to 3 decimals
    masses = [round(c["mass"], 3) for c in aib.get_contexts("AIB-DI-v0", "eval_out")]
    assert masses == [0.1, 0.133, 0.181, 0.214, 0.263, 0.311, 0.344, 0.393, 0.425, 0.474,
                      1.53, 1.571, 1.633, 1.673, 1.735, 1.796, 1.837, 1.898, 1.939, 2.0]  # fmt: skip


def test_pick_indices_formula() -> None:
    assert np.linspace(0, 2499, 20, dtype=int).tolist() == PICKS_2500
    assert np.linspace(0, 99, 20, dtype=int).tolist() == PICKS_100


def _mesh(env_id: str, split: str, k: int = 2) -> list[tuple[float, ...]]:
    return sorted(itertools.product(*(var.grid(split) for var in context_variables(env_id, k))))


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("env_id", list(APPENDIX_A))
def test_pick_indices(env_id: str, split: str) -> None:
    """Instance i is mesh[PICKS[i]] of the sorted Cartesian product (docs/benchmark.md)."""
    variables = context_variables(env_id)
    mesh = _mesh(env_id, split)
    binary = any(var.is_binary for var in variables)
    assert len(mesh) == (100 if binary else 2500)
    picks = PICKS_100 if binary else PICKS_2500
    contexts = aib.get_contexts(env_id, split)
    assert [tuple(c.values()) for c in contexts] == [mesh[i] for i in picks]
    if not binary:
        # context-1 grid index idx // 50, context-2 grid index idx % 50
        grids = [var.grid(split) for var in variables]
        assert all(len(g) == 50 for g in grids)
        for context, idx in zip(contexts, picks, strict=True):
            assert grids[0].index(context[variables[0].name]) == idx // 50
            assert grids[1].index(context[variables[1].name]) == idx % 50


def test_grids() -> None:
    (mass, _) = context_variables("AIB-DI-v0")
    train, eval_in, eval_out = (mass.grid(s) for s in SPLITS)
    assert len(train) == len(eval_in) == len(eval_out) == 50
    assert train[0] == 0.5 and train[-1] == 1.5
    assert eval_in[0] == 0.51 and eval_in[-1] == 1.49
    assert eval_out[0] == 0.1 and eval_out[24] == 0.49 and eval_out[25] == 1.51 and eval_out[-1] == 2.0
    assert not set(eval_in) & set(train)
    assert all(v < 0.5 or v > 1.5 for v in eval_out)


def test_ode_k1_single_variable() -> None:
    # one continuous variable: 50 combinations, picked at floor(linspace(0, 49, 20))
    grid = context_variables("AIB-ODE-v0", k=1)[0].grid("train")
    contexts = aib.get_contexts("AIB-ODE-v0", "train", k=1)
    assert [c["parameter_0"] for c in contexts] == [grid[i] for i in np.linspace(0, 49, 20, dtype=int)]


# ---------------------------------------------------------------------------------------------------------------------
# ODE-k, k > 2: random construction (docs/benchmark.md)
# ---------------------------------------------------------------------------------------------------------------------
def _reference_random_splits(k: int, seed: int) -> dict[str, list[tuple[float, ...]]]:
    """The random split construction written out: one legacy RandomState stream, train then eval_in then eval_out."""
    variables = context_variables("AIB-ODE-v0", k)
    rng = np.random.RandomState(seed)
    out = {}
    for split in SPLITS:
        grids = [var.grid(split) for var in variables]
        out[split] = sorted(tuple(float(rng.choice(g)) for g in grids) for _ in range(20))
    return out


@pytest.mark.parametrize("split", SPLITS)
def test_ode_k5_random_splits(split: str) -> None:
    k = 5
    keys = [f"parameter_{j}" for j in range(k)]
    a = aib.get_contexts("AIB-ODE-v0", split, seed=7, k=k)
    assert len(a) == 20 and all(list(c) == keys for c in a)
    # reproducible for a fixed seed
    assert aib.get_contexts("AIB-ODE-v0", split, seed=7, k=k) == a
    # another seed gives another split
    assert aib.get_contexts("AIB-ODE-v0", split, seed=8, k=k) != a
    # default seed is 0
    assert aib.get_contexts("AIB-ODE-v0", split, k=k) == aib.get_contexts("AIB-ODE-v0", split, seed=0, k=k)
    # sorted lexicographically
    tuples = [tuple(c.values()) for c in a]
    assert tuples == sorted(tuples)
    # values from the grids
    for var in context_variables("AIB-ODE-v0", k):
        grid = set(var.grid(split))
        assert all(c[var.name] in grid for c in a)
    if split == "eval_out":
        assert all(5.0 < abs(v) <= 10.0 for c in a for v in c.values())
    else:
        assert all(-5.0 <= v <= 5.0 for c in a for v in c.values())
    # the reference's draw order
    assert tuples == _reference_random_splits(k, 7)[split]


def test_ode_k_bad() -> None:
    for k in (0, 21, True, 2.5, "5"):
        with pytest.raises(ValueError, match=r"k=.* is not allowed for AIB-ODE-v0; expected an integer from 1 to 20"):
            aib.get_contexts("AIB-ODE-v0", "train", k=k)


# ---------------------------------------------------------------------------------------------------------------------
# defaults, handcrafted split, ContextSplit
# ---------------------------------------------------------------------------------------------------------------------
def test_default_contexts() -> None:
    assert aib.default_context("AIB-DI-v0") == {"mass": 1.0, "action_factor": 1.0}
    assert aib.default_context("AIB-DIFriction-v0") == {"mass": 1.0, "friction": 1.0}
    assert aib.default_context("AIB-DIPerm-v0") == {"mass": 1.0, "swap": 0.0}
    assert aib.default_context("AIB-ODE-v0") == {"parameter_0": 1.0, "parameter_1": 0.0}
    assert aib.default_context("AIB-ODE-v0", k=3) == {"parameter_0": 1.0, "parameter_1": 0.0, "parameter_2": 0.0}
    assert aib.default_context("AIB-Cartpole-v0") == {"length": 0.5, "action_factor": 1.0}
    assert aib.default_context("AIB-BallInCup-v0") == {"gravity": 9.81, "distance": 0.3}
    for env_id in ("AIB-Walker-v0", "AIB-WalkerGym-v0", "AIB-HopperGym-v0"):
        assert aib.default_context(env_id) == {"gravity": 9.81, "actuator_strength": 1.0}
    for env_id in ("AIB-Cheetah-v0", "AIB-ReacherEasy-v0", "AIB-ReacherHard-v0"):
        assert aib.default_context(env_id) == {"length": 1.0, "action_factor": 1.0}
    assert aib.default_context("AIB-ReacherHardPerm-v0") == {"length": 1.0, "swap": 0.0}
    for env_id in aib.list_envs():
        assert aib.validate_context(env_id, None) == aib.default_context(env_id)
        assert aib.validate_context(env_id, {}) == aib.default_context(env_id)


def test_handcrafted_train() -> None:
    contexts = aib.get_contexts("AIB-DI-v0", "handcrafted_train")
    assert len(contexts) == 6
    assert {(c["mass"], c["action_factor"]) for c in contexts} == {(m, f) for m in (0.8, 1.0, 1.3) for f in (-1.0, 1.0)}
    assert all(list(c) == ["mass", "action_factor"] for c in contexts)
    with pytest.raises(ValueError, match=r"handcrafted_train.*AIB-Cartpole-v0"):
        aib.get_contexts("AIB-Cartpole-v0", "handcrafted_train")


@pytest.mark.parametrize(
    ("env_id", "split", "seed", "kwargs"),
    [("AIB-DI-v0", "eval_out", None, {}), ("AIB-ODE-v0", "eval_in", 3, {"k": 5}), ("AIB-Walker-v0", "train", None, {})],
)
def test_context_split_json_round_trip(env_id: str, split: str, seed: int | None, kwargs: dict) -> None:
    cs = aib.ContextSplit.build(env_id, split, seed=seed, **kwargs)
    assert cs.env_id == env_id and cs.split == split and cs.seed == seed and dict(cs.env_kwargs) == kwargs
    assert cs.version == "AIB-v2"
    assert len(cs) == 20
    expected = aib.get_contexts(env_id, split, seed=seed, **kwargs)
    assert [cs[i] for i in range(20)] == expected
    text = cs.to_json()
    data = json.loads(text)
    assert data["contexts"] == expected and data["env_id"] == env_id and data["split"] == split
    back = aib.ContextSplit.from_json(text)
    assert back == cs
    assert back.to_json() == text
    assert [back[i] for i in range(20)] == expected
    with pytest.raises(Exception):  # noqa: B017 (frozen dataclass)
        cs.split = "train"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------------------
# validate_context errors: ValueError naming the key / parameter, the value and what is allowed
# ---------------------------------------------------------------------------------------------------------------------
BAD_CONTEXTS = [
    # (env_id, context, regex on the message)
    ("AIB-DI-v0", {"bogus": 1.0}, r"context key 'bogus' is unknown for AIB-DI-v0; allowed keys: \['mass', 'action_factor'\]"),
    ("AIB-DI-v0", {"mass": 1.0, "friction": 1.0}, r"'friction' is unknown.*allowed keys: \['mass', 'action_factor'\]"),
    ("AIB-DI-v0", {"mass": "heavy"}, r"context\['mass'\] = 'heavy' has type str; expected a finite real number > 0"),
    ("AIB-DI-v0", {"mass": True}, r"context\['mass'\] = True has type bool; expected a finite real number > 0"),
    ("AIB-DI-v0", {"mass": np.bool_(True)}, r"context\['mass'\] = .*True_? has type bool; expected a finite real number"),
    ("AIB-DI-v0", {"mass": None}, r"context\['mass'\] = None has type NoneType; expected a finite real number > 0"),
    ("AIB-DI-v0", {"mass": [1.0]}, r"context\['mass'\] = \[1.0\] has type list; expected"),
    ("AIB-DI-v0", {"action_factor": True}, r"context\['action_factor'\] = True has type bool; expected one of -1, 1"),
    ("AIB-DI-v0", {"action_factor": "-1"}, r"context\['action_factor'\] = '-1' has type str; expected one of -1, 1"),
    ("AIB-DI-v0", {"mass": math.nan}, r"context\['mass'\] = nan is not allowed; expected a finite real number > 0"),
    ("AIB-DI-v0", {"mass": math.inf}, r"context\['mass'\] = inf is not allowed; expected a finite real number > 0"),
    ("AIB-DI-v0", {"mass": -math.inf}, r"context\['mass'\] = -inf is not allowed; expected a finite real number"),
    ("AIB-DI-v0", {"mass": 0.0}, r"context\['mass'\] = 0.0 is not allowed; expected a finite real number > 0"),
    ("AIB-DI-v0", {"mass": -0.5}, r"context\['mass'\] = -0.5 is not allowed; expected a finite real number > 0"),
    ("AIB-DI-v0", {"action_factor": 0.5}, r"context\['action_factor'\] = 0.5 is not allowed; expected one of -1, 1"),
    ("AIB-DI-v0", {"action_factor": 0}, r"context\['action_factor'\] = 0(\.0)? is not allowed; expected one of -1, 1"),
    ("AIB-Cartpole-v0", {"action_factor": -2}, r"context\['action_factor'\] = -2(\.0)? is not allowed; expected one of -1, 1"),
    ("AIB-DIPerm-v0", {"swap": 2}, r"context\['swap'\] = 2(\.0)? is not allowed; expected one of 0, 1"),
    ("AIB-DIPerm-v0", {"swap": -1.0}, r"context\['swap'\] = -1.0 is not allowed; expected one of 0, 1"),
    ("AIB-DIPerm-v0", {"swap": 0.5}, r"context\['swap'\] = 0.5 is not allowed; expected one of 0, 1"),
    ("AIB-DIPerm-v0", {"action_factor": -1}, r"context key 'action_factor' is unknown for AIB-DIPerm-v0"),
    ("AIB-ReacherHardPerm-v0", {"swap": 3}, r"context\['swap'\] = 3(\.0)? is not allowed; expected one of 0, 1"),
    ("AIB-Cartpole-v0", {"length": 0}, r"context\['length'\] = 0(\.0)? is not allowed; expected a finite real number > 0"),
    ("AIB-Cartpole-v0", {"length": -0.3}, r"context\['length'\] = -0.3 is not allowed; expected a finite real number > 0"),
    ("AIB-Cheetah-v0", {"length": 0.0}, r"context\['length'\] = 0.0 is not allowed; expected a finite real number > 0"),
    ("AIB-ReacherEasy-v0", {"length": math.nan}, r"context\['length'\] = nan is not allowed"),
    ("AIB-BallInCup-v0", {"distance": 0.0}, r"context\['distance'\] = 0.0 is not allowed; expected a finite real number > 0"),
    ("AIB-Walker-v0", {"gravity": -1.0}, r"context\['gravity'\] = -1.0 is not allowed; expected a finite real number >= 0"),
    ("AIB-HopperGym-v0", {"actuator_strength": -0.1}, r"context\['actuator_strength'\] = -0.1 is not allowed; expected a fin"),
    ("AIB-DIFriction-v0", {"friction": -1e-3}, r"context\['friction'\] = -0.001 is not allowed; expected a finite real num"),
    ("AIB-ODE-v0", {"parameter_0": math.inf}, r"context\['parameter_0'\] = inf is not allowed; expected a finite real number"),
    ("AIB-ODE-v0", {"parameter_2": 1.0}, r"context key 'parameter_2' is unknown for AIB-ODE-v0"),
]


@pytest.mark.parametrize(("env_id", "context", "match"), BAD_CONTEXTS)
def test_validate_context_errors(env_id: str, context: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        aib.validate_context(env_id, context)


def test_validate_context_not_a_mapping() -> None:
    with pytest.raises(ValueError, match=r"context=\[\('mass', 1.0\)\] must be a dict of context values for AIB-DI-v0"):
        aib.validate_context("AIB-DI-v0", [("mass", 1.0)])  # type: ignore[arg-type]


def test_validate_context_accepts() -> None:
    # missing keys take the defaults; ints and numpy scalars are accepted and returned as floats
    assert aib.validate_context("AIB-DI-v0", {"mass": 2}) == {"mass": 2.0, "action_factor": 1.0}
    out = aib.validate_context("AIB-DI-v0", {"mass": np.float32(0.75), "action_factor": np.int64(-1)})
    assert out == {"mass": 0.75, "action_factor": -1.0}
    assert all(type(v) is float for v in out.values())
    assert aib.validate_context("AIB-DIPerm-v0", {"swap": 1}) == {"mass": 1.0, "swap": 1.0}
    assert aib.validate_context("AIB-Walker-v0", {"gravity": 0.0, "actuator_strength": 0}) == {
        "gravity": 0.0,
        "actuator_strength": 0.0,
    }
    assert aib.validate_context("AIB-ODE-v0", {"parameter_2": -3.0}, k=3)["parameter_2"] == -3.0
    # far outside the eval-out range is still a valid (physically meaningful) context
    assert aib.validate_context("AIB-DI-v0", {"mass": 100.0})["mass"] == 100.0


@pytest.mark.parametrize("split", ["test", "eval", "", "TRAIN", None])
def test_unknown_split(split: str) -> None:
    with pytest.raises(ValueError, match=r"split=.* is not allowed; expected one of \('train', 'eval_in', 'eval_out'\)"):
        aib.get_contexts("AIB-DI-v0", split)


@pytest.mark.parametrize("env_id", ["AIB-Foo-v0", "DI", "aib:AIB-DI-v0", "AIB-DI-v1"])
def test_unknown_env_id(env_id: str) -> None:
    pattern = rf"env_id={env_id!r} is not an AIB environment; expected one of \[.*'AIB-DI-v0'.*\]"
    with pytest.raises(ValueError, match=pattern):
        aib.get_contexts(env_id, "train")
    with pytest.raises(ValueError, match=pattern):
        aib.validate_context(env_id, {})
    with pytest.raises(ValueError, match=pattern):
        aib.default_context(env_id)
    with pytest.raises(ValueError, match=pattern):
        aib.env_info(env_id)
