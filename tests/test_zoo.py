"""rl-zoo3 integration (``sb3_dmash.zoo``, ``hyperparams/*.yml``; docs/zoo.md).

The end-to-end tests run the documented commands (``python -m rl_zoo3.train|enjoy``, ``--optimize`` with two worker
processes on one journal storage, ``--trial-id``, ``--algo sac``, the wrapper CLI) in fresh interpreters on an
unmodified rl-zoo3, with tiny budgets (``-n`` a few hundred transitions, two sub-envs, 16-unit networks) and one torch
thread. rl-zoo3 is never imported in the test process itself: ``rl_zoo3.gym_patches`` would replace gymnasium's
``TimeLimit`` for the other tests of the worker.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from aib.registration import ENVS
from sb3_dmash import zoo

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "AIB-DI-v0"
POLICY_KWARGS = "policy_kwargs:dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)"
TINY = ["--num-threads", "1", "--seed", "0"]
TINY_PARAMS = ["-params", "n_envs:2", "learning_starts:200", "batch_size:8", "buffer_size:20000"]


def _environ(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "SB3_DMASH_NO_HOOK"}
    environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return environ


def _popen(args: list[str], cwd: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=_environ(**extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _run(args: list[str], cwd: Path, expect: int = 0, timeout: int = 300, **extra: str) -> str:
    process = _popen(args, cwd, **extra)
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == expect, f"exit code {process.returncode} for {args}\n{output[-6000:]}"
    return output


def _config(run_dir: Path) -> dict[str, Any]:
    """The resolved hyperparameters rl-zoo3 saved for a run."""
    with open(run_dir / ENV_ID / "config.yml") as f:
        return dict(yaml.load(f, Loader=yaml.UnsafeLoader))


def _trained_runs(log_folder: Path, algo: str) -> list[Path]:
    """The run folders of ``algo`` that hold a saved config (``--optimize`` also creates run folders, without one)."""
    runs = [p for p in (log_folder / algo).glob(f"{ENV_ID}_*") if (p / ENV_ID / "config.yml").is_file()]
    return sorted(runs, key=lambda p: int(p.name.rsplit("_", 1)[1]))


def _yml(name: str) -> dict[str, Any]:
    with open(ROOT / "hyperparams" / name) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------------------------------------------------------
# the hyperparameter files and where rl-zoo3 finds them
# ---------------------------------------------------------------------------------------------------------------------
def test_hyperparams_file_in_source_tree() -> None:
    import sb3_dmash

    if Path(sb3_dmash.__file__).resolve().parent != ROOT / "sb3_dmash":
        pytest.skip("sb3_dmash is not imported from this source tree (a wheel install); test_packaging covers it")
    # editable install / source checkout: the repository's own hyperparams/, never a copy
    for name in ("dmash_sac.yml", "sac.yml", "ppo_lstm.yml"):
        assert zoo.hyperparams_file(name) == ROOT / "hyperparams" / name
    with pytest.raises(FileNotFoundError, match=r"no_such\.yml"):
        zoo.hyperparams_file("no_such.yml")


def test_default_config_rule() -> None:
    dmash = str(ROOT / "hyperparams" / "dmash_sac.yml")
    sac = str(ROOT / "hyperparams" / "sac.yml")
    assert Path(zoo.default_config("dmash_sac", ENV_ID)).samefile(dmash)
    assert Path(zoo.default_config("dmash_sac", "Pendulum-v1")).samefile(dmash)  # the yml's `default:` entry
    assert Path(zoo.default_config("sac", "AIB-Cheetah-v0")).samefile(sac)
    assert zoo.default_config("sac", "Pendulum-v1") is None  # rl-zoo3's own sac.yml
    assert zoo.default_config("ppo", ENV_ID) is None
    assert zoo.default_config("tqc", ENV_ID) is None


@pytest.mark.parametrize("name", ["dmash_sac.yml", "sac.yml"])
def test_yml_entries_follow_the_paper(name: str) -> None:
    entries = _yml(name)
    assert set(entries) == {"default"} | {info.env_id for info in ENVS}
    for key, entry in entries.items():
        info = next((i for i in ENVS if i.env_id == key), ENVS[0])  # `default` has DI's settings
        T, K = info.max_episode_steps, info.history_len
        assert entry["policy"] == "MlpPolicy"
        assert entry["n_envs"] == 20
        assert entry["env_kwargs"] == {"split": "train"}
        assert entry["vec_env_wrapper"] == "aib.AssignContexts"
        assert entry["learning_starts"] == 5_000 * 20
        assert entry["n_timesteps"] == (5_000 + info.budget) * 20, key
        assert entry["train_freq"] == 1 and entry["gradient_steps"] == 1
        assert entry["gamma"] == 0.99 and entry["tau"] == 0.005
        assert entry["ent_coef"] == "auto_1.0"
        if name == "dmash_sac.yml":
            assert entry["method"] == "dmash"
            assert entry["batch_size"] == 256
            assert entry["history_len"] == K, key
            assert entry["buffer_size"] == 20 * math.ceil(1e5 / T) * (T + K), (
                key
            )  # 1e5 per context plus warm-up rows (docs/zoo.md)
            assert entry["critic_learning_rate"] == 1e-3 and entry["learning_rate"] == 3e-4
        else:
            assert entry["batch_size"] == 240  # DMA*-SH's stratified 12 per context
            assert entry["buffer_size"] == 20 * 100_000
        policy_kwargs = eval(entry["policy_kwargs"])
        assert policy_kwargs["net_arch"] == [256, 256]
    assert _yml("dmash_sac.yml")["AIB-Cheetah-v0"]["buffer_size"] == 20 * 100 * 1128  # the worked example


def test_ppo_lstm_yml_matches_the_environment_step_budgets() -> None:
    # RecurrentPPO sees as many environment steps as the off-policy methods: (5,000 random + budget) vector steps x 20
    from sb3_dmash.experiments import bench

    ours = ROOT / "hyperparams" / "ppo_lstm.yml"
    entries = _yml("ppo_lstm.yml")
    assert set(entries) == {"default"} | {info.env_id for info in ENVS}
    for info in ENVS:
        entry = entries[info.env_id]
        assert Path(zoo.default_config("ppo_lstm", info.env_id)).samefile(ours), info.env_id
        assert entry["policy"] == "MlpLstmPolicy" and entry["n_envs"] == 20
        assert entry["env_kwargs"] == {"split": "train"} and entry["vec_env_wrapper"] == "aib.AssignContexts"
        assert entry["n_timesteps"] == (5_000 + info.budget) * 20, info.env_id
        n_steps = entry["n_steps"]
        # updates on the 5,000-vector-step evaluation grid and at the end of the budget, covering whole episodes
        assert 5_000 % n_steps == 0 and info.budget % n_steps == 0 and n_steps % info.max_episode_steps == 0, info.env_id
        assert (n_steps * entry["n_envs"]) % entry["batch_size"] == 0
        assert entry["gamma"] == 0.99 and entry["ent_coef"] == 0.0 and not entry.get("normalize")
        assert 64 <= entry["policy_kwargs"]["lstm_hidden_size"] <= 128
        # bench's recurrent_ppo reads the same entry
        policy, kwargs = bench.recurrent_ppo_settings(info.env_id)
        assert policy == entry["policy"] and kwargs["n_steps"] == n_steps and kwargs["policy_kwargs"] == entry["policy_kwargs"]
        assert not {"n_envs", "n_timesteps", "env_kwargs", "vec_env_wrapper", "policy"} & set(kwargs)
    assert zoo.default_config("ppo_lstm", "CartPoleNoVel-v1") is None  # rl-zoo3's own ppo_lstm.yml


# ---------------------------------------------------------------------------------------------------------------------
# sampler and converter (in-process: they need optuna and the policy class, not rl-zoo3)
# ---------------------------------------------------------------------------------------------------------------------
def _trial():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()


def test_sampler_keeps_yml_policy_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {
        "method": "dmash",
        "batch_size": 8,
        "policy_kwargs": {"net_arch": [16], "encoder_dim": 8, "subset_fraction": 0.5, "hypernet_arch": [8]},
    }
    monkeypatch.setattr(zoo._objective_state, "hyperparams", base, raising=False)
    trial = _trial()
    sampled = zoo.sample_dmash_sac_params(trial, n_actions=2, n_envs=2, additional_args={})
    # the SAC part; one update round per vector step
    assert set(trial.params) == {
        "one_minus_gamma", "learning_rate", "critic_learning_rate", "tau", "batch_size_pow", "net_arch",
        "input_mask_prob", "history_len", "context_dim", "hypernet_hidden",
    }  # fmt: skip
    assert sampled["gamma"] == pytest.approx(1 - trial.params["one_minus_gamma"])
    assert sampled["train_freq"] == 1 and sampled["gradient_steps"] == 1
    assert sampled["batch_size"] == 2 ** trial.params["batch_size_pow"] >= 64
    assert sampled["history_len"] in zoo.HISTORY_LENS
    assert 0.0 <= trial.params["input_mask_prob"] <= 0.6
    # the sampled policy kwargs win, the yml's others are re-emitted
    policy_kwargs = sampled["policy_kwargs"]
    assert policy_kwargs["net_arch"] == zoo.NET_ARCH[trial.params["net_arch"]]
    assert policy_kwargs["hypernet_arch"] == [trial.params["hypernet_hidden"]] * 2
    assert policy_kwargs["context_dim"] == trial.params["context_dim"]
    assert policy_kwargs["input_mask_prob"] == trial.params["input_mask_prob"]
    assert policy_kwargs["encoder_dim"] == 8 and policy_kwargs["subset_fraction"] == 0.5
    assert "input_mask_prob" not in sampled  # no top-level ablation switch unless the yml has one
    assert eval(trial.user_attrs["policy_kwargs"]) == policy_kwargs
    # the converter gives the same kwargs from the stored parameters (what --trial-id loads), before the yml merge
    converted = zoo.convert_dmash_sac_params(trial.params)
    converted_policy_kwargs = converted.pop("policy_kwargs")
    assert converted == {k: v for k, v in sampled.items() if k != "policy_kwargs"}
    assert converted_policy_kwargs.items() <= policy_kwargs.items()


def test_sampler_constraints(monkeypatch: pytest.MonkeyPatch) -> None:
    # batch size >= n_envs (stratified batches); a yml ablation switch is neutralised, not contradicted
    monkeypatch.setattr(zoo._objective_state, "hyperparams", {"input_mask_prob": 0.3}, raising=False)
    sampled = zoo.sample_dmash_sac_params(_trial(), n_actions=1, n_envs=1000, additional_args={})
    assert sampled["batch_size"] == 1000
    assert sampled["input_mask_prob"] is None and "input_mask_prob" in sampled["policy_kwargs"]
    # outside an rl-zoo3 objective (no experiment): only the sampled policy kwargs
    monkeypatch.setattr(zoo._objective_state, "hyperparams", None, raising=False)
    sampled = zoo.sample_dmash_sac_params(_trial(), n_actions=1, n_envs=1, additional_args={})
    assert set(sampled["policy_kwargs"]) == {"net_arch", "hypernet_arch", "context_dim", "input_mask_prob"}


def test_converter() -> None:
    params = {
        "one_minus_gamma": 0.01,
        "batch_size_pow": 7,
        "net_arch": "big",
        "hypernet_hidden": 32,
        "context_dim": 16,
        "input_mask_prob": 0.25,
        "history_len": 64,
        "learning_rate": 1e-4,
        "critic_learning_rate": 2e-4,
        "tau": 0.01,
        "encoder_dim": 16,  # any DMASHPolicy argument goes to policy_kwargs
        "context_warmup": False,  # unknown to the sampler: passes through to DMASHSAC
    }
    assert zoo.convert_dmash_sac_params(params) == {
        "gamma": 0.99,
        "batch_size": 128,
        "history_len": 64,
        "learning_rate": 1e-4,
        "critic_learning_rate": 2e-4,
        "tau": 0.01,
        "context_warmup": False,
        "train_freq": 1,
        "gradient_steps": 1,
        "policy_kwargs": {
            "net_arch": [400, 300],
            "hypernet_arch": [32, 32],
            "context_dim": 16,
            "input_mask_prob": 0.25,
            "encoder_dim": 16,
        },
    }
    assert zoo.convert_dmash_sac_params({}) == {"train_freq": 1, "gradient_steps": 1}


def test_cli_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo.main([]) == 2
    assert zoo.main(["--help"]) == 0
    assert "python -m sb3_dmash.zoo" in capsys.readouterr().out
    assert zoo.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# the patches inside rl-zoo3 (one fresh interpreter, no training)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.expensive
def test_patches_in_rl_zoo3(tmp_path: Path) -> None:
    script = f"""
        import argparse, warnings
        from pathlib import Path
        import optuna, rl_zoo3
        from optuna.distributions import CategoricalDistribution, FloatDistribution
        from rl_zoo3.exp_manager import ExperimentManager
        from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
        from rl_zoo3.utils import ALGOS
        from sb3_dmash import DMASHSAC, zoo

        # the hook patched the three tables
        assert ALGOS["dmash_sac"] is DMASHSAC
        assert HYPERPARAMS_SAMPLER["dmash_sac"] is zoo.sample_dmash_sac_params
        assert HYPERPARAMS_CONVERTER["dmash_sac"] is zoo.convert_dmash_sac_params
        # idempotent, and user entries win (setdefault)
        methods = {{n: getattr(ExperimentManager, n) for n in ("__init__", "objective", "read_hyperparameters")}}
        ALGOS["dmash_sac"] = "mine"
        zoo.install(); zoo.install(); zoo.patch_exp_manager()
        assert ALGOS["dmash_sac"] == "mine"
        ALGOS["dmash_sac"] = DMASHSAC
        assert all(getattr(ExperimentManager, n) is m for n, m in methods.items())
        assert not getattr(methods["__init__"].__wrapped__, "_sb3_dmash_patched", False)

        log = Path({str(tmp_path)!r})
        def manager(algo, env_id, *args, **kwargs):
            return ExperimentManager(argparse.Namespace(), algo, env_id, str(log / "logs"), *args, **kwargs)

        # the default hyperparameter file
        ours = lambda name: str(zoo.hyperparams_file(name))
        zoo_dir = Path(rl_zoo3.__file__).parent / "hyperparams"
        assert manager("dmash_sac", "AIB-DI-v0").config == ours("dmash_sac.yml")
        assert manager("sac", "AIB-WalkerGym-v0").config == ours("sac.yml")
        assert Path(manager("sac", "Pendulum-v1").config) == zoo_dir / "sac.yml"
        assert Path(manager("td3", "AIB-DI-v0").config) == zoo_dir / "td3.yml"
        assert manager("ppo_lstm", "AIB-Cheetah-v0").config == ours("ppo_lstm.yml")
        assert Path(manager("ppo_lstm", "CartPoleNoVel-v1").config) == zoo_dir / "ppo_lstm.yml"
        assert manager("dmash_sac", "AIB-DI-v0", config="mine.yml").config == "mine.yml"  # --conf-file wins
        assert manager("sac", "AIB-DI-v0", config="mine.yml").config == "mine.yml"
        keywords = ExperimentManager(args=argparse.Namespace(), algo="dmash_sac", env_id="AIB-DI-v0", log_folder="x")
        assert keywords.config == ours("dmash_sac.yml")

        # --trial-id: a study with two trials in a journal file (rl-zoo3 reads `*.log` storages as journals)
        storage = str(log / "study.log")
        study = optuna.create_study(
            storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)),
            study_name="s", direction="maximize")
        dists = {{"one_minus_gamma": FloatDistribution(1e-4, 0.03, log=True),
                 "net_arch": CategoricalDistribution(["small", "medium", "big"]),
                 "hypernet_hidden": CategoricalDistribution([32, 64, 128]),
                 "history_len": CategoricalDistribution([16, 24, 64, 128])}}
        for i, (net, hidden) in enumerate([("small", 32), ("big", 128)]):
            params = {{"one_minus_gamma": 0.01 * (i + 1), "net_arch": net, "hypernet_hidden": hidden, "history_len": 16}}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(i)))
        yml = manager("dmash_sac", "AIB-DI-v0").read_hyperparameters()[0]
        yml_policy_kwargs = eval(yml["policy_kwargs"])

        # trial 1: the yml's policy kwargs stay, the trial's win; the trial's values reach the saved config
        m = manager("dmash_sac", "AIB-DI-v0", storage=storage, study_name="s", trial_id=1,
                    hyperparams={{"n_envs": 2, "history_len": 24}})
        hyperparams, saved = m.read_hyperparameters()
        assert hyperparams["policy_kwargs"] == {{**yml_policy_kwargs, "net_arch": [400, 300], "hypernet_arch": [128, 128]}}
        assert abs(hyperparams["gamma"] - 0.98) < 1e-12 and hyperparams["train_freq"] == 1
        assert hyperparams["n_envs"] == 2 and hyperparams["history_len"] == 24  # -params after the trial (rl-zoo3's order)
        assert hyperparams["method"] == "dmash" and hyperparams["buffer_size"] == yml["buffer_size"]
        assert saved["policy_kwargs"] == hyperparams["policy_kwargs"]
        assert m.trial_id == 1 and m.custom_hyperparams == {{"n_envs": 2, "history_len": 24}}  # restored

        # trial 0 (rl-zoo3 alone skips it: `if self.trial_id:`); -params policy_kwargs replace the yml's, under the trial's
        m = manager("dmash_sac", "AIB-DI-v0", storage=storage, study_name="s", trial_id=0,
                    hyperparams={{"policy_kwargs": {{"encoder_dim": 8, "net_arch": [16]}}}})
        hyperparams, _ = m.read_hyperparameters()
        assert hyperparams["policy_kwargs"] == {{"encoder_dim": 8, "net_arch": [64, 64], "hypernet_arch": [32, 32]}}
        assert abs(hyperparams["gamma"] - 0.99) < 1e-12 and hyperparams["history_len"] == 16

        # other algorithms keep rl-zoo3's behaviour
        m = manager("sac", "AIB-DI-v0", storage=storage, study_name="s", trial_id=0)
        assert m.read_hyperparameters()[0]["policy_kwargs"] == "dict(net_arch=[256, 256])"
        print("OK")
    """
    output = _run(["-c", textwrap.dedent(script)], tmp_path, timeout=180)
    assert output.rstrip().endswith("OK"), output[-3000:]


# ---------------------------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.expensive
def test_train_and_enjoy(tmp_path: Path) -> None:
    output = _run(
        ["-m", "rl_zoo3.train", "--algo", "dmash_sac", "--env", ENV_ID, *TINY, "-n", "400", *TINY_PARAMS, POLICY_KWARGS,
         "-P", "-tb", "tb", "--save-freq", "200", "--eval-freq", "200", "--eval-episodes", "2",
         "--eval-env-kwargs", "split:'eval_in'", "-f", "logs"],
        tmp_path,
    )  # fmt: skip
    assert f"Loading hyperparameters from: {zoo.hyperparams_file('dmash_sac.yml')}" in output
    assert "eval_env_kwargs={'split': 'eval_in'}" in output
    run = tmp_path / "logs" / "dmash_sac" / f"{ENV_ID}_1"
    for name in (f"{ENV_ID}.zip", "best_model.zip", "rl_model_200_steps.zip", "rl_model_400_steps.zip", "evaluations.npz"):
        assert (run / name).is_file(), sorted(p.name for p in run.iterdir())
    assert list((tmp_path / "tb" / ENV_ID).glob("DMASHSAC_1/events.out.tfevents.*"))
    config = _config(run)
    assert config["vec_env_wrapper"] == "aib.AssignContexts" and config["env_kwargs"] == {"split": "train"}
    assert config["method"] == "dmash" and config["history_len"] == 24 and config["n_envs"] == 2
    assert config["policy_kwargs"] == {"net_arch": [16], "hypernet_arch": [8], "encoder_dim": 8}

    # enjoy: loads the saved model; its predict() keeps the context state between calls
    output = _run(
        ["-m", "rl_zoo3.enjoy", "--algo", "dmash_sac", "--env", ENV_ID, "-f", "logs", "--exp-id", "1", "--no-render",
         "-n", "250", "--num-threads", "1", "--env-kwargs", "split:'eval_in'"],
        tmp_path,
    )  # fmt: skip
    assert f"Loading logs/dmash_sac/{ENV_ID}_1/{ENV_ID}.zip" in output
    assert output.count("Episode Length 100") == 2, output[-2000:]

    import numpy as np

    import aib
    from sb3_dmash import DMASHSAC

    model = DMASHSAC.load(run / f"{ENV_ID}.zip", device="cpu")
    env = aib.make_vec_env(ENV_ID, "eval_in", n_envs=1, seed=0)
    obs = env.reset()
    action, state = model.predict(obs, state=None, episode_start=np.ones(1, dtype=bool), deterministic=True)
    assert state is not None and action.shape == (1, 2)
    obs, *_ = env.step(action)
    _, next_state = model.predict(obs, state=state, episode_start=np.zeros(1, dtype=bool), deterministic=True)
    assert not np.array_equal(next_state.window, state.window)  # the new transition entered the window


@pytest.mark.expensive
def test_optimize_two_workers_then_trial_id(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    storage = tmp_path / "optuna" / "study.log"  # a journal file (rl-zoo3: a `--storage` ending in .log)
    worker = [
        "-m", "rl_zoo3.train", "--algo", "dmash_sac", "--env", ENV_ID, "--num-threads", "1", "-n", "240", *TINY_PARAMS,
        POLICY_KWARGS, "-optimize", "--n-trials", "1", "--sampler", "random", "--pruner", "none", "--n-evaluations", "1",
        "--eval-episodes", "1", "--storage", str(storage), "--study-name", "zoo-test", "--no-optim-plots", "-f", "logs",
    ]  # fmt: skip
    workers = [_popen([*worker, "--seed", str(seed)], tmp_path) for seed in (1, 2)]
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    for w, output in zip(workers, outputs, strict=True):
        assert w.returncode == 0, output[-6000:]

    study = optuna.load_study(
        study_name="zoo-test",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage))),
    )
    trials = study.trials
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for trial in trials:
        assert {"one_minus_gamma", "net_arch", "history_len", "context_dim", "hypernet_hidden"} <= set(trial.params)
        policy_kwargs = eval(trial.user_attrs["policy_kwargs"])
        assert policy_kwargs["encoder_dim"] == 8  # re-emitted from -params policy_kwargs
        assert policy_kwargs["net_arch"] == zoo.NET_ARCH[trial.params["net_arch"]]  # sampled

    # retrain trial 1 (no -params policy_kwargs: the yml's are kept under the trial's)
    _run(
        ["-m", "rl_zoo3.train", "--algo", "dmash_sac", "--env", ENV_ID, *TINY, "-n", "220", *TINY_PARAMS,
         "--storage", str(storage), "--study-name", "zoo-test", "--trial-id", "1", "--eval-freq", "-1", "-f", "logs"],
        tmp_path,
    )  # fmt: skip
    (run,) = _trained_runs(tmp_path / "logs", "dmash_sac")
    config = _config(run)
    expected = zoo.convert_dmash_sac_params(trials[1].params)
    yml_policy_kwargs = eval(_yml("dmash_sac.yml")[ENV_ID]["policy_kwargs"])
    assert config["policy_kwargs"] == {**yml_policy_kwargs, **expected.pop("policy_kwargs")}
    expected.pop("batch_size")  # -params batch_size:8 comes after the trial (rl-zoo3's order)
    assert {k: config[k] for k in expected} == expected
    assert config["batch_size"] == 8 and config["n_envs"] == 2


@pytest.mark.expensive
def test_sac_baseline_finds_our_yml(tmp_path: Path) -> None:
    # DR: SB3's SAC over the 20 training contexts (Concat: the same command with --env-kwargs context_aware:True)
    output = _run(
        ["-m", "rl_zoo3.train", "--algo", "sac", "--env", ENV_ID, *TINY, "-n", "220", *TINY_PARAMS,
         "policy_kwargs:dict(net_arch=[16])", "--eval-freq", "-1", "-f", "logs"],
        tmp_path,
    )  # fmt: skip
    assert f"Loading hyperparameters from: {zoo.hyperparams_file('sac.yml')}" in output
    config = _config(tmp_path / "logs" / "sac" / f"{ENV_ID}_1")
    assert config["vec_env_wrapper"] == "aib.AssignContexts" and config["env_kwargs"] == {"split": "train"}
    assert config["replay_buffer_kwargs"] == "dict(handle_timeout_termination=False)"
    assert config["learning_starts"] == 200 and config["n_envs"] == 2  # -params over the yml's


@pytest.mark.expensive
def test_ppo_lstm_finds_our_yml(tmp_path: Path) -> None:
    # sb3-contrib's RecurrentPPO over the 20 training contexts, with our yml (rl-zoo3 ships a ppo_lstm.yml without AIB ids)
    output = _run(
        ["-m", "rl_zoo3.train", "--algo", "ppo_lstm", "--env", ENV_ID, *TINY, "-n", "32", "-params", "n_envs:2",
         "n_steps:8", "batch_size:16", "policy_kwargs:dict(lstm_hidden_size=16, net_arch=[16])", "--eval-freq", "-1",
         "-f", "logs"],
        tmp_path,
    )  # fmt: skip
    assert f"Loading hyperparameters from: {zoo.hyperparams_file('ppo_lstm.yml')}" in output
    run_dir = tmp_path / "logs" / "ppo_lstm" / f"{ENV_ID}_1"
    config = _config(run_dir)
    assert config["vec_env_wrapper"] == "aib.AssignContexts" and config["env_kwargs"] == {"split": "train"}
    assert config["policy"] == "MlpLstmPolicy" and config["n_epochs"] == _yml("ppo_lstm.yml")[ENV_ID]["n_epochs"]
    assert config["n_steps"] == 8 and config["n_envs"] == 2  # -params over the yml's
    from sb3_contrib import RecurrentPPO

    model = RecurrentPPO.load(run_dir / f"{ENV_ID}.zip", device="cpu")
    assert model.num_timesteps == 32 and model.policy.lstm_actor.hidden_size == 16  # 2 rollouts x 8 vector steps x 2


@pytest.mark.expensive
def test_wrapper_cli_without_hook(tmp_path: Path) -> None:
    # With the hook switched off, plain rl-zoo3 rejects `--algo dmash_sac` (test_hook checks that the opt-out installs
    # nothing); the wrapper command installs the patches itself.
    output = _run(
        ["-m", "sb3_dmash.zoo", "train", "--algo", "dmash_sac", "--env", ENV_ID, *TINY, "-n", "40", "-params", "n_envs:2",
         "learning_starts:20", "batch_size:8", "buffer_size:1000", POLICY_KWARGS, "--eval-freq", "-1", "-f", "logs"],
        tmp_path,
        SB3_DMASH_NO_HOOK="1",
    )  # fmt: skip
    assert f"Loading hyperparameters from: {zoo.hyperparams_file('dmash_sac.yml')}" in output
    assert (tmp_path / "logs" / "dmash_sac" / f"{ENV_ID}_1" / f"{ENV_ID}.zip").is_file()
