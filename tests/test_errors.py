"""Invalid user input raises ``ValueError`` with a message that names the parameter and the offending value."""

from __future__ import annotations

import re
import sys
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env

import aib
from sb3_dmash import DMASHSAC, DMASHPolicy, zoo
from sb3_dmash.experiments import diagnostics, report
from sb3_dmash.experiments.bench import make_grid
from sb3_dmash.experiments.utils import require

POLICY_KWARGS = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)


class DictObsEnv(gym.Env):
    """A Dict-observation env with a continuous action space."""

    observation_space = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (2,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def test_dict_observation_space():
    # Refused before SB3 would recommend MultiInputPolicy, which DMASHSAC does not have
    with pytest.raises(ValueError, match=r"DMASHSAC takes flat Box observations; Dict observation spaces are not supported"):
        DMASHSAC(DMASHPolicy, DictObsEnv(), policy_kwargs=POLICY_KWARGS)
    with pytest.raises(ValueError, match=r"DMASHSAC takes flat Box observations; Dict observation spaces are not supported"):
        DMASHSAC("MlpPolicy", DictObsEnv(), policy_kwargs=POLICY_KWARGS)
    with pytest.raises(ValueError, match=r"flat Box observation space, got Dict\("):
        DMASHPolicy(DictObsEnv.observation_space, DictObsEnv.action_space, lambda _: 1e-3, **POLICY_KWARGS)


def test_discrete_action_space():
    # SB3's convention (supported_action_spaces): the AssertionError that SAC raises
    with pytest.raises(AssertionError, match=r"only supports .*Box.* as action spaces but Discrete\(2\) was provided"):
        DMASHSAC("MlpPolicy", "CartPole-v1", policy_kwargs=POLICY_KWARGS)


@pytest.mark.parametrize("history_len", [0, -3, 2.5, True])
def test_history_len(history_len):
    with pytest.raises(ValueError, match=rf"history_len={history_len!r} must be an integer >= 1"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", history_len=history_len, policy_kwargs=POLICY_KWARGS)


def test_odd_context_dim_with_simnorm():
    with pytest.raises(ValueError, match=r"context_dim=3 must be even with output_norm='simnorm'"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "context_dim": 3})
    # without SimNorm an odd size is fine
    model = DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "context_dim": 3, "output_norm": "none"})
    assert model.policy.context.encoder.context_dim == 3


def test_unknown_history_alignment():
    with pytest.raises(ValueError, match=r"history_alignment='future' is not allowed"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", history_alignment="future", policy_kwargs=POLICY_KWARGS)


def test_batch_size_smaller_than_n_envs():
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=4, seed=0)
    with pytest.raises(ValueError, match=r"batch_size=2 must be >= n_envs=4"):
        DMASHSAC("MlpPolicy", env, batch_size=2, policy_kwargs=POLICY_KWARGS)


@pytest.mark.parametrize("name", ["policy_delay", "actor_updates"])
@pytest.mark.parametrize("value", [0, -1])
def test_policy_delay_and_actor_updates(name, value):
    with pytest.raises(ValueError, match=rf"{name}={value} must be an integer >= 1"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs=POLICY_KWARGS, **{name: value})


def test_net_arch_with_different_last_widths():
    net_arch = dict(pi=[16], qf=[16, 8])
    with pytest.raises(ValueError, match=r"net_arch=\{'pi': \[16\], 'qf': \[16, 8\]\}.*same last width"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "net_arch": net_arch})
    # The forward model's trunk must match too
    net_arch = dict(pi=[16], qf=[16], fm=[32])
    with pytest.raises(ValueError, match=r"net_arch=.*'fm': \[32\].*same last width"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "net_arch": net_arch})
    with pytest.raises(ValueError, match=r"net_arch=\[\]"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "net_arch": []})


def test_other_policy_kwargs():
    with pytest.raises(ValueError, match=r"history_on_episode_start='clear' is not allowed"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "history_on_episode_start": "clear"})
    with pytest.raises(ValueError, match=r"input_norm='batch' is not allowed"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "input_norm": "batch"})
    with pytest.raises(ValueError, match=r"output_norm='tanh' is not allowed"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "output_norm": "tanh"})


def test_other_algorithm_kwargs():
    with pytest.raises(ValueError, match=r"n_steps=3: n-step returns are not supported"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", n_steps=3, policy_kwargs=POLICY_KWARGS)
    with pytest.raises(ValueError, match=r"features_extractor_class='flatten' must be a BaseFeaturesExtractor subclass"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "features_extractor_class": "flatten"})
    # SAC's policy options that have nothing to act on here are accepted, as SAC accepts them
    DMASHSAC("MlpPolicy", "Pendulum-v1", policy_kwargs={**POLICY_KWARGS, "share_features_extractor": True})
    with pytest.raises(ValueError, match=r"replay_buffer_class=.*ReplayBuffer.* must be a HistoryReplayBuffer"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", replay_buffer_class=ReplayBuffer, policy_kwargs=POLICY_KWARGS)
    with pytest.raises(ValueError, match=r"ent_coef='auto_-1': the initial value must be > 0"):
        DMASHSAC("MlpPolicy", "Pendulum-v1", ent_coef="auto_-1", policy_kwargs=POLICY_KWARGS)


# ---------------------------------------------------------------------------------------------------------------------
# a missing optional extra names the module and the pip command
# ---------------------------------------------------------------------------------------------------------------------
def _block_module(monkeypatch: pytest.MonkeyPatch, name: str, *reimport: str) -> None:
    """Make ``import name`` fail (``sys.modules[name] = None``) and drop the cached modules that import it."""
    for key in list(sys.modules):
        if key.startswith(f"{name}.") or any(key == r or key.startswith(f"{r}.") for r in reimport):
            monkeypatch.delitem(sys.modules, key)
    monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("env_id", ["AIB-Cheetah-v0", "AIB-Walker-v0"])
def test_missing_dmc_extra(monkeypatch: pytest.MonkeyPatch, env_id: str) -> None:
    _block_module(monkeypatch, "dm_control", "aib.dmc")
    with pytest.raises(
        ModuleNotFoundError, match=rf"{env_id}.* the optional module 'dm_control'.*pip install \"sb3-dmash\[dmc\]\""
    ):
        gym.make(env_id)


def test_missing_mujoco_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _block_module(monkeypatch, "mujoco", "aib.mujoco")
    with pytest.raises(ModuleNotFoundError, match=r"AIB-HopperGym-v0.* the optional module 'mujoco'.*\"sb3-dmash\[mujoco\]\""):
        gym.make("AIB-HopperGym-v0")


@pytest.mark.parametrize(
    "module, call",
    [
        ("pandas", lambda: report.load_frame([{"env": "AIB-DI-v0"}])),
        ("scipy", lambda: diagnostics.kraskov_mi(np.zeros((8, 1)), np.zeros((8, 1)))),
        ("matplotlib", lambda: diagnostics.cosine_figure(np.eye(2), ["a", "b"])),
        ("matplotlib", lambda: report._figure(1.0, 1.0)),
    ],
)
def test_missing_analysis_extra(monkeypatch: pytest.MonkeyPatch, module: str, call: Callable[[], object]) -> None:
    _block_module(monkeypatch, module)
    with pytest.raises(ModuleNotFoundError, match=rf"the optional module '{module}'.*pip install \"sb3-dmash\[analysis\]\""):
        call()


def test_require_names_the_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    _block_module(monkeypatch, "pandas")
    with pytest.raises(ImportError, match=r"'pandas'.*sb3-dmash\[analysis\]") as info:
        require("pandas", "analysis")
    assert info.value.name == "pandas"
    assert require("numpy", "analysis") is np


# ---------------------------------------------------------------------------------------------------------------------
# DMASHSAC.load: truncated or corrupt files, models of other algorithms
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.zip"
    DMASHSAC("MlpPolicy", "Pendulum-v1", buffer_size=1000, policy_kwargs=POLICY_KWARGS).save(path)
    return path


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_load_truncated_model(saved_model: Path, tmp_path: Path, fraction: float) -> None:
    content = saved_model.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(content[: int(len(content) * fraction)])
    with pytest.raises(
        ValueError, match=r"cut\.zip is not a complete model saved by \.save\(\): the file is truncated or corrupt"
    ):
        DMASHSAC.load(cut)
    assert isinstance(DMASHSAC.load(saved_model), DMASHSAC)  # the complete file still loads


def test_load_corrupt_model(saved_model: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(saved_model) as archive:
        offset = archive.getinfo("policy.pth").header_offset + 100  # inside the entry's compressed data
    content = bytearray(saved_model.read_bytes())
    content[offset] ^= 0xFF
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"corrupt\.zip is not a complete model saved by \.save\(\).*policy\.pth"):
        DMASHSAC.load(str(corrupt))


def test_load_sac_model(tmp_path: Path) -> None:
    path = tmp_path / "sac.zip"
    SAC("MlpPolicy", "Pendulum-v1", buffer_size=1000, policy_kwargs=dict(net_arch=[16])).save(path)
    message = (
        r"sac\.zip holds a SAC model \(policy SACPolicy\), not a DMASHSAC model; load it with stable_baselines3\.SAC\.load"
    )
    with pytest.raises(ValueError, match=message):
        DMASHSAC.load(path)
    with pytest.raises(ValueError, match=message):
        DMASHSAC.load(str(tmp_path / "sac"))  # SB3's rule: the suffix is optional
    assert isinstance(SAC.load(path), SAC)


# ---------------------------------------------------------------------------------------------------------------------
# n_envs
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_envs", [0, -2, True, 2.0])
def test_n_envs(n_envs: object) -> None:
    message = rf"n_envs must be an integer >= 1, got {re.escape(repr(n_envs))}"
    with pytest.raises(ValueError, match=message):
        aib.make_vec_env("AIB-DI-v0", "train", n_envs=n_envs)
    with pytest.raises(ValueError, match=message):
        make_grid(["AIB-DI-v0"], ["dmash"], [0], n_envs=n_envs)
    with pytest.raises(ValueError, match=message + r" \(the n_envs hyperparameter of dmash_sac on AIB-DI-v0\)"):
        zoo.check_hyperparams({"n_envs": n_envs}, "dmash_sac", "AIB-DI-v0", None)


def test_n_envs_in_the_zoo_read_hyperparameters() -> None:
    # the patched ExperimentManager.read_hyperparameters checks what rl-zoo3 read (no rl-zoo3 import here)
    read = zoo._make_read_hyperparameters(lambda self: ({"n_envs": 0, "policy": "MlpPolicy"}, {}))
    manager = types.SimpleNamespace(
        algo="sac", env_name=types.SimpleNamespace(gym_id="Pendulum-v1"), config="sac.yml", trial_id=None
    )
    with pytest.raises(
        ValueError, match=r"n_envs must be an integer >= 1, got 0 \(the n_envs hyperparameter of sac on Pendulum"
    ):
        read(manager)


# ---------------------------------------------------------------------------------------------------------------------
# Dict observations with "MultiInputPolicy", unknown policy names
# ---------------------------------------------------------------------------------------------------------------------
def test_multi_input_policy() -> None:
    message = (
        r"DMASHSAC takes flat Box observations; Dict observation spaces are not supported \(MultiInputPolicy does not "
        r"exist for DMASHSAC\)\. Flatten them with gymnasium\.wrappers\.FlattenObservation"
    )
    with pytest.raises(ValueError, match=message):
        DMASHSAC("MultiInputPolicy", DictObsEnv(), policy_kwargs=POLICY_KWARGS)
    with pytest.raises(ValueError, match=r"policy='CnnPolicy' is unknown; expected one of \['MlpPolicy'\] or a DMASHPolicy"):
        DMASHSAC("CnnPolicy", "Pendulum-v1", policy_kwargs=POLICY_KWARGS)


# ---------------------------------------------------------------------------------------------------------------------
# rl-zoo3's default dmash_sac entry (AIB only) on another env
# ---------------------------------------------------------------------------------------------------------------------
ZOO_DEFAULT = (
    r"the zoo's default dmash_sac entry is for AIB environments \(AIB-\*-v0\); give hyperparameters for Pendulum-v1 with "
    r"--conf-file"
)


def test_assign_contexts_on_a_non_aib_env() -> None:
    venv = make_vec_env("Pendulum-v1", n_envs=2)
    with pytest.raises(
        ValueError, match=r"aib\.AssignContexts needs a VecEnv of AIB environments.*got Pendulum-v1\. .*" + ZOO_DEFAULT
    ):
        aib.AssignContexts(venv)
    venv.close()


def test_zoo_default_entry_on_a_non_aib_env() -> None:
    config = str(zoo.hyperparams_file("dmash_sac.yml"))
    with open(config) as f:
        default = yaml.safe_load(f)["default"]
    with pytest.raises(ValueError, match=r"--env Pendulum-v1: " + ZOO_DEFAULT + r".*-params vec_env_wrapper:None"):
        zoo.check_hyperparams(default, "dmash_sac", "Pendulum-v1", config)
    # the fixes the message gives: -params overriding the AIB-only keys, or another file (--conf-file)
    zoo.check_hyperparams({**default, "vec_env_wrapper": None, "env_kwargs": {}}, "dmash_sac", "Pendulum-v1", config)
    zoo.check_hyperparams(default, "dmash_sac", "Pendulum-v1", "mine.yml")
    zoo.check_hyperparams(default, "dmash_sac", "AIB-DI-v0", config)
