"""``sb3-dmash status``: where a bench folder stands, read from its files while a driver may be running.

A study that runs for hours in the background (``--no-progress``, a cluster job, another session) is otherwise visible
only through its files. This reads them without touching anything: the grid of the last invocation
(``grid.json``), the finished and failed run files, the newest in-run checkpoint of each run in progress (its step,
its time so far and its last evaluation) and whether a driver holds the folder's lock, and estimates the time left
from the durations of the finished runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sb3_dmash.experiments.bench import (
    SPLIT_ORDER,
    RunSpec,
    _run_path,
    env_display_name,
    load_error,
    load_run,
)


@dataclasses.dataclass
class RunProgress:
    """A run with an in-run checkpoint: how far it is."""

    spec: RunSpec
    learning_steps: int  # learning vector steps done (after the random phase)
    elapsed_s: float  # training time so far, all segments together
    last_step: int | None  # learning vector step of its last evaluation
    last_aer: dict[str, float]  # that evaluation's AER per split
    saved_at: float  # when the checkpoint was written (seconds since the epoch)

    @property
    def fraction(self) -> float:
        return min(1.0, self.learning_steps / self.spec.budget) if self.spec.budget else 1.0


@dataclasses.dataclass
class StudyStatus:
    """What a bench folder holds now; :meth:`format` gives the text ``sb3-dmash status`` prints."""

    out: Path
    specs: list[RunSpec]
    finished: list[dict[str, Any]]  # run payloads, "ok" or "diverged"
    failed: list[RunSpec]
    in_progress: list[RunProgress]
    pending: list[RunSpec]
    driver: str | None  # the lock holder's line (pid, host, start, command), None when no driver holds the folder
    workers: int
    seconds_left: float | None  # estimated run time left (all runs together), None without finished runs

    @property
    def n_diverged(self) -> int:
        return sum(p["status"] == "diverged" for p in self.finished)

    def format(self) -> str:
        lines = [
            f"{self.out}: {len(self.finished)} of {len(self.specs)} runs finished ({self.n_diverged} diverged), "
            f"{len(self.in_progress)} in progress, {len(self.failed)} failed, {len(self.pending)} not started"
        ]
        unfinished = self.in_progress or self.pending or self.failed
        if self.driver:
            lines.append(f"driver: {self.driver}")
        else:
            lines.append("driver: none running" + (" (rerun the bench command to resume)" if unfinished else ""))
        for run in self.in_progress:
            spec = run.spec
            line = (
                f"  {env_display_name(spec.env_id, spec.env_kwargs)} {spec.method} seed {spec.seed}: "
                f"{run.learning_steps:,}/{spec.budget:,} learning vector steps ({100 * run.fraction:.0f} %), "
                f"{run.elapsed_s / 60:.1f} min, checkpoint of {max(0.0, time.time() - run.saved_at) / 60:.0f} min ago"
            )
            if run.last_step is not None:
                scores = ", ".join(f"{split} {aer:.1f}" for split, aer in run.last_aer.items())
                line += f"; AER at step {run.last_step:,}: {scores}"
            lines.append(line)
        for spec in self.failed:
            lines.append(f"  FAILED {spec.run_id} (see runs/{spec.run_id}.error.json)")
        if self.seconds_left is not None and unfinished:
            hours = self.seconds_left / 3600
            lines.append(
                f"time left (estimated from the finished runs' durations per env and method): {hours:.1f} h of run "
                f"time, about {hours / max(1, self.workers):.1f} h with {self.workers} worker(s)"
            )
        return "\n".join(lines)


def _driver(out: Path) -> str | None:
    """The line of the driver holding ``out/.lock``, or None if no process holds it."""
    import fcntl

    path = out / ".lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "running (no details)"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _checkpoint_progress(out: Path, spec: RunSpec) -> RunProgress | None:
    """The progress stored in the run's newest in-run checkpoint, or None without one."""
    from sb3_dmash.experiments.run_checkpoint import RunCheckpoint

    checkpoint = RunCheckpoint(out / "checkpoints" / spec.run_id)
    for _ in range(3):  # the driver may replace the snapshot while it is read
        path = checkpoint.latest()
        if path is None:
            return None
        try:
            with open(path / "state.pkl", "rb") as f:
                state = pickle.load(f)
            break
        except (OSError, EOFError, pickle.UnpicklingError):
            continue
    else:
        return None
    extra = state.get("extra", {})
    records = extra.get("records", [])
    num_timesteps = int(path.name)
    learning_steps = max(0, num_timesteps // spec.n_envs - spec.learning_starts)
    last_step = max((r["step"] for r in records), default=None)
    last_aer = {r["split"]: float(r["aer"]) for r in records if r["step"] == last_step}
    order = {split: i for i, split in enumerate(SPLIT_ORDER)}
    last_aer = dict(sorted(last_aer.items(), key=lambda item: order.get(item[0], len(order))))
    saved_at = (path / "state.pkl").stat().st_mtime if (path / "state.pkl").exists() else 0.0
    return RunProgress(spec, learning_steps, float(extra.get("elapsed_s", 0.0)), last_step, last_aer, saved_at)


def _estimate_seconds_left(
    finished: Sequence[Mapping[str, Any]], unfinished: Sequence[RunSpec], progress: Mapping[str, RunProgress]
) -> float | None:
    """Run time left: per run, the median duration of the finished runs of its env and method (else of its method,
    else of all), scaled by its budget, minus the time it has already run."""
    by_cell: dict[tuple[str, str], list[float]] = {}
    by_method: dict[str, list[float]] = {}
    every: list[float] = []
    for payload in finished:
        spec = payload["spec"]
        per_step = float(payload.get("duration_s", 0.0)) / max(1, spec["budget"])
        by_cell.setdefault((RunSpec.from_dict(spec).env, spec["method"]), []).append(per_step)
        by_method.setdefault(spec["method"], []).append(per_step)
        every.append(per_step)
    if not every:
        return None
    total = 0.0
    for spec in unfinished:
        rates = by_cell.get((spec.env, spec.method)) or by_method.get(spec.method) or every
        expected = statistics.median(rates) * spec.budget
        run = progress.get(spec.run_id)
        total += max(0.0, expected - run.elapsed_s) if run is not None else expected
    return total


def study_status(out: str | os.PathLike) -> StudyStatus:
    """Read where the bench folder ``out`` stands (see the module docstring).

    :raises FileNotFoundError: ``out`` has no ``grid.json`` (it is not a bench folder).
    """
    out = Path(out)
    grid_file = out / "grid.json"
    if not grid_file.exists():
        raise FileNotFoundError(f"{out} is not a bench folder: it has no grid.json (sb3-dmash bench --out {out} makes one)")
    grid = json.loads(grid_file.read_text(encoding="utf-8"))
    specs = [RunSpec.from_dict({k: v for k, v in run.items() if k != "run_id"}) for run in grid["runs"]]
    finished, failed, in_progress, pending = [], [], [], []
    for spec in specs:
        payload = load_run(out, spec)
        if payload is not None:
            finished.append(payload)
            continue
        progress = _checkpoint_progress(out, spec)
        # A failed run keeps its error file until a retry finishes it: a checkpoint newer than the error is the retry
        error_file = _run_path(out, spec.run_id, error=True)
        failed_since = error_file.stat().st_mtime if load_error(out, spec) is not None else None
        if failed_since is not None and (progress is None or progress.saved_at <= failed_since):
            failed.append(spec)
        elif progress is not None:
            in_progress.append(progress)
        else:
            pending.append(spec)
    unfinished = [run.spec for run in in_progress] + failed + pending
    seconds_left = _estimate_seconds_left(finished, unfinished, {run.spec.run_id: run for run in in_progress})
    workers = int(grid.get("meta", {}).get("workers") or 1)
    return StudyStatus(out, specs, finished, failed, in_progress, pending, _driver(out), workers, seconds_left)
