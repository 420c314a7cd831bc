"""``sb3-dmash bench`` / ``sb3_dmash.experiments.bench.run_grid``: the table, kill-and-resume, crash reports, the Ray backend.

The grid is 2 envs x 2 methods x 2 seeds (AIB-DI-v0 and AIB-ODE-v0; dmash and dr) at a tiny budget: 4 random and 8
learning vector steps, tiny networks, one scored episode per context, ``final2`` evaluations (steps 4 and 8).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sb3_dmash.experiments import bench, cli

ROOT = Path(__file__).resolve().parents[1]
ENVS = ["AIB-DI-v0", "AIB-ODE-v0"]
METHODS = ["dmash", "dr"]
SEEDS = [0, 1]
GRID = dict(
    budget=8,
    learning_starts=4,
    eval_every=4,
    eval_schedule="final2",
    eval_episodes=1,
    policy_kwargs={"net_arch": [16], "hypernet_arch": [8], "encoder_dim": 8},
    hyperparams={"batch_size": 40},
)
CLI_ARGS = [
    "bench",
    "--envs", *ENVS,
    "--methods", *METHODS,
    "--seeds", "0-1",
    "--budget", "8",
    "--learning-starts", "4",
    "--eval-every", "4",
    "--eval-schedule", "final2",
    "--eval-episodes", "1",
    "--net-arch", "16",
    "--hypernet-arch", "8",
    "--encoder-dim", "8",
    "--batch-size", "40",
    "--no-progress",
]  # fmt: skip
VOLATILE = {"commit", "sb3_dmash_version", "duration_s"}  # metadata that differs between two checkouts or runs


def result_rows(rows):
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted grid, in this process."""
    out = tmp_path_factory.mktemp("bench_reference")
    summary = bench.run_grid(ENVS, METHODS, SEEDS, out, progress=False, **GRID)
    return out, summary


def _default_sigint() -> None:
    # As a command started from a terminal: a test runner that runs in the background inherits SIGINT ignored (POSIX
    # shells start background jobs so), and Python keeps an ignored SIGINT ignored, so Ctrl-C could not be tested.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "sb3_dmash.experiments.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
        **kwargs,
    )


def test_table_schema_and_contents(reference):
    out, summary = reference
    assert summary.ok and summary.total == 8 and len(summary.finished) == 8 and not summary.skipped
    rows = bench.load_results(out / "results.csv")
    assert rows == json.loads(json.dumps(bench.load_results(out / "results.jsonl")))
    assert rows == json.loads(json.dumps(summary.rows))
    assert len(rows) == 8 * 2 * 3  # runs x evaluations (final2) x splits
    assert list(rows[0]) == list(bench.TABLE_COLUMNS)
    keys = {(r["env"], r["method"], r["seed"], r["split"], r["step"]) for r in rows}
    assert len(keys) == len(rows)
    assert {r["step"] for r in rows} == {4, 8}
    durations = {r["run_id"]: json.loads((out / "runs" / f"{r['run_id']}.json").read_text())["duration_s"] for r in rows}
    for row in rows:
        assert row["duration_s"] == pytest.approx(durations[row["run_id"]]) and row["duration_s"] > 0
        assert len(row["per_context"]) == 20
        assert row["aer"] == pytest.approx(sum(row["per_context"]) / 20)
        assert row["budget"] == 8 and row["learning_starts"] == 4 and row["n_envs"] == 20 and row["n_episodes"] == 1
        assert row["env_class"] == "non-overlap"
        assert row["timesteps"] == 20 * row["vector_step"] and row["vector_step"] == row["step"] + 4
    assert {r["method_name"] for r in rows} == {"DMA*-SH", "DR"}
    assert any(r["aer"] > 0 for r in rows if r["env"] == "AIB-ODE-v0")
    grid = json.loads((out / "grid.json").read_text())
    assert len(grid["runs"]) == 8 and grid["meta"]["budget_unit"] == "vector steps"
    assert {"commit", "versions", "command"} <= set(grid["meta"])
    assert grid["meta"]["versions"]["torch"]
    run_file = json.loads((out / "runs" / f"{rows[0]['run_id']}.json").read_text())
    assert run_file["status"] == "ok" and run_file["meta"]["commit"] == rows[0]["commit"]


def test_commit_is_dirty_only_for_changes_to_the_code(tmp_path, monkeypatch):
    """A study that writes its results into the checkout leaves the recorded commit clean; an edit of the code does not."""

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    code = tmp_path / "pkg"
    code.mkdir()
    (code / "algo.py").write_text("x = 1\n")
    (tmp_path / "results.csv").write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(bench, "_code_paths", lambda: [str(code)])
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert bench.git_commit(tmp_path) == sha
    (tmp_path / "results.csv").write_text("a\nb\n")  # a study's output
    (code / "new.py").write_text("")  # untracked
    assert bench.git_commit(tmp_path) == sha
    (code / "algo.py").write_text("x = 2\n")
    assert bench.git_commit(tmp_path) == sha + "+dirty"
    assert bench.git_commit(tmp_path / "pkg") == sha + "+dirty"


def test_finished_runs_are_not_redone(reference):
    out, summary = reference
    files = sorted((out / "runs").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = bench.run_grid(ENVS, METHODS, SEEDS, out, progress=False, **GRID)
    assert len(again.skipped) == 8 and not again.finished and again.ok
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    assert result_rows(again.rows) == result_rows(summary.rows)


def test_kill_and_resume_gives_the_uninterrupted_table(reference, tmp_path):
    _, summary = reference
    out = tmp_path / "bench"
    proc = run_cli([*CLI_ARGS, "--out", str(out)])
    runs = out / "runs"
    deadline = time.time() + 240
    first = None
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in runs.glob("*.json") if not p.name.endswith(".error.json")] if runs.exists() else []
        if done:
            first = done[0]
            break
        time.sleep(0.05)
    assert first is not None, f"no run finished before the deadline:\n{proc.communicate()[0]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    finished = [p for p in runs.glob("*.json") if not p.name.endswith(".error.json")]
    assert 1 <= len(finished) < 8, "the kill came after the grid finished"
    kept = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished}
    # every finished run file is complete JSON (atomic writes), the rest are absent
    assert all(json.loads(content)["status"] == "ok" for content, _ in kept.values())

    # restart: two worker processes this time (the local pool)
    restart = run_cli([*CLI_ARGS, "--out", str(out), "--workers", "2"])
    output, _ = restart.communicate(timeout=400)
    assert restart.returncode == 0, output
    assert f"{len(kept)} already finished, {8 - len(kept)} finished now, 0 failed" in output
    for name, (content, stamp) in kept.items():  # never redone
        assert (runs / name).read_bytes() == content and (runs / name).stat().st_mtime_ns == stamp
    resumed = bench.load_results(out)
    assert result_rows(resumed) == result_rows(json.loads(json.dumps(summary.rows)))


def test_a_crashing_run_is_reported(tmp_path, capsys):
    # batch_size 10 < n_envs 20 makes DMASHSAC (dr) raise at construction; SB3's SAC accepts it
    out = tmp_path / "crash"
    args = ["bench", "--envs", "AIB-DI-v0", "--methods", "dr", "sac", "--seeds", "0", "--budget", "4"]
    args += ["--learning-starts", "4", "--eval-every", "4", "--eval-episodes", "1", "--net-arch", "8"]
    args += ["--batch-size", "10", "--no-progress", "--splits", "eval_out", "--out", str(out)]
    assert cli.main(args) == 1
    printed = capsys.readouterr().out
    assert "1 finished now, 1 failed" in printed
    assert "FAILED AIB-DI-v0__dr__seed0" in printed and "batch_size=10 must be >= n_envs=20" in printed
    assert "Traceback (most recent call last)" in printed
    errors = list((out / "runs").glob("*.error.json"))
    assert len(errors) == 1
    payload = json.loads(errors[0].read_text())
    assert payload["status"] == "error" and "ValueError" in payload["traceback"]
    rows = bench.load_results(out)
    assert {r["method"] for r in rows} == {"sac"} and {r["split"] for r in rows} == {"eval_out"}
    # the next invocation retries the crashed run (and still reports it); the finished one is skipped
    assert cli.main(args) == 1
    assert "1 already finished, 0 finished now, 1 failed" in capsys.readouterr().out


def _children(pid: int) -> list[int]:
    """The run processes of a bench driver (Linux): its spawned children, not the resource tracker."""
    pids = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(int(child))
    return pids


def _wait_for_children(proc, n: int, timeout: float = 60.0) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        children = _children(proc.pid)
        if len(children) >= n:
            return children
        time.sleep(0.02)
    raise AssertionError(f"the driver did not start {n} run processes:\n{proc.communicate()[0]}")


DI_CLI_ARGS = [a for a in CLI_ARGS if a != "AIB-ODE-v0"]  # 4 runs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the run processes through /proc")
def test_a_killed_run_process_fails_that_run_alone(tmp_path):
    out = tmp_path / "killed"
    proc = run_cli([*DI_CLI_ARGS, "--workers", "2", "--out", str(out)])
    victim = _wait_for_children(proc, 1)[0]
    os.kill(victim, signal.SIGKILL)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 1, output
    assert "3 finished now, 1 failed" in output
    errors = list((out / "runs").glob("*.error.json"))
    assert len(errors) == 1
    assert "was killed by SIGKILL" in json.loads(errors[0].read_text())["error"]
    # the next invocation runs the killed run again, and only it
    again = run_cli([*DI_CLI_ARGS, "--workers", "2", "--out", str(out)])
    output, _ = again.communicate(timeout=400)
    assert again.returncode == 0, output
    assert "3 already finished, 1 finished now, 0 failed" in output
    assert not list((out / "runs").glob("*.error.json"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the run processes through /proc")
def test_sigterm_stops_a_study_as_ctrl_c_does(tmp_path):
    out = tmp_path / "terminated"
    args = [*DI_CLI_ARGS, "--workers", "2", "--budget", "400", "--out", str(out)]  # runs that outlast the test
    proc = run_cli(args)
    children = _wait_for_children(proc, 2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)  # the driver alone, as a scheduler or `kill PID` does
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "interrupted: 0 of 4 runs finished" in output and "run the same command again to resume" in output
    assert "Traceback" not in output
    assert not list((out / "runs").glob("*.error.json"))  # stopped runs are not failed runs
    for child in children:  # and no run goes on training without its driver
        assert not Path(f"/proc/{child}").exists() or b"Z" in Path(f"/proc/{child}/stat").read_bytes().split()[2:3]


def test_grid_validation(tmp_path):
    with pytest.raises(ValueError, match="method='dmsh' is unknown"):
        bench.run_grid(["AIB-DI-v0"], ["dmsh"], [0], tmp_path, progress=False)
    with pytest.raises(ValueError, match="not an AIB environment"):
        bench.run_grid(["AIB-Nope-v0"], ["dr"], [0], tmp_path, progress=False)
    with pytest.raises(ValueError, match="backend"):
        bench.run_grid(["AIB-DI-v0"], ["dr"], [0], tmp_path, backend="slurm", progress=False)
    with pytest.raises(ValueError, match="twice"):
        bench.run_grid(["AIB-DI-v0"], ["dr"], [0, 0], tmp_path, progress=False)


def test_specs_ids_and_env_kwargs():
    (spec,) = bench.make_grid(["AIB-ODE-v0:k=5"], ["dmash"], [3], budget=None)
    assert spec.env_kwargs == {"k": 5} and spec.budget == 100_000  # the paper's budget
    assert spec.env == "AIB-ODE-v0:k=5" and bench.env_display_name(spec.env_id, spec.env_kwargs) == "ODE-k5"
    assert spec.run_id.startswith("AIB-ODE-v0_k-5__dmash__seed3__")
    assert bench.RunSpec.from_dict(spec.to_dict()) == spec
    (other,) = bench.make_grid(["AIB-ODE-v0:k=5"], ["dmash"], [3], budget=50)
    assert other.run_id != spec.run_id  # any setting changes the id: no stale reuse
    assert cli._seeds(["0-2", "5,7"]) == [0, 1, 2, 5, 7]


def test_atomic_write_leaves_old_content_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    bench.atomic_write_text(path, "old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        bench.atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_ray_backend_gives_the_same_table(reference, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'sb3-dmash[ray]')")
    _, summary = reference
    out = tmp_path / "ray"
    # one run on a one-CPU local Ray (starting Ray dominates the cost); the same seed gives the same rows
    result = bench.run_grid(["AIB-ODE-v0"], ["dr"], [1], out, progress=False, backend="ray", workers=1, **GRID)
    assert not ray.is_initialized(), "a local Ray started by run_grid is shut down"
    assert result.ok and len(result.finished) == 1
    expected = [r for r in summary.rows if r["env"] == "AIB-ODE-v0" and r["method"] == "dr" and r["seed"] == 1]
    assert len(expected) == 6 and any(r["aer"] > 0 for r in expected)
    assert result_rows(result.rows) == result_rows(expected)
    pids = {json.loads(p.read_text())["pid"] for p in (out / "runs").glob("*.json")}
    assert os.getpid() not in pids  # the runs ran in Ray workers


def test_save_models_writes_the_trained_model(tmp_path):
    """``--save-models`` keeps each trained model; evaluating it reproduces the run's final scores."""
    import aib
    from sb3_dmash import DMASHSAC

    out = tmp_path / "models"
    grid = CLI_ARGS[CLI_ARGS.index("--budget") :]  # the shared budget, evaluation and network settings
    args = ["bench", "--envs", "AIB-DI-v0", "--methods", "dmash", "--seeds", "0", *grid, "--out", str(out)]
    assert cli.main([*args, "--save-models"]) == 0
    (run_file,) = (out / "runs").glob("*.json")
    model_file = out / "models" / run_file.with_suffix(".zip").name
    assert model_file.exists()
    model = DMASHSAC.load(model_file, device="cpu")
    final = {r["split"]: r["aer"] for r in bench.load_results(out) if r["step"] == 8}
    results = aib.evaluate(model, "AIB-DI-v0", n_episodes=1, eval_seed=1_000_000)
    assert {split: r.aer for split, r in results.items()} == pytest.approx(final, abs=1e-6)
    # a second invocation skips the finished run and does not need (or touch) the model
    model_file.unlink()
    assert cli.main([*args, "--save-models"]) == 0
    assert not model_file.exists()


def kill_after_second_checkpoint_and_resume(spec, tmp_path, monkeypatch, check_state=None, edit_checkpoint=None):
    """Train ``spec`` uninterrupted, then again killed right after its second in-run checkpoint and resumed from it;
    assert the same evaluations and the same final weights. ``check_state(model)`` runs at the kill,
    ``edit_checkpoint(snapshot_folder)`` after it."""
    import torch as th

    from sb3_dmash.experiments.run_checkpoint import RunCheckpoint

    reference, _ = bench.train_and_evaluate(spec, str(tmp_path / "reference.zip"), str(tmp_path / "ckpt_reference"))
    save, saves = RunCheckpoint.save, []

    def save_then_die(self, model, extra=None):
        path = save(self, model, extra)
        saves.append(model.num_timesteps)
        if len(saves) == 2:
            if check_state is not None:
                check_state(model)
            raise KeyboardInterrupt("killed")  # everything in memory is lost; only the files remain
        return path

    monkeypatch.setattr(RunCheckpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        bench.train_and_evaluate(spec, str(tmp_path / "resumed.zip"), str(tmp_path / "ckpt"))
    assert saves == [100 * 20, 160 * 20] and RunCheckpoint(tmp_path / "ckpt").exists()
    if edit_checkpoint is not None:
        edit_checkpoint(RunCheckpoint(tmp_path / "ckpt").latest())
    monkeypatch.setattr(RunCheckpoint, "save", save)
    resumed, _ = bench.train_and_evaluate(spec, str(tmp_path / "resumed.zip"), str(tmp_path / "ckpt"))

    assert [r["step"] for r in resumed] == [0, 60, 120, 180]
    assert resumed == reference
    algorithm = bench._algorithm_class(spec)
    a, b = (algorithm.load(tmp_path / name, device="cpu") for name in ("reference.zip", "resumed.zip"))
    assert a.num_timesteps == b.num_timesteps == 280 * 20 and a._n_updates == b._n_updates
    for (name, x), y in zip(a.policy.state_dict().items(), b.policy.state_dict().values(), strict=True):
        assert th.equal(x, y), name


def test_in_run_checkpoint_resumes_exactly(tmp_path, monkeypatch):
    """A run killed right after its second in-run checkpoint resumes from it: same evaluations, same final weights."""
    # DI episodes last 100 steps: the resume point (learning step 60) is mid-episode, and a warm-up and an episode end
    # follow it before the end of the run
    spec = bench.RunSpec(
        env_id="AIB-DI-v0", method="dmash", seed=0, budget=180, learning_starts=100, eval_every=60, eval_episodes=1,
        splits=("eval_out",), policy_kwargs=GRID["policy_kwargs"], hyperparams=GRID["hyperparams"],
    )  # fmt: skip
    kill_after_second_checkpoint_and_resume(spec, tmp_path, monkeypatch)


def test_checkpoint_from_before_the_buffer_kept_the_windows_resumes_exactly(tmp_path, monkeypatch):
    """Older checkpoints kept DMASHSAC's rollout windows with the algorithm, and their buffer had none: the resumed
    run acts on the saved windows and matches the uninterrupted one."""
    import pickle

    def make_old(snapshot):
        with open(snapshot / "replay_buffer.pkl", "rb") as f:
            buffer = pickle.load(f)
        with open(snapshot / "state.pkl", "rb") as f:
            state = pickle.load(f)
        state["attributes"]["_rollout_window"] = buffer.rollout_windows(state["attributes"]["_last_obs"])
        for key in ("_rollout_window", "_rollout_fresh", "pack_windows"):
            del buffer.__dict__[key]
        for name, obj in (("replay_buffer.pkl", buffer), ("state.pkl", state)):
            with open(snapshot / name, "wb") as f:
                pickle.dump(obj, f)

    spec = bench.RunSpec(
        env_id="AIB-DI-v0", method="dmash", seed=0, budget=180, learning_starts=100, eval_every=60, eval_episodes=1,
        splits=("eval_out",), policy_kwargs=GRID["policy_kwargs"], hyperparams=GRID["hyperparams"],
    )  # fmt: skip
    kill_after_second_checkpoint_and_resume(spec, tmp_path, monkeypatch, edit_checkpoint=make_old)


def test_checkpoints_are_removed_once_the_run_is_stored(tmp_path):
    out = tmp_path / "bench"
    args = dict(GRID, eval_schedule="every", budget=8, eval_every=4, splits=("eval_out",))
    summary = bench.run_grid(["AIB-DI-v0"], ["dr"], [0], out, progress=False, **args)
    assert summary.ok and not any((out / "checkpoints").glob("*/LATEST"))


def test_tables_keep_the_runs_of_every_invocation(tmp_path):
    out = tmp_path / "bench"
    args = dict(GRID, splits=("eval_out",))
    bench.run_grid(["AIB-DI-v0"], ["dr"], [0], out, progress=False, **args)
    summary = bench.run_grid(["AIB-DI-v0"], ["dr"], [1], out, progress=False, **args)
    assert {r["seed"] for r in summary.rows} == {0, 1}
    assert {r["seed"] for r in bench.load_results(out)} == {0, 1}
    assert {r["seed"] for r in bench.load_results(out / "results.csv")} == {0, 1}


def test_a_grid_with_other_settings_is_refused_before_it_runs(tmp_path, capsys):
    out = tmp_path / "bench"
    args = dict(GRID, splits=("eval_out",))
    bench.run_grid(["AIB-DI-v0"], ["dr"], [0], out, progress=False, **args)
    grid = (out / "grid.json").read_text()
    # another budget for the same env, method and seed: a report could not hold both runs, so none is trained
    with pytest.raises(
        ValueError, match=r"already holds a run of AIB-DI-v0 dr seed 0 with other settings .*budget 8 there, 12 here"
    ):
        bench.run_grid(["AIB-DI-v0"], ["dr"], [0, 1], out, progress=False, **{**args, "budget": 12})
    assert (out / "grid.json").read_text() == grid and len(bench.finished_runs(out)) == 1
    proc = run_cli([*CLI_ARGS, "--out", str(out), "--envs", "AIB-DI-v0", "--methods", "dr", "--seeds", "0", "--budget", "12"])
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Give this grid another --out" in output and "Traceback" not in output
    # the same settings resume as before, and other seeds or methods are welcome
    assert bench.run_grid(["AIB-DI-v0"], ["dr"], [0, 1], out, progress=False, **args).ok


def test_a_second_driver_is_refused(tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    with bench.FolderLock(out):
        with pytest.raises(bench.FolderInUseError, match=rf"in use by another sb3-dmash bench driver \(pid {os.getpid()}"):
            bench.run_grid(["AIB-DI-v0"], ["dr"], [0], out, progress=False, **GRID)
        proc = run_cli([*CLI_ARGS, "--out", str(out)])
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "in use by another sb3-dmash bench driver" in output
        assert "Traceback" not in output
    assert not (out / "runs").exists() or not list((out / "runs").iterdir())
    with bench.FolderLock(out):  # released when its holder is done
        pass


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        bench.atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_ctrl_c_says_how_to_resume(tmp_path):
    out = tmp_path / "bench"
    args = [*CLI_ARGS, "--out", str(out)]
    args[args.index("--budget") + 1] = "2000"  # long runs: the kill lands inside the first one, even on a busy machine
    args[args.index("--eval-every") + 1] = "40"
    proc = run_cli(args)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list((out / "checkpoints").glob("*/LATEST")):
        time.sleep(0.1)
    assert proc.poll() is None, f"the grid ended before its first checkpoint was seen:\n{proc.communicate()[0]}"
    assert list((out / "checkpoints").glob("*/LATEST")), "no checkpoint within 240 s"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "0 of 8 runs finished" in output and "run the same command again to resume" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--eval-every", "0", "eval_every=0 must be an integer >= 1"),
        ("--eval-episodes", "0", "eval_episodes=0 must be an integer >= 1"),
        ("--hyperparams", '{"batch_sise": 64}', "key 'batch_sise' is not accepted by DMASHSAC (did you mean 'batch_size'?)"),
        ("--policy-kwargs", '{"net_arc": [8]}', "policy_kwargs key 'net_arc' is not accepted by DMASHPolicy"),
        ("--splits", "eval", "split='eval' is not allowed"),
        ("--n-envs", "0", "n_envs=0 must be an integer >= 1"),
    ],
)
def test_settings_are_validated_before_any_run(tmp_path, capsys, flag, value, message):
    out = tmp_path / "bench"
    args = [*CLI_ARGS, "--out", str(out)]
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "runs").exists()  # refused before the first run: no run file, no error.json


def test_runs_show_their_progress(tmp_path, capsys):
    bench.run_grid(["AIB-DI-v0"], ["dr"], [0], tmp_path / "bench", progress=True, **{**GRID, "splits": ("eval_out",)})
    err = capsys.readouterr().err
    assert "[AIB-DI-v0 dr seed 0] 8/8 learning vector steps (100 %)" in err
    assert "ETA" in err and "AER at step 8: eval_out" in err


# ---------------------------------------------------------------------------------------------------------- RecurrentPPO
RPPO_ARGS = [
    "--budget", "8",
    "--learning-starts", "4",
    "--eval-every", "4",
    "--eval-episodes", "1",
    "--splits", "eval_out",
    "--net-arch", "16",
    "--batch-size", "40",
    "--hyperparams", '{"n_steps": 4}',
    "--no-progress",
]  # fmt: skip


def test_recurrent_ppo_trains_saves_and_evaluates(tmp_path):
    """``--methods recurrent_ppo``: sb3-contrib's RecurrentPPO with the same environment steps and evaluation points."""
    from sb3_contrib import RecurrentPPO

    import aib

    out = tmp_path / "rppo"
    args = ["bench", "--envs", "AIB-ODE-v0", "--methods", "recurrent_ppo", "--seeds", "0", *RPPO_ARGS, "--out", str(out)]
    assert cli.main([*args, "--save-models"]) == 0
    rows = bench.load_results(out)
    # evaluated at the learning steps of every other method; (4 + 8) vector steps x 20 sub-envs in all
    assert [(r["step"], r["vector_step"], r["timesteps"]) for r in rows] == [(0, 4, 80), (4, 8, 160), (8, 12, 240)]
    assert {r["method_name"] for r in rows} == {"RecurrentPPO"}
    (run_file,) = (out / "runs").glob("*.json")
    model = RecurrentPPO.load(out / "models" / run_file.with_suffix(".zip").name, device="cpu")
    assert model.num_timesteps == 240 and model.n_steps == 4 and model.batch_size == 40
    assert model.policy.lstm_actor.hidden_size == 16  # --net-arch sets the LSTM size too
    _, yml_kwargs = bench.recurrent_ppo_settings("AIB-ODE-v0")
    assert model.n_epochs == yml_kwargs["n_epochs"] and model.gamma == yml_kwargs["gamma"]  # the rest from the yml
    results = aib.evaluate(model, "AIB-ODE-v0", splits=("eval_out",), n_episodes=1, eval_seed=1_000_000, progress=False)
    assert results["eval_out"].per_context.tolist() == pytest.approx(rows[-1]["per_context"], abs=1e-6)


def test_recurrent_ppo_settings_are_validated(tmp_path, capsys):
    out = tmp_path / "rppo"
    base = ["bench", "--envs", "AIB-DI-v0", "--methods", "recurrent_ppo", "--seeds", "0", "--out", str(out)]
    cases = [
        # the yml's n_steps (200) does not divide a 4-step evaluation grid: refused before any run
        ([*RPPO_ARGS[: RPPO_ARGS.index("--hyperparams")], "--no-progress"], "n_steps=200 (vector steps per update) does not"),
        ([*RPPO_ARGS, "--hyperparams", '{"n_step": 4}'], "key 'n_step' is not accepted by sb3-contrib's RecurrentPPO"),
        ([*RPPO_ARGS, "--policy-kwargs", '{"lstm_size": 4}'], "policy_kwargs key 'lstm_size' is not accepted"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*base, *extra])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not (out / "runs").exists()


def test_recurrent_ppo_lstm_state_is_carried_through_the_warmup():
    """``aib.evaluate`` hands the LSTM state after the K warm-up steps to the first scored step (not zeros)."""
    import itertools

    import numpy as np

    import aib

    spec = bench.RunSpec(
        env_id="AIB-DI-v0", method="recurrent_ppo", seed=0, budget=4, learning_starts=0, eval_every=4, n_envs=2,
        policy_kwargs={"net_arch": [8]}, hyperparams={"n_steps": 4},
    )  # fmt: skip
    model = bench.build_model(spec)
    calls = []
    predict = model.predict

    def recording_predict(obs, state=None, episode_start=None, deterministic=False):
        actions, new_state = predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        calls.append((state, np.array(episode_start), new_state))
        return actions, new_state

    model.predict = recording_predict
    aib.evaluate(model, "AIB-DI-v0", splits=("eval_out",), n_episodes=1, progress=False)
    K = aib.env_info("AIB-DI-v0").history_len
    assert calls[0][0] is None and calls[0][1].all()  # the warm-up starts from a fresh state
    for (_, _, out_state), (in_state, starts, _) in itertools.pairwise(calls):
        assert not starts.any()  # never reset again, not even at the scored episode's reset
        assert all(np.array_equal(a, b) for a, b in zip(out_state, in_state, strict=True))
    # calls 0..K-1: warm-up; K: the last warm-up observation; K+1: the first scored step, after the reset
    first_scored_state = calls[K + 1][0]
    assert all(np.abs(x).max() > 0 for x in first_scored_state)
    assert len(calls) == K + 1 + aib.env_info("AIB-DI-v0").max_episode_steps


def test_recurrent_ppo_in_run_checkpoint_resumes_exactly(tmp_path, monkeypatch):
    """As test_in_run_checkpoint_resumes_exactly, for RecurrentPPO: its LSTM states are part of the snapshot."""
    # updates every 20 vector steps; the resume point (learning step 60, vector step 160) is mid-episode for DI
    spec = bench.RunSpec(
        env_id="AIB-DI-v0", method="recurrent_ppo", seed=0, budget=180, learning_starts=100, eval_every=60,
        eval_episodes=1, splits=("eval_out",), policy_kwargs={"net_arch": [16]},
        hyperparams={"n_steps": 20, "batch_size": 200},
    )  # fmt: skip

    def lstm_state_is_set(model):  # a state worth keeping
        assert all(x.abs().max() > 0 for pair in model._last_lstm_states for x in pair)

    kill_after_second_checkpoint_and_resume(spec, tmp_path, monkeypatch, lstm_state_is_set)


def test_fault_protocol_in_bench_faults_and_report(tmp_path, capsys):
    """--invert-at evaluates with the fault protocol; `sb3-dmash faults` does it for a study's saved models; the report
    adds the post-fault table and the reward traces around the fault."""
    from sb3_dmash.experiments import cli
    from sb3_dmash.experiments.report import make_report

    args = dict(GRID, eval_schedule="every", splits=("eval_out",))
    plain = bench.make_grid(["AIB-DI-v0"], ["dr"], [0], **{k: v for k, v in args.items() if k != "policy_kwargs"})[0]
    assert "invert_at" not in plain.to_dict()  # the run ids of studies without faults are unchanged
    faulted = bench.run_grid(["AIB-DI-v0"], ["dr"], [0], tmp_path / "bench", progress=False, invert_at=50, **args)
    assert faulted.ok and faulted.finished[0] != plain.run_id
    rows = bench.load_results(tmp_path / "bench" / "results.csv")
    assert {r["invert_at"] for r in rows} == {50} and all(len(r["reward_trace"]) == 100 - 26 for r in rows)
    with pytest.raises(ValueError, match=r"invert_at=90 does not fit AIB-DI-v0: it must be an integer from 24 .* to 76"):
        bench.run_grid(["AIB-DI-v0"], ["dr"], [0], tmp_path / "other", progress=False, invert_at=90, **args)

    study = tmp_path / "study"
    bench.run_grid(["AIB-DI-v0"], ["dmash", "dr"], [0, 1], study, progress=False, save_models=True, **args)
    out = tmp_path / "faults"
    assert cli.main(["faults", str(study), "--invert-at", "50", "--out", str(out), "--methods", "dr"]) == 0
    assert "2 fault evaluations" in capsys.readouterr().out
    assert cli.main(["faults", str(study), "--invert-at", "50", "--out", str(out)]) == 0
    assert "4 fault evaluations in" in (printed := capsys.readouterr().out) and "2 already done, 2 done now" in printed
    rows = bench.load_results(out)
    assert {(r["method"], r["seed"]) for r in rows} == {("dmash", 0), ("dmash", 1), ("dr", 0), ("dr", 1)}
    assert {r["step"] for r in rows} == {8}  # at the trained runs' final step
    with pytest.raises(ValueError, match=r"with other settings .*invert_at 50 there, 60 here.*Evaluate into another --out"):
        bench.evaluate_faults(study, out, invert_at=60, progress=False)  # a second fault step would pool with the first
    report = make_report(out, tmp_path / "report", reps=200)
    assert set(report.tables["faults"]["method"]) == {"dmash", "dr"}
    assert "Faults (each run's last evaluation" in report.format()
    assert (tmp_path / "report" / "fault_AIB-DI-v0.png").exists()
    assert "## Faults: actions inverted from step 50" in (tmp_path / "report" / "report.md").read_text()
