"""``sb3-dmash status``: a bench folder read while a study is under way (finished, in progress, failed, not started)."""

from __future__ import annotations

import json
import os

import pytest

from sb3_dmash.experiments import bench, cli
from sb3_dmash.experiments.run_checkpoint import RunCheckpoint
from sb3_dmash.experiments.status import study_status

SETTINGS = dict(
    budget=8,
    learning_starts=4,
    eval_every=4,
    eval_episodes=1,
    splits=("train", "eval_out"),
    policy_kwargs={"net_arch": [16]},
    hyperparams={"batch_size": 40},
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A DI folder of four DR runs: seed 0 finished, seed 1 stopped after its second checkpoint, seed 2 crashed,
    seed 3 not started (the grid of the invocation lists all four)."""
    out = tmp_path_factory.mktemp("status")
    bench.run_grid(["AIB-DI-v0"], ["dr"], [0], out, progress=False, **SETTINGS)
    specs = [bench.RunSpec(env_id="AIB-DI-v0", method="dr", seed=seed, **SETTINGS) for seed in range(4)]
    grid = json.loads((out / "grid.json").read_text())
    grid["runs"] = [{"run_id": spec.run_id, **spec.to_dict()} for spec in specs]
    (out / "grid.json").write_text(json.dumps(grid))

    save, saves = RunCheckpoint.save, []

    def save_then_stop(self, model, extra=None):
        path = save(self, model, extra)
        saves.append(model.num_timesteps)
        if len(saves) == 2:
            raise KeyboardInterrupt("stopped")
        return path

    RunCheckpoint.save = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            bench.train_and_evaluate(specs[1], None, str(out / "checkpoints" / specs[1].run_id))
    finally:
        RunCheckpoint.save = save
    bench.write_payload(out, {"status": "error", "run_id": specs[2].run_id, "spec": specs[2].to_dict(), "traceback": ""})
    return out, specs


def test_status_tells_each_run_apart(study):
    out, specs = study
    status = study_status(out)
    assert [p["run_id"] for p in status.finished] == [specs[0].run_id]
    assert [run.spec for run in status.in_progress] == [specs[1]]
    assert status.failed == [specs[2]] and status.pending == [specs[3]]
    run = status.in_progress[0]
    # checkpoints follow the evaluations: after the random phase (step 0) and at step 4 (the second)
    assert run.learning_steps == 4 and run.last_step == 4 and set(run.last_aer) == {"train", "eval_out"}
    assert run.elapsed_s > 0 and 0 < run.fraction < 1
    assert status.driver is None
    # three runs left, priced at the finished run's duration (the one in progress less its time so far)
    duration = status.finished[0]["duration_s"]
    assert status.seconds_left == pytest.approx(2 * duration + max(0.0, duration - run.elapsed_s))
    text = status.format()
    assert "1 of 4 runs finished (0 diverged), 1 in progress, 1 failed, 1 not started" in text
    assert "DI dr seed 1: 4/8 learning vector steps (50 %)" in text and "checkpoint of 0 min ago" in text
    assert "AER at step 4: train" in text
    assert f"FAILED {specs[2].run_id}" in text and "driver: none running" in text


def test_status_names_the_running_driver(study):
    out, _ = study
    with bench.FolderLock(out):
        assert f"pid {os.getpid()}" in study_status(out).driver
    assert study_status(out).driver is None


def test_a_retried_run_is_in_progress_again(study, tmp_path):
    """A failed run keeps its error file until it finishes: a checkpoint written after the error is its retry."""
    out, specs = study
    error = out / "runs" / f"{specs[1].run_id}.error.json"
    error.write_text(json.dumps({"status": "error", "run_id": specs[1].run_id, "spec": specs[1].to_dict()}))
    try:
        os.utime(error, (0, 0))  # the crash was before the checkpoint
        assert specs[1] in [run.spec for run in study_status(out).in_progress]
        os.utime(error)  # the crash was after it
        assert specs[1] in study_status(out).failed
    finally:
        error.unlink()


def test_cli_status(study, capsys):
    out, _ = study
    assert cli.main(["status", str(out)]) == 0
    assert "1 of 4 runs finished" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["status", str(out / "runs")])
    assert exit_info.value.code == 2
    assert "is not a bench folder: it has no grid.json" in capsys.readouterr().err


def test_a_finished_study_has_nothing_to_resume(study, tmp_path):
    out, specs = study
    (tmp_path / "runs").mkdir()
    done = out / "runs" / f"{specs[0].run_id}.json"
    (tmp_path / "runs" / done.name).write_text(done.read_text())
    grid = json.loads((out / "grid.json").read_text())
    grid["runs"] = grid["runs"][:1]
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    text = study_status(tmp_path).format()
    assert text.splitlines() == [f"{tmp_path}: 1 of 1 runs finished (0 diverged), 0 in progress, 0 failed, 0 not started",
                                 "driver: none running"]  # fmt: skip
