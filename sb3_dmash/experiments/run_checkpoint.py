"""Exact in-run checkpoints: a training run stopped at any moment resumes from its last checkpoint bit for bit.

SB3's ``save`` + ``save_replay_buffer`` keep the weights, optimisers and replay data, but a resumed ``learn()`` would
still differ from an uninterrupted one: the environments restart their episodes, the rollout windows restart and the
random streams restart. :class:`RunCheckpoint` stores, next to the model and the buffer (which holds the rollout
windows), the state of each sub-env (its episode, step and random generator), the last observations and episode
starts, RecurrentPPO's LSTM states, the global random states (numpy, torch, Python) and whatever the caller adds
(the evaluation history). An on-policy model must be saved between two rollouts (its rollout buffer is not kept):
``AIBEvalCallback`` evaluates, and ``sb3-dmash bench`` checkpoints, at rollout starts.

Layout of a checkpoint folder::

    <dir>/LATEST                 the name of the newest complete snapshot (written last, atomically)
    <dir>/<num_timesteps>/model.zip, replay_buffer.pkl, state.pkl

A snapshot is written into its own sub-folder and becomes current only when ``LATEST`` names it, so a process killed
while saving leaves the previous snapshot usable; older snapshots are deleted after the switch.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

_LATEST = "LATEST"
# Attributes of the algorithm that SB3's save() leaves out or that a resumed learn() would otherwise rebuild.
_RUN_ATTRIBUTES = (
    "_last_obs",
    "_last_original_obs",
    "_last_episode_starts",
    "_episode_num",
    "ep_info_buffer",
    "ep_success_buffer",
    "_warmup_pending",
    "_warned_unsynchronised",
    # RecurrentPPO: the LSTM states of actor and critic at the rollout boundary (load() would reset them to zeros)
    "_last_lstm_states",
)

_VEC_ENV_ATTRIBUTES = ("_seeds", "_options", "reset_infos")


def _base_vec_env(env: VecEnv) -> DummyVecEnv:
    base = env.unwrapped
    if not isinstance(base, DummyVecEnv):
        raise TypeError(f"RunCheckpoint needs a DummyVecEnv (its sub-envs are saved with the run), got {type(base).__name__}")
    return base


def _random_states() -> dict[str, Any]:
    return {"numpy": np.random.get_state(), "torch": th.get_rng_state(), "python": random.getstate()}


def _set_random_states(states: dict[str, Any]) -> None:
    np.random.set_state(states["numpy"])
    th.set_rng_state(states["torch"])
    random.setstate(states["python"])


class RunCheckpoint:
    """The newest exact snapshot of one training run, in ``directory``.

    :param directory: the run's checkpoint folder (created on the first save).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def latest(self) -> Path | None:
        """The folder of the newest complete snapshot, or ``None``."""
        try:
            name = (self.directory / _LATEST).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        path = self.directory / name
        return path if (path / "state.pkl").exists() else None

    def exists(self) -> bool:
        return self.latest() is not None

    def save(self, model: BaseAlgorithm, extra: dict[str, Any] | None = None) -> Path:
        """Snapshot ``model`` (between two update rounds, e.g. from a callback) with ``extra`` caller state.

        :param model: the algorithm; its env must be built on a ``DummyVecEnv``.
        :param extra: picklable state of the caller (evaluation history, elapsed time...), returned by :meth:`load`.
        :return: the snapshot's folder.
        """
        from sb3_dmash.experiments.bench import atomic_write_text

        assert model.env is not None
        base = _base_vec_env(model.env)
        target = self.directory / str(model.num_timesteps)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        model.save(target / "model.zip")
        if getattr(model, "replay_buffer", None) is not None:
            model.save_replay_buffer(target / "replay_buffer.pkl")  # type: ignore[attr-defined]
        state = {
            "attributes": {name: getattr(model, name) for name in _RUN_ATTRIBUTES if hasattr(model, name)},
            "sub_envs": base.envs,
            # The VecEnv's pending reset seeds and options: a fresh VecEnv still holds those of its construction,
            # which would reseed every sub-env at the next reset
            "vec_env": {name: getattr(base, name) for name in _VEC_ENV_ATTRIBUTES},
            "action_space": model.action_space,
            "random": _random_states(),
            "extra": extra or {},
        }
        with open(target / "state.pkl", "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        atomic_write_text(self.directory / _LATEST, target.name + "\n")
        for old in self.directory.iterdir():
            if old.is_dir() and old != target:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self, algorithm_class: type[BaseAlgorithm], env: VecEnv, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
        """The algorithm of the newest snapshot, on ``env``, ready for ``learn(..., reset_num_timesteps=False)``.

        :param algorithm_class: the class that saved it (``DMASHSAC``, ``SAC``...).
        :param env: a VecEnv built as the original one (same id, kwargs, number of sub-envs); its sub-envs are replaced
            by the saved ones, so they continue their episodes where the snapshot was taken.
        :param device: the torch device.
        :return: ``(model, extra)``. The global random states are restored last: call ``learn()`` right after.
        """
        path = self.latest()
        if path is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        with open(path / "state.pkl", "rb") as f:
            state = pickle.load(f)
        base = _base_vec_env(env)
        if len(state["sub_envs"]) != base.num_envs:
            raise ValueError(
                f"the checkpoint in {path} has {len(state['sub_envs'])} sub-envs; the env given has {base.num_envs}"
            )
        model = algorithm_class.load(path / "model.zip", env=env, device=device)
        # After load(): its set_random_seed() schedules a reseed of every sub-env at the next reset
        for old in base.envs:
            old.close()
        base.envs = state["sub_envs"]
        for name, value in state["vec_env"].items():
            setattr(base, name, value)
        if (path / "replay_buffer.pkl").exists():
            model.load_replay_buffer(path / "replay_buffer.pkl")  # type: ignore[attr-defined]
        attributes = dict(state["attributes"])
        legacy_window = attributes.pop("_rollout_window", None)
        if legacy_window is not None:
            # Checkpoints of DMASHSAC from before its replay buffer kept the rollout windows: hand the saved windows
            # to the buffer, which a resumed learn() acts on
            model.replay_buffer._rollout_window = np.array(legacy_window, dtype=np.float32)  # type: ignore[attr-defined]
            model.replay_buffer._rollout_fresh[:] = False  # type: ignore[attr-defined]
        for name, value in attributes.items():
            setattr(model, name, value)
        model.action_space = state["action_space"]
        _set_random_states(state["random"])
        return model, state["extra"]

    def remove(self) -> None:
        """Delete the checkpoint folder (once the run's results are safely stored)."""
        shutil.rmtree(self.directory, ignore_errors=True)
