"""A diverged run stops loudly: non-finite losses and parameters raise during learn(), NaN actions in aib.evaluate, and
``sb3-dmash bench`` records such a run as ``diverged``, outside every table and aggregate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import VecEnvWrapper

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.common.divergence import DivergenceError, FiniteGuard
from sb3_dmash.experiments import bench

SMALL = dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8)
HUGE_LR = dict(learning_rate=1e12, critic_learning_rate=1e12, context_learning_rate=1e12)


class NaNObservation(VecEnvWrapper):
    """Returns a NaN in sub-env 0's observation at the ``at``-th step (a broken sensor)."""

    def __init__(self, venv, at: int) -> None:
        super().__init__(venv)
        self.at, self.n_steps = at, 0

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.n_steps += 1
        if self.n_steps == self.at:
            obs = obs.copy()
            obs[0, 0] = np.nan
        return obs, rewards, dones, infos


def make_model(method="dmash", env=None, **kwargs):
    env = env or aib.make_vec_env("AIB-DI-v0", "train", n_envs=20, seed=0)
    return DMASHSAC(
        "MlpPolicy", env, method=method, learning_starts=20 * 10, batch_size=40, buffer_size=20 * 100, seed=0,
        policy_kwargs=SMALL, **kwargs,
    )  # fmt: skip


def test_guard_records_the_first_non_finite_round():
    guard = FiniteGuard("test", ("loss_a", "loss_b"), check_every=3, first_round=10)
    checks = []
    for value in (1.0, float("nan"), float("inf"), 2.0):
        guard.observe("loss_a", th.tensor(value))
        guard.observe("loss_b", th.tensor(0.5))
        checks.append(guard.end_round())
    # 10 rounds were done before: these are rounds 11-14, read after round 12 (every third round)
    assert checks == [False, True, False, False]
    with pytest.raises(DivergenceError, match=r"test diverged: loss_a was nan in update round 12"):
        guard.check()
    guard = FiniteGuard("test", ("loss",))
    guard.observe("loss", th.tensor(1.0))
    guard.check([("w", th.ones(3))])  # all finite: nothing raised
    with pytest.raises(DivergenceError, match=r"non-finite parameters after update round 0: w2"):
        guard.check([("w", th.ones(3)), ("w2", th.tensor([1.0, float("inf")]))])


@pytest.mark.parametrize("method", ["dmash", "dr"])
def test_exploding_learning_rate_stops_learn(method):
    model = make_model(method, **HUGE_LR)
    with pytest.raises(DivergenceError, match=r"diverged: .*_loss was (nan|inf|-inf) in update round \d+"):
        model.learn(20 * 40)


def test_nan_observation_stops_learn():
    env = NaNObservation(aib.make_vec_env("AIB-DI-v0", "train", n_envs=20, seed=0), at=15)
    model = make_model("dmash", env=env)
    model.finite_check_interval = 5  # read the record during training, not only at the end
    with pytest.raises(DivergenceError, match="VecCheckNan") as info:
        model.learn(20 * 60)
    assert model.num_timesteps < 20 * 60, "the run stopped at the periodic check, before the end of learn()"
    assert "dynamics_loss was nan" in str(info.value)


def test_finite_runs_are_untouched():
    model = make_model("dmash")
    model.learn(20 * 30)
    model.check_finite()


def test_evaluate_refuses_nan_actions():
    model = make_model("dr")
    with th.no_grad():
        for p in model.actor.parameters():
            p.fill_(float("nan"))
    with pytest.raises(aib.NonFiniteActionError, match=r"non-finite actions for sub-envs .* diverged"):
        aib.evaluate(model, "AIB-DI-v0", splits=("eval_out",), n_episodes=1)


GRID = dict(budget=8, learning_starts=10, eval_every=4, eval_episodes=1, splits=("eval_out",), hyperparams={"batch_size": 40})


def test_bench_records_diverged_runs_outside_the_tables(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    # seed 0: healthy; seed 1: a learning rate of 1e12; seed 2: a NaN observation during training
    bench.run_grid(["AIB-DI-v0"], ["dr"], [0], out, progress=False, policy_kwargs={"net_arch": [16]}, **GRID)
    hyper = {**GRID["hyperparams"], **HUGE_LR}
    del hyper["context_learning_rate"]  # dr has no context module
    summary = bench.run_grid(
        ["AIB-DI-v0"], ["dr"], [1], out, progress=False, policy_kwargs={"net_arch": [16]}, **{**GRID, "hyperparams": hyper}
    )
    assert summary.ok and list(summary.diverged) == summary.finished
    train_env = bench._train_env
    monkeypatch.setattr(bench, "_train_env", lambda spec: NaNObservation(train_env(spec), at=12))
    summary = bench.run_grid(["AIB-DI-v0"], ["dmash"], [2], out, progress=False, policy_kwargs=SMALL, **GRID)
    assert summary.ok and len(summary.diverged) == 1
    assert "DIVERGED" in summary.format() and "dynamics_loss was nan" in summary.format()

    statuses = {p["spec"]["seed"]: p["status"] for p in bench.finished_runs(out)}
    assert statuses == {0: "ok", 1: "diverged", 2: "diverged"}
    rows = bench.load_results(out)
    assert {r["seed"] for r in rows} == {0}  # only the healthy run is in results.csv
    diverged = bench.diverged_runs(out)
    assert sorted(d["seed"] for d in diverged) == [1, 2]
    assert all(d["reason"].startswith("DivergenceError") and "diverged" in d["reason"] for d in diverged)
    # a diverged run is finished: the next invocation does not train it again
    again = bench.run_grid(
        ["AIB-DI-v0"], ["dr"], [1], out, progress=False, policy_kwargs={"net_arch": [16]}, **{**GRID, "hyperparams": hyper}
    )
    assert len(again.skipped) == 1 and not again.finished and len(again.diverged) == 1
    payload = json.loads((out / "runs" / f"{again.skipped[0]}.json").read_text())
    assert payload["status"] == "diverged" and payload["reason"].startswith("DivergenceError")
