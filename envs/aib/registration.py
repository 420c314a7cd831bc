"""Registration and metadata of the AIB environments.

Imports only the standard library and gymnasium's registry, so that registering the ids (at ``import aib`` or through
the startup hook when ``gymnasium.envs`` loads) never pulls in MuJoCo, dm_control or torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class EnvInfo:
    """Metadata of one AIB environment.

    :param env_id: the gymnasium id, ``AIB-<Name>-v0``.
    :param name: the paper's name (``"ODE"``, ``"Reacher(H)-Perm"``...).
    :param entry_point: ``"module:Class"``.
    :param max_episode_steps: episode length T (no environment terminates early).
    :param env_class: ``"overlap"`` or ``"non-overlap"`` (ODE counts as non-overlap: weakly, per the paper).
    :param budget: the paper's training budget in vector steps of 20 sub-envs (after 5,000 random ones).
    :param history_len: the context window K.
    :param return_bounds: ``(lo, hi)`` used to normalise returns, or ``None`` where the paper's bounds are unknown.
    :param requires: the optional extra it needs (``"dmc"``, ``"mujoco"``), or ``None``.
    :param env_kwargs: kwargs of the suite entry (``{"k": 5}`` for ODE-k).
    :param in_v1: whether the paper's first version (11 environments) has it.
    """

    env_id: str
    name: str
    entry_point: str
    max_episode_steps: int
    env_class: str
    budget: int
    history_len: int
    return_bounds: tuple[float, float] | None
    requires: str | None = None
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    in_v1: bool = True

    @property
    def display_name(self) -> str:
        return self.name


_TOY = "aib.toy"
_DMC = "aib.dmc"
_GYM = "aib.mujoco"

ENVS: tuple[EnvInfo, ...] = (
    EnvInfo("AIB-DI-v0", "DI", f"{_TOY}.double_integrator:DoubleIntegratorEnv", 100, "non-overlap", 100_000, 24, (0, 100)),
    EnvInfo(
        "AIB-DIFriction-v0",
        "DI-Friction",
        f"{_TOY}.double_integrator:DoubleIntegratorFrictionEnv",
        100,
        "overlap",
        100_000,
        24,
        (0, 100),
    ),
    EnvInfo(
        "AIB-DIPerm-v0",
        "DI-Perm",
        f"{_TOY}.double_integrator:DoubleIntegratorPermEnv",
        100,
        "non-overlap",
        100_000,
        24,
        (0, 100),
        in_v1=False,
    ),
    EnvInfo("AIB-ODE-v0", "ODE", f"{_TOY}.ode:ODEEnv", 200, "non-overlap", 100_000, 24, (0, 200)),
    EnvInfo(
        "AIB-Cartpole-v0", "Cartpole", f"{_DMC}.cartpole:CartpoleEnv", 1000, "non-overlap", 100_000, 128, (0, 1000), "dmc"
    ),
    EnvInfo(
        "AIB-BallInCup-v0", "BallInCup", f"{_DMC}.ball_in_cup:BallInCupEnv", 1000, "overlap", 200_000, 128, (0, 1000), "dmc"
    ),
    EnvInfo("AIB-Walker-v0", "Walker", f"{_DMC}.walker:WalkerEnv", 1000, "overlap", 200_000, 128, (0, 1000), "dmc"),
    EnvInfo("AIB-Cheetah-v0", "Cheetah", f"{_DMC}.cheetah:CheetahEnv", 1000, "non-overlap", 200_000, 128, (0, 1000), "dmc"),
    EnvInfo(
        "AIB-ReacherEasy-v0",
        "Reacher(E)",
        f"{_DMC}.reacher:ReacherEasyEnv",
        1000,
        "non-overlap",
        200_000,
        128,
        (0, 1000),
        "dmc",
    ),
    EnvInfo(
        "AIB-ReacherHard-v0",
        "Reacher(H)",
        f"{_DMC}.reacher:ReacherHardEnv",
        1000,
        "non-overlap",
        200_000,
        128,
        (0, 1000),
        "dmc",
    ),
    EnvInfo(
        "AIB-ReacherHardPerm-v0",
        "Reacher(H)-Perm",
        f"{_DMC}.reacher:ReacherHardPermEnv",
        1000,
        "non-overlap",
        200_000,
        128,
        (0, 1000),
        "dmc",
        in_v1=False,
    ),
    EnvInfo("AIB-WalkerGym-v0", "WalkerGym", f"{_GYM}.walker2d:WalkerGymEnv", 1000, "overlap", 500_000, 128, None, "mujoco"),
    EnvInfo("AIB-HopperGym-v0", "HopperGym", f"{_GYM}.hopper:HopperGymEnv", 1000, "overlap", 500_000, 128, None, "mujoco"),
)

_BY_ID = {info.env_id: info for info in ENVS}

# ODE-k in the v2 suite: k = 5 is provisional (the paper does not say which k its tables use).
ODE_K_SUITE_ENTRY = dataclasses.replace(_BY_ID["AIB-ODE-v0"], name="ODE-k5", env_kwargs={"k": 5}, in_v1=False)

SUITES: dict[str, tuple[EnvInfo, ...]] = {
    "AIB-v1": tuple(info for info in ENVS if info.in_v1),
    "AIB-v2": (*ENVS, ODE_K_SUITE_ENTRY),
}


def list_envs(suite: str | None = None) -> list[str]:
    """The AIB ids (all 13 registered ids, or the ids of ``suite``: ``"AIB-v1"`` or ``"AIB-v2"``)."""
    if suite is None:
        return [info.env_id for info in ENVS]
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r} is unknown; expected one of {sorted(SUITES)}")
    return [info.env_id for info in SUITES[suite]]


def env_info(env_id: str) -> EnvInfo:
    """The metadata of an AIB id (class, budget, window K, return bounds...)."""
    if env_id not in _BY_ID:
        raise ValueError(f"env_id={env_id!r} is not an AIB environment; expected one of {list(_BY_ID)}")
    return _BY_ID[env_id]


def register_envs() -> None:
    """Register every AIB id with gymnasium (idempotent: ids already present are left alone)."""
    from gymnasium.envs.registration import register, registry

    for info in ENVS:
        if info.env_id not in registry:
            register(
                id=info.env_id,
                entry_point=info.entry_point,
                max_episode_steps=info.max_episode_steps,
                disable_env_checker=False,
            )
