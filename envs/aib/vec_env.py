"""One fixed context per sub-env of an SB3 VecEnv: the paper's training and evaluation protocol.

Imports stable-baselines3, so ``aib`` loads it lazily.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

from aib.contexts import SPLITS


class AssignContexts(VecEnvWrapper):
    """Give sub-env ``i`` context ``i mod 20`` of its split for the whole run.

    rl-zoo3 and SB3's ``make_vec_env`` build every sub-env with the same kwargs; this wrapper then calls each sub-env's
    ``set_context((split, i % 20))`` through ``env_method``, so it works for ``DummyVecEnv`` and ``SubprocVecEnv``.
    The contexts apply from the next ``reset`` (SB3 resets before training and evaluation). Use it as rl-zoo3's
    ``vec_env_wrapper: aib.AssignContexts``.

    :param venv: a VecEnv of AIB environments.
    :param split: the split to assign; ``None`` (default) keeps each sub-env's own ``split`` kwarg.
    """

    def __init__(self, venv: VecEnv, split: str | None = None) -> None:
        super().__init__(venv)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split={split!r} is not allowed; expected one of {SPLITS}")
        # has_attr, not get_attr: get_attr on a missing attribute ends a SubprocVecEnv worker
        if not venv.has_attr("split"):
            raise ValueError(_not_aib_message(venv))
        env_splits = venv.get_attr("split") if split is None else [split] * venv.num_envs
        for i, env_split in enumerate(env_splits):
            venv.env_method("set_context", (env_split, i % 20), indices=[i])
        self.splits = list(env_splits)

    # VecEnvWrapper keeps its own (empty) reset_infos; forward the wrapped VecEnv's so that the reset infos
    # (info["context"] of each sub-env) stay visible through this wrapper.
    def reset(self) -> Any:
        obs = self.venv.reset()
        self.reset_infos = self.venv.reset_infos
        return obs

    def step_wait(self) -> Any:
        result = self.venv.step_wait()
        self.reset_infos = self.venv.reset_infos
        return result


def _not_aib_message(venv: VecEnv) -> str:
    """Why AssignContexts refuses ``venv``; rl-zoo3 applying dmash_sac.yml's ``default`` entry to a non-AIB id is the
    usual way to get here (``python -m rl_zoo3.train --algo dmash_sac --env Pendulum-v1``)."""
    try:
        env_id = str(venv.get_attr("spec", indices=[0])[0].id)
    except Exception:  # an env built without gym.make has no spec
        env_id = "a non-AIB env"
    return (
        f"aib.AssignContexts needs a VecEnv of AIB environments (AIB-*-v0: they have a split and set_context), got "
        f"{env_id}. With rl-zoo3: the zoo's default dmash_sac entry is for AIB environments (AIB-*-v0); give "
        f"hyperparameters for {env_id} with --conf-file (a yml with an entry for it), or -params "
        'vec_env_wrapper:None env_kwargs:"dict()" (and your own n_timesteps, buffer_size...)'
    )


def make_vec_env(
    env_id: str,
    split: str = "train",
    n_envs: int = 20,
    seed: int | None = None,
    vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    wrapper_class: Callable[[gym.Env], gym.Env] | None = None,
    monitor_dir: str | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """Build an SB3 VecEnv whose sub-env ``i`` runs context ``i mod 20`` of ``split`` for the whole run.

    :param env_id: an AIB id.
    :param split: ``"train"``, ``"eval_in"`` or ``"eval_out"``.
    :param n_envs: number of sub-envs (the paper uses 20: one per context).
    :param seed: seed of sub-env 0; sub-env ``i`` gets ``seed + i`` (SB3's convention).
    :param vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``.
    :param env_kwargs: further kwargs of the env (``context_aware=True``, ``k=5``...); ``split`` and ``context`` are set
        here.
    :param wrapper_class: a gymnasium wrapper applied to each sub-env (after SB3's ``Monitor``).
    :param monitor_dir: where ``Monitor`` writes its files.
    :param vec_env_kwargs: kwargs of the VecEnv class.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; expected one of {SPLITS}")
    if isinstance(n_envs, bool) or not isinstance(n_envs, numbers.Integral) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    env_kwargs = dict(env_kwargs or {})
    for key in ("split", "context"):
        if key in env_kwargs:
            raise ValueError(f"env_kwargs[{key!r}] is set by aib.make_vec_env; pass split= instead")
    env_kwargs["split"] = split
    venv = sb3_make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        vec_env_cls=vec_env_cls,
        wrapper_class=wrapper_class,
        monitor_dir=monitor_dir,
        vec_env_kwargs=vec_env_kwargs,
    )
    return AssignContexts(venv)
