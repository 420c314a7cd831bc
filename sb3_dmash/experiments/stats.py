"""Aggregate statistics of the AIB report in plain numpy (``docs/protocol.md`` §3; rliable's definitions).

* :func:`iqm`: the interquartile mean of all scores pooled (25 % trimmed from each end), exactly
  ``scipy.stats.trim_mean(x, 0.25, axis=None)`` (rliable's ``aggregate_iqm``).
* :func:`stratified_bootstrap`: resample the runs **within each task** with replacement, independently per task,
  recompute the statistic, and take the percentile interval (rliable's ``StratifiedBootstrap`` with
  ``method="percentile"``). Tasks may have different numbers of runs (a list of 1-D arrays).
* :func:`probability_of_improvement`: ``P(X > Y)`` per task (Mann-Whitney U / (n_x n_y), ties count 1/2), averaged
  over tasks, and :func:`probability_of_improvement_interval` with X's and Y's runs resampled independently within each
  task (rliable's ``StratifiedIndependentBootstrap``).

The test-suite cross-checks these against rliable 1.2.0 when it is installed (extra ``[analysis]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Scores = np.ndarray | Sequence[np.ndarray]
"""``(n_runs, n_tasks)`` or a list of per-task 1-D arrays of run scores."""


def _tasks(scores: Scores) -> list[np.ndarray]:
    if isinstance(scores, np.ndarray):
        if scores.ndim != 2:
            raise ValueError(f"scores must have shape (n_runs, n_tasks), got {scores.shape}")
        tasks = [scores[:, j].astype(float) for j in range(scores.shape[1])]
    else:
        tasks = [np.asarray(t, dtype=float).reshape(-1) for t in scores]
    if not tasks or any(t.size == 0 for t in tasks):
        raise ValueError("every task needs at least one run score")
    return tasks


def trimmed_mean_rows(x: np.ndarray, proportion: float = 0.25) -> np.ndarray:
    """Row-wise trimmed mean of a 2-D array, as ``scipy.stats.trim_mean(x, proportion, axis=1)``."""
    n = x.shape[1]
    low = int(proportion * n)
    high = n - low
    if low >= high:
        raise ValueError(f"proportion={proportion} trims all {n} values")
    part = np.partition(x, (low, high - 1), axis=1)
    return part[:, low:high].mean(axis=1)


def iqm(scores: Scores) -> float:
    """Interquartile mean of all scores pooled over runs and tasks."""
    pooled = np.concatenate(_tasks(scores))
    return float(trimmed_mean_rows(pooled[None, :])[0])


def mean(scores: Scores) -> float:
    """Mean of all scores pooled."""
    return float(np.concatenate(_tasks(scores)).mean())


STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "iqm": trimmed_mean_rows,
    "mean": lambda x: x.mean(axis=1),
    "median": lambda x: np.median(x, axis=1),
}
"""Row-wise statistics of pooled resamples ``(reps, n_pooled)``."""


def stratified_bootstrap(
    scores: Scores,
    statistics: Sequence[str] = ("iqm",),
    reps: int = 50_000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = 0,
    chunk: int = 2_000,
) -> dict[str, tuple[float, float, float]]:
    """Point estimates and percentile CIs of pooled statistics under the stratified bootstrap.

    :param scores: ``(n_runs, n_tasks)`` or a list of per-task run scores.
    :param statistics: names from :data:`STATISTICS` (``"iqm"``, ``"mean"``, ``"median"``), computed on the same
        resamples.
    :param reps: bootstrap replicates.
    :param confidence: coverage of the interval.
    :param rng: a numpy Generator or a seed.
    :param chunk: replicates drawn at once (memory: ``chunk x n_pooled`` floats).
    :return: ``{name: (point, lower, upper)}``.
    """
    tasks = _tasks(scores)
    if reps < 1:
        raise ValueError(f"reps={reps} must be >= 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    unknown = set(statistics) - set(STATISTICS)
    if unknown:
        raise ValueError(f"unknown statistics {sorted(unknown)}; expected some of {sorted(STATISTICS)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    pooled = np.concatenate(tasks)[None, :]
    points = {name: float(STATISTICS[name](pooled)[0]) for name in statistics}
    draws: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    done = 0
    while done < reps:
        size = min(chunk, reps - done)
        sample = np.concatenate([t[rng.integers(0, t.size, size=(size, t.size))] for t in tasks], axis=1)
        for name in statistics:
            draws[name].append(STATISTICS[name](sample))
        done += size
    tail = 100 * (1 - confidence) / 2
    out = {}
    for name in statistics:
        values = np.concatenate(draws[name])
        lower, upper = np.percentile(values, [tail, 100 - tail])
        out[name] = (points[name], float(lower), float(upper))
    return out


def _poi_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise P(X > Y) + P(X = Y) / 2 for resamples ``x (reps, n_x)`` and ``y (reps, n_y)``."""
    greater = (x[:, :, None] > y[:, None, :]).mean(axis=(1, 2))
    ties = (x[:, :, None] == y[:, None, :]).mean(axis=(1, 2))
    return greater + 0.5 * ties


def probability_of_improvement(scores_x: Scores, scores_y: Scores) -> float:
    """P(X > Y): per task, the Mann-Whitney U of X's runs against Y's over ``n_x n_y`` (ties 1/2), averaged over tasks."""
    tx, ty = _tasks(scores_x), _tasks(scores_y)
    if len(tx) != len(ty):
        raise ValueError(f"X has {len(tx)} tasks and Y has {len(ty)}")
    return float(np.mean([_poi_rows(a[None], b[None])[0] for a, b in zip(tx, ty, strict=True)]))


def probability_of_improvement_interval(
    scores_x: Scores,
    scores_y: Scores,
    reps: int = 2_000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = 0,
    chunk: int = 1_000,
) -> tuple[float, float, float]:
    """P(X > Y) with a percentile CI, X's and Y's runs resampled independently within each task."""
    tx, ty = _tasks(scores_x), _tasks(scores_y)
    if len(tx) != len(ty):
        raise ValueError(f"X has {len(tx)} tasks and Y has {len(ty)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    point = probability_of_improvement(tx, ty)
    values = []
    done = 0
    while done < reps:
        size = min(chunk, reps - done)
        per_task = []
        for a, b in zip(tx, ty, strict=True):
            xa = a[rng.integers(0, a.size, size=(size, a.size))]
            yb = b[rng.integers(0, b.size, size=(size, b.size))]
            per_task.append(_poi_rows(xa, yb))
        values.append(np.mean(per_task, axis=0))
        done += size
    tail = 100 * (1 - confidence) / 2
    lower, upper = np.percentile(np.concatenate(values), [tail, 100 - tail])
    return point, float(lower), float(upper)


def relative_gain(reference: float, baseline: float, decimals: int = 2) -> float:
    """The paper's gain in percent: ``(round(ref, 2) / round(base, 2) - 1) * 100`` (``nan`` for a zero baseline)."""
    ref, base = round(float(reference), decimals), round(float(baseline), decimals)
    if base == 0:
        return float("nan")
    return (ref / base - 1.0) * 100.0


def describe(values: Any) -> str:  # pragma: no cover - formatting helper
    point, lower, upper = values
    return f"{point:.2f} [{lower:.2f}, {upper:.2f}]"
