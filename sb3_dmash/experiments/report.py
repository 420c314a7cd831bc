"""``sb3-dmash report``: the paper's tables and figures from a results table (``docs/protocol.md`` §3).

1. **Per-run score** = the best of the last two evaluations: per (env, method, seed, split), the maximum AER over the
   two largest evaluation steps of that run (§7.1).
2. **Normalisation** ``(AER - lo) / (hi - lo)`` with the bounds of ``aib.env_info(env_id).return_bounds`` (0-100 DI
   family, 0-200 ODE, 0-1000 dm_control). WalkerGym and HopperGym have no known bounds: pass ``bounds=`` (CLI
   ``--bounds AIB-WalkerGym-v0=0,5000``), else ``lo = 0`` and ``hi`` = the largest AER of that env anywhere in the
   table, with a warning naming the bounds (§7.2).
3. **Per-env table**: mean AER over seeds with a 95 % bootstrap CI (runs resampled), per split.
4. **Aggregate**: per method, split and subset (All / Overlap / Non-overlap, classes from ``aib.env_info``), the IQM
   of the normalised scores pooled over seeds x envs with a 95 % stratified-bootstrap CI (runs resampled within each
   env); the "Aggregated" split treats each (env, split) pair as a task (§7.3).
5. **Gains** of the reference method (DMA*-SH) over each baseline, ``(IQM_ref / IQM_base - 1) x 100`` on two-decimal
   IQMs (the paper's rule), and the **probability of improvement** with its CI.
6. **Figures** (matplotlib, Agg): learning curves per env and the IQM bars; a markdown report ties it together.
7. **What the numbers rest on**: cells (env x method x split) with fewer than 3 seeds are warned about and their CIs
   marked (``n=1: no CI``); runs that diverged (bench folders) are listed with their reasons, since they are in no
   table. :meth:`ReportResult.format` is the terminal summary ``sb3-dmash report`` prints.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sb3_dmash.experiments import stats
from sb3_dmash.experiments.utils import require

SPLITS = ("train", "eval_in", "eval_out")
SPLIT_NAMES = {"train": "Train", "eval_in": "Eval-in", "eval_out": "Eval-out", "aggregated": "Aggregated"}
SUBSETS = ("All", "Overlap", "Non-overlap")
METHOD_ORDER = ("concat", "decision_adapter", "dr", "sac", "recurrent_ppo", "dma", "dma_pearl", "dma_star", "dmash")
MIN_SEEDS = 3
"""Cells with fewer seeds get a warning and a marked CI: a 95 % CI from 2 seeds says little, from 1 it is a point."""
DIVERGED_HEADING = "Diverged runs (left out of every table and aggregate)"


@dataclasses.dataclass
class ReportResult:
    """What :func:`make_report` produced.

    ``diverged`` lists the runs of the bench folder that diverged (``{"run_id", "env", "method", "seed", "reason"}``);
    they are in no table.
    """

    out: Path
    markdown: Path
    tables: dict[str, Any]
    figures: list[Path]
    warnings: list[str]
    diverged: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def format(self) -> str:
        """The terminal summary: the aggregate IQM table and the diverged runs."""
        parts = [format_aggregate(self.tables["aggregate"])]
        if "faults" in self.tables:
            parts.append(format_faults(self.tables["faults"]))
        if self.diverged:
            parts.append(format_diverged(self.diverged))
        return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------------------- data
Results = str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Mapping[str, Any]]
"""What a report is made from: a bench folder or results table, several of them (their rows together), or row dicts."""


def result_sources(results: Any) -> list[Path] | None:
    """The folders or tables behind ``results`` (one path, or a list of paths), or ``None`` for row dicts."""
    if isinstance(results, (str, os.PathLike)):
        return [Path(results)]
    if isinstance(results, Sequence) and results and all(isinstance(r, (str, os.PathLike)) for r in results):
        return [Path(r) for r in results]
    return None


def load_frame(results: Results) -> Any:
    """The results rows as a DataFrame: a bench folder, a CSV or JSONL table, several of them (rows concatenated), or
    a list of row dicts."""
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    from sb3_dmash.experiments.bench import load_results

    sources = result_sources(results)
    if sources is None:
        rows = [dict(r) for r in results]
    else:
        rows = []
        seen: dict[str, Path] = {}  # run id -> the source that has it
        for source in sources:
            source_rows = load_results(source)
            if not source_rows:
                raise ValueError(f"no result rows in {str(source)!r}")
            for run_id in dict.fromkeys(r.get("run_id") for r in source_rows if r.get("run_id") is not None):
                if run_id in seen:
                    raise ValueError(f"run {run_id} is in two of the results given: {seen[run_id]} and {source}")
                seen[run_id] = source
            rows += source_rows
    if not rows:
        raise ValueError(f"no result rows in {results!r}")
    frame = pd.DataFrame(rows)
    required = {"env", "method", "seed", "split", "step", "aer"}
    missing = required - set(frame.columns)
    if missing:
        raise ValueError(f"the results table lacks the columns {sorted(missing)}")
    if "env_id" not in frame:
        frame["env_id"] = frame["env"].str.split(":").str[0]
    if "env_name" not in frame:
        frame["env_name"] = frame["env"]
    if "method_name" not in frame:
        from sb3_dmash.experiments.bench import method_display_name

        frame["method_name"] = frame["method"].map(method_display_name)
    if "env_class" not in frame:
        from aib.registration import env_info

        frame["env_class"] = frame["env_id"].map(lambda e: env_info(e).env_class)
    frame["seed"] = frame["seed"].astype(int)
    frame["step"] = frame["step"].astype(int)
    frame["aer"] = frame["aer"].astype(float)
    return frame


RUN_COLUMNS = ("budget", "learning_starts", "eval_every", "eval_schedule", "n_envs", "invert_at", "n_episodes")
"""Settings of a run that the table records; two runs of one cell that differ in them are named in the error."""


def check_one_run_per_cell(frame: Any) -> None:
    """Refuse a table with two runs of one (env, method, seed): their evaluations would be pooled into one score.

    Such tables come from a grid rerun with other settings into the same folder (another budget, an ablation's
    ``--policy-kwargs`` under the same method name) or from several sources that overlap. The error names the cells,
    the run ids and the recorded settings in which they differ.
    """
    if "run_id" not in frame:
        return
    runs = frame.drop_duplicates("run_id")
    counts = runs.groupby(["env", "method", "seed"], sort=False)["run_id"].nunique()
    clashes = counts[counts > 1]
    if clashes.empty:
        return
    lines = []
    for env, method, seed in clashes.index[:5]:
        cell = runs[(runs["env"] == env) & (runs["method"] == method) & (runs["seed"] == seed)]
        differ = [
            f"{column} {sorted({str(v) for v in cell[column]})}"
            for column in RUN_COLUMNS
            if column in cell and cell[column].astype(str).nunique() > 1
        ]
        what = "; they differ in " + ", ".join(differ) if differ else " (they differ in settings the table does not record)"
        lines.append(f"  {env} {method} seed {seed}: runs {sorted(cell['run_id'])}{what}")
    more = f"\n  ... and {len(clashes) - 5} more" if len(clashes) > 5 else ""
    raise ValueError(
        f"{len(clashes)} (env, method, seed) cell(s) hold more than one run, whose evaluations would be pooled into one "
        "score:\n" + "\n".join(lines) + more + "\nReport them separately (one folder per setting) or choose with "
        "--envs/--methods."
    )


def final_scores(frame: Any) -> Any:
    """One row per (env, method, seed, split): the best AER of the run's last two evaluations (§7.1).

    Columns: the keys, ``aer`` (the score), ``step`` (the evaluation it came from), ``final_step`` (the run's last
    evaluation step), ``per_context`` (of that evaluation, when the table has it).
    """
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    keys = ["env", "method", "seed", "split"]
    out = []
    for key, group in frame.groupby(keys, sort=False):
        steps = sorted(group["step"].unique())
        last = group[group["step"].isin(steps[-2:])]
        best = last.loc[last["aer"].idxmax()]
        row = {k: v for k, v in zip(keys, key, strict=True)}
        row.update(
            env_id=best["env_id"],
            env_name=best["env_name"],
            env_class=best["env_class"],
            method_name=best["method_name"],
            aer=float(best["aer"]),
            step=int(best["step"]),
            final_step=int(steps[-1]),
            n_evaluations=len(steps),
        )
        if "per_context" in best:
            row["per_context"] = best["per_context"]
        out.append(row)
    return pd.DataFrame(out)


def normalisation_bounds(
    frame: Any, bounds: Mapping[str, tuple[float, float]] | None = None
) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Bounds per env (§7.2): the user's (keyed by env, env id or display name), the suite's, or the fallback."""
    from aib.registration import env_info

    bounds = dict(bounds or {})
    out: dict[str, tuple[float, float]] = {}
    warnings: list[str] = []
    for env, group in frame.groupby("env", sort=False):
        env_id, name = group["env_id"].iloc[0], group["env_name"].iloc[0]
        user = bounds.get(env, bounds.get(env_id, bounds.get(name)))
        known = env_info(env_id).return_bounds
        if user is not None:
            out[env] = (float(user[0]), float(user[1]))
        elif known is not None:
            out[env] = (float(known[0]), float(known[1]))
        else:
            hi = float(group["aer"].max())
            if hi <= 0:
                hi = 1.0
            out[env] = (0.0, hi)
            warnings.append(
                f"{name} ({env}) has no known return bounds; normalised with the fallback lo = 0, hi = max observed AER "
                f"= {hi:.6g} (pass --bounds {env_id}=LO,HI to set them)"
            )
    return out, warnings


def normalise(scores: Any, bounds: Mapping[str, tuple[float, float]]) -> Any:
    scores = scores.copy()
    lo = scores["env"].map(lambda e: bounds[e][0])
    hi = scores["env"].map(lambda e: bounds[e][1])
    scores["score"] = (scores["aer"] - lo) / (hi - lo)
    return scores


def _order(values: Sequence[str], order: Sequence[str]) -> list[str]:
    rank = {v: i for i, v in enumerate(order)}
    return sorted(dict.fromkeys(values), key=lambda v: (rank.get(v, len(rank)), v))


def _subset_mask(scores: Any, subset: str) -> Any:
    if subset == "All":
        return np.ones(len(scores), dtype=bool)
    return (scores["env_class"] == subset.lower()).to_numpy()


def task_scores(scores: Any, method: str, split: str, subset: str) -> tuple[list[str], list[np.ndarray]]:
    """Per task (env, or env/split for ``split="aggregated"``), the normalised run scores of ``method``."""
    sel = scores[(scores["method"] == method) & _subset_mask(scores, subset)]
    if split != "aggregated":
        sel = sel[sel["split"] == split]
    names, arrays = [], []
    for key, group in sel.groupby(["env", "split"] if split == "aggregated" else ["env"], sort=True):
        names.append("/".join(key) if isinstance(key, tuple) else key)
        arrays.append(group.sort_values("seed")["score"].to_numpy(float))
    return names, arrays


# ---------------------------------------------------------------------------------------------------------- tables
def per_env_table(scores: Any, reps: int = 10_000, seed: int = 0) -> Any:
    """Mean AER over seeds with a 95 % bootstrap CI (runs resampled), per env, method and split."""
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    rows = []
    for (env, method, split), group in scores.groupby(["env", "method", "split"], sort=False):
        values = group["aer"].to_numpy(float)
        point, lower, upper = stats.stratified_bootstrap([values], ("mean",), reps=reps, rng=seed)["mean"]
        rows.append(
            dict(
                env=env,
                env_name=group["env_name"].iloc[0],
                env_class=group["env_class"].iloc[0],
                method=method,
                method_name=group["method_name"].iloc[0],
                split=split,
                n_seeds=len(values),
                mean=point,
                ci_low=lower,
                ci_high=upper,
                std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            )
        )
    return pd.DataFrame(rows)


def aggregate_table(scores: Any, reps: int = 50_000, seed: int = 0) -> Any:
    """Normalised IQM (and mean) with 95 % stratified-bootstrap CIs per method, split and subset.

    ``min_seeds`` / ``max_seeds``: the fewest and most runs of one task (env, or env/split) in the cell; with
    ``max_seeds == 1`` the stratified bootstrap cannot move and the CI is a point.
    """
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    rows = []
    methods = _order(scores["method"].unique(), METHOD_ORDER)
    for split in (*SPLITS, "aggregated"):
        for subset in SUBSETS:
            for method in methods:
                _, arrays = task_scores(scores, method, split, subset)
                if not arrays:
                    continue
                est = stats.stratified_bootstrap(arrays, ("iqm", "mean"), reps=reps, rng=seed)
                rows.append(
                    dict(
                        split=split,
                        subset=subset,
                        method=method,
                        method_name=scores.loc[scores["method"] == method, "method_name"].iloc[0],
                        n_tasks=len(arrays),
                        n_runs=int(sum(a.size for a in arrays)),
                        min_seeds=int(min(a.size for a in arrays)),
                        max_seeds=int(max(a.size for a in arrays)),
                        iqm=est["iqm"][0],
                        iqm_low=est["iqm"][1],
                        iqm_high=est["iqm"][2],
                        mean=est["mean"][0],
                        mean_low=est["mean"][1],
                        mean_high=est["mean"][2],
                    )
                )
    return pd.DataFrame(rows)


def gain_table(aggregate: Any, reference: str = "dmash") -> Any:
    """Gains of ``reference`` over every other method: the ratio of the two-decimal IQMs, in percent (§7.3.6)."""
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    rows = []
    if aggregate.empty or reference not in set(aggregate["method"]):
        return pd.DataFrame(rows)
    for (split, subset), group in aggregate.groupby(["split", "subset"], sort=False):
        ref = group[group["method"] == reference]
        if ref.empty:
            continue
        ref_iqm = float(ref["iqm"].iloc[0])
        for _, base in group[group["method"] != reference].iterrows():
            rows.append(
                dict(
                    split=split,
                    subset=subset,
                    reference=reference,
                    baseline=base["method"],
                    baseline_name=base["method_name"],
                    reference_iqm_2dp=round(ref_iqm, 2),
                    baseline_iqm_2dp=round(float(base["iqm"]), 2),
                    gain_percent=stats.relative_gain(ref_iqm, float(base["iqm"])),
                )
            )
    return pd.DataFrame(rows)


def improvement_table(scores: Any, reference: str = "dmash", reps: int = 2_000, seed: int = 0) -> Any:
    """P(reference > baseline) with a 95 % CI, per baseline, split and subset (tasks both methods have)."""
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    rows = []
    methods = _order(scores["method"].unique(), METHOD_ORDER)
    if reference not in methods:
        return pd.DataFrame(rows)
    for split in (*SPLITS, "aggregated"):
        for subset in SUBSETS:
            ref_tasks, ref_arrays = task_scores(scores, reference, split, subset)
            ref_map = dict(zip(ref_tasks, ref_arrays, strict=True))
            for method in methods:
                if method == reference:
                    continue
                tasks, arrays = task_scores(scores, method, split, subset)
                common = [t for t in tasks if t in ref_map]
                if not common:
                    continue
                base_map = dict(zip(tasks, arrays, strict=True))
                point, lower, upper = stats.probability_of_improvement_interval(
                    [ref_map[t] for t in common], [base_map[t] for t in common], reps=reps, rng=seed
                )
                rows.append(
                    dict(
                        split=split,
                        subset=subset,
                        reference=reference,
                        baseline=method,
                        n_tasks=len(common),
                        probability=point,
                        ci_low=lower,
                        ci_high=upper,
                    )
                )
    return pd.DataFrame(rows)


def paired_table(scores: Any, reference: str = "dmash", reps: int = 10_000, seed: int = 0) -> Any:
    """``reference`` against each baseline paired by seed: per env and split, the per-seed AER differences (reference
    minus baseline, on the seeds both have), their mean with a 95 % bootstrap CI (seeds resampled) and the seeds on
    which the reference is ahead."""
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    rows = []
    methods = _order(scores["method"].unique(), METHOD_ORDER)
    if reference not in methods:
        return pd.DataFrame(rows)
    for (env, split), group in scores.groupby(["env", "split"], sort=False):
        ref = group[group["method"] == reference].set_index("seed")["aer"]
        for method in methods:
            if method == reference:
                continue
            base = group[group["method"] == method].set_index("seed")["aer"]
            seeds = sorted(set(ref.index) & set(base.index))
            if not seeds:
                continue
            diffs = np.array([ref[s] - base[s] for s in seeds], dtype=float)
            point, lower, upper = stats.stratified_bootstrap([diffs], ("mean",), reps=reps, rng=seed)["mean"]
            rows.append(
                dict(
                    env=env,
                    env_name=group["env_name"].iloc[0],
                    split=split,
                    reference=reference,
                    baseline=method,
                    seeds=" ".join(str(s) for s in seeds),
                    differences=" ".join(f"{d:+.1f}" for d in diffs),
                    n_seeds=len(seeds),
                    mean_difference=point,
                    ci_low=lower,
                    ci_high=upper,
                    reference_ahead=int((diffs > 0).sum()),
                )
            )
    return pd.DataFrame(rows)


def per_context_table(scores: Any, split: str = "eval_out") -> Any:
    """Mean over seeds of the per-context returns behind each run's score, for one split (the eval-out breakdown)."""
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    rows = []
    if "per_context" not in scores:
        return pd.DataFrame(rows)
    sel = scores[(scores["split"] == split) & scores["per_context"].notna()]
    for (env, method), group in sel.groupby(["env", "method"], sort=False):
        values = np.array([np.asarray(v, dtype=float) for v in group["per_context"]])
        for i, value in enumerate(values.mean(axis=0)):
            rows.append(dict(env=env, method=method, split=split, context=i, mean_return=float(value)))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------- checks
def seed_warnings(scores: Any, min_seeds: int = MIN_SEEDS) -> list[str]:
    """One warning per seed count below ``min_seeds``, naming the cells (env x method x split) that have it."""
    counts = scores.groupby(["env", "method", "split"], sort=False)["seed"].nunique()
    warnings = []
    for n in sorted(set(int(c) for c in counts if c < min_seeds)):
        cells = []
        for (env, method), group in counts[counts == n].groupby(level=["env", "method"], sort=False):
            splits = list(group.index.get_level_values("split"))
            every = set(scores.loc[(scores["env"] == env) & (scores["method"] == method), "split"])
            name = f"{_env_name(scores, env)} x {_method_name(scores, method)}"
            cells.append(name if set(splits) == every else f"{name} [{', '.join(splits)}]")
        what = (
            "a 95 % CI from one seed is a point (degenerate, e.g. [0.09, 0.09]); marked 'n=1: no CI'"
            if n == 1
            else f"a 95 % CI from {n} seeds says little (fewer than {min_seeds}); marked 'n={n}'"
        )
        warnings.append(
            f"only {n} seed{'s' if n > 1 else ''} in {len(counts[counts == n])} cell(s) (env x method x split): "
            f"{'; '.join(cells[:8])}{f' and {len(cells) - 8} more' if len(cells) > 8 else ''}: {what}"
        )
    return warnings


def _env_name(scores: Any, env: str) -> str:
    return str(scores.loc[scores["env"] == env, "env_name"].iloc[0])


def _method_name(scores: Any, method: str) -> str:
    return str(scores.loc[scores["method"] == method, "method_name"].iloc[0])


def bench_folder(results: Any) -> Path | None:
    """The bench folder behind ``results``: the folder itself, or the parent of a results file that has ``runs/``."""
    if not isinstance(results, (str, os.PathLike)):
        return None
    path = Path(results)
    folder = path if path.is_dir() else path.parent
    return folder if (folder / "runs").is_dir() else None


def select_runs(
    frame: Any, diverged: list[dict[str, Any]], envs: Sequence[str] | None, methods: Sequence[str] | None
) -> tuple[Any, list[dict[str, Any]]]:
    """The rows (and diverged runs) of the given envs and methods; an unknown name is a ``ValueError`` that lists the
    table's."""
    keep = np.ones(len(frame), dtype=bool)
    if envs is not None:
        names = {str(v) for column in ("env", "env_id", "env_name") for v in frame[column].unique()}
        unknown = [env for env in envs if env not in names]
        if unknown:
            raise ValueError(f"envs {unknown} are not in the results table; it has {sorted(frame['env'].unique())}")
        chosen = frame["env"].isin(envs) | frame["env_id"].isin(envs) | frame["env_name"].isin(envs)
        keep &= chosen.to_numpy()
        kept_envs = set(frame.loc[chosen, "env"])
        diverged = [run for run in diverged if run["env"] in kept_envs]
    if methods is not None:
        unknown = [method for method in methods if method not in set(frame["method"])]
        if unknown:
            raise ValueError(f"methods {unknown} are not in the results table; it has {sorted(frame['method'].unique())}")
        keep &= frame["method"].isin(methods).to_numpy()
        diverged = [run for run in diverged if run["method"] in methods]
    return frame[keep], diverged


def find_diverged(results: Any) -> list[dict[str, Any]]:
    """The diverged runs of the bench folder behind ``results`` (:func:`~sb3_dmash.experiments.bench.diverged_runs`),
    or ``[]``."""
    from sb3_dmash.experiments.bench import diverged_runs

    diverged = []
    for source in result_sources(results) or []:
        folder = bench_folder(source)
        diverged += [] if folder is None else diverged_runs(folder)
    return diverged


# ---------------------------------------------------------------------------------------------------------- terminal
def _ci_cell(point: float, lower: float, upper: float, n_min: int, n_max: int, digits: int = 2) -> str:
    """``point [lower, upper]``, marked when the cell rests on fewer than :data:`MIN_SEEDS` seeds per env."""
    if n_max <= 1:
        return f"{point:.{digits}f} (n=1: no CI)"
    text = _ci(point, lower, upper, digits)
    if n_min < MIN_SEEDS:
        n = f"{n_min}" if n_min == n_max else f"{n_min}-{n_max}"
        text += f" (n={n})"
    return text


def _text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_aggregate(aggregate: Any) -> str:
    """The aggregate table as plain text: one block per subset, a row per method, a column per split.

    A subset with the same envs as "All" is left out (its numbers are the same).
    """
    if aggregate.empty:
        return "Normalised IQM: no cells"
    splits = [s for s in (*SPLITS, "aggregated") if s in set(aggregate["split"])]
    methods = _order(aggregate["method"].unique(), METHOD_ORDER)
    all_tasks = aggregate[aggregate["subset"] == "All"].set_index(["split", "method"])["n_tasks"].sort_index()
    blocks, marked = [], False
    for subset in SUBSETS:
        cells = aggregate[aggregate["subset"] == subset]
        tasks = cells.set_index(["split", "method"])["n_tasks"].sort_index()
        if cells.empty or (subset != "All" and tasks.equals(all_tasks)):
            continue  # no env of this class, or every env is of it (the same numbers as "All")
        per_split = cells.loc[cells["split"] != "aggregated", "n_tasks"]
        n_envs = int((per_split if len(per_split) else cells["n_tasks"]).max())
        rows = []
        for method in methods:
            sel = cells[cells["method"] == method].set_index("split")
            if sel.empty:
                continue
            lo, hi = int(sel["min_seeds"].min()), int(sel["max_seeds"].max())
            row = [sel["method_name"].iloc[0], str(lo) if lo == hi else f"{lo}-{hi}"]
            for split in splits:
                if split not in sel.index:
                    row.append("-")
                    continue
                r = sel.loc[split]
                row.append(_ci_cell(r["iqm"], r["iqm_low"], r["iqm_high"], int(r["min_seeds"]), int(r["max_seeds"])))
                marked |= int(r["min_seeds"]) < MIN_SEEDS
            rows.append(row)
        title = f"Normalised IQM [95 % CI], {subset} ({n_envs} env{'s' if n_envs != 1 else ''})"
        blocks.append(title + "\n" + _text_table(["Method", "Seeds/env", *[SPLIT_NAMES[s] for s in splits]], rows))
    text = "\n\n".join(blocks)
    if marked:
        text += f"\n(n=K: only K seeds in some env of the cell, fewer than {MIN_SEEDS}: the CI says little; n=1: no CI at all)"
    return text


def format_diverged(diverged: Sequence[Mapping[str, Any]]) -> str:
    """The diverged runs, one line each with the reason."""
    lines = [f"{DIVERGED_HEADING}: {len(diverged)}"]
    for d in diverged:
        lines.append(f"  {d['env']} {d['method']} seed {d['seed']} ({d['run_id']}): {d['reason'] or 'no reason stored'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- figures
def _figure(width: float, height: float) -> Any:
    require("matplotlib", "analysis")  # a clear error without sb3-dmash[analysis]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def method_color(method: str) -> str:
    """The colour of a method in every figure (fixed by its place in :data:`METHOD_ORDER`, so that a method keeps its
    colour whichever other methods a figure shows)."""
    palette = ("tab:blue", "tab:olive", "tab:orange", "tab:gray", "tab:green", "tab:brown", "tab:pink", "tab:red")
    palette += ("tab:purple", "tab:cyan")
    index = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(map(ord, method))
    return palette[index % len(palette)]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _plot_per_env(
    rows: Any,
    out: Path,
    prefix: str,
    splits: Sequence[str],
    draw: Callable[[Any, Any, str], None],
    xlabel: str,
    ylabel: str,
    vline: float | None = None,
) -> list[Path]:
    """One PNG per env (``<prefix>_<env>.png``), one panel per split present, ``draw(ax, method_rows, colour)`` per
    method;
    ``vline``: x of a dashed vertical marker in every panel."""
    paths = []
    methods = _order(rows["method"].unique(), METHOD_ORDER)
    for env, env_rows in rows.groupby("env", sort=False):
        present = set(env_rows["split"])
        env_splits = [s for s in splits if s in present]
        fig = _figure(4.2 * len(env_splits), 3.4)
        axes = fig.subplots(1, len(env_splits), squeeze=False)[0]
        for ax, split in zip(axes, env_splits, strict=True):
            for method in methods:
                method_rows = env_rows[(env_rows["method"] == method) & (env_rows["split"] == split)]
                if not method_rows.empty:
                    draw(ax, method_rows, method_color(method))
            if vline is not None:
                ax.axvline(vline, color="k", linewidth=0.8, linestyle="--")
            ax.set_title(f"{env_rows['env_name'].iloc[0]} - {SPLIT_NAMES.get(split, split)}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize="small")
        fig.tight_layout()
        path = out / f"{prefix}_{_slug(env)}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def plot_learning_curves(frame: Any, out: Path) -> list[Path]:
    """One PNG per env: mean AER over seeds against learning vector steps, per split, with a 95 % normal band."""

    def draw(ax: Any, rows: Any, color: str) -> None:
        curve = rows.groupby("step")["aer"].agg(["mean", "std", "count"]).sort_index()
        half = 1.96 * curve["std"].fillna(0.0) / np.sqrt(curve["count"])
        ax.plot(curve.index, curve["mean"], marker="o", markersize=3, color=color, label=rows["method_name"].iloc[0])
        ax.fill_between(curve.index, curve["mean"] - half, curve["mean"] + half, color=color, alpha=0.2)

    splits = [*SPLITS, *sorted(set(frame["split"]) - set(SPLITS))]
    return _plot_per_env(frame, out, "curves", splits, draw, "learning vector steps", "AER")


# ---------------------------------------------------------------------------------------------------------- faults
def has_faults(frame: Any) -> bool:
    """Whether the table comes from the fault protocol (``bench --invert-at``, ``sb3-dmash faults``)."""
    return "invert_at" in frame and bool(frame["invert_at"].notna().any())


def _final_fault_rows(frame: Any) -> Any:
    """The last evaluation of each run (env, method, seed, split) that has fault columns."""
    rows = frame[frame["invert_at"].notna()]
    last = rows.groupby(["env", "method", "seed"])["step"].transform("max")
    return rows[rows["step"] == last]


def fault_table(frame: Any, reps: int = 10_000, seed: int = 0) -> Any:
    """Per env, method and split, over seeds (each run's last evaluation): the post-fault return (the AER of the steps
    from the fault on) and each run's median recovery time, as means with 95 % bootstrap CIs, and the share of
    censored episodes (not recovered before the episode ends; they count at their censoring time, so a recovery time
    is a lower bound where that share exceeds one half)."""
    pd = require("pandas", "analysis")  # a clear error without sb3-dmash[analysis]

    rows = []
    for (env, method, split), group in _final_fault_rows(frame).groupby(["env", "method", "split"], sort=False):
        row: dict[str, Any] = dict(
            env=env,
            env_name=group["env_name"].iloc[0],
            method=method,
            method_name=group["method_name"].iloc[0],
            split=split,
            invert_at=int(group["invert_at"].iloc[0]),
            n_seeds=len(group),
        )
        for column, name in (("return_before", "before"), ("return_after", "after"), ("recovery_median", "recovery")):
            values = group[column].to_numpy(float)
            values = values[np.isfinite(values)]
            if len(values):
                point, lower, upper = stats.stratified_bootstrap([values], ("mean",), reps=reps, rng=seed)["mean"]
            else:
                point = lower = upper = float("nan")
            row.update({name: point, f"{name}_ci_low": lower, f"{name}_ci_high": upper})
        row["censored"] = float(group["recovery_censored"].astype(float).mean())
        row["no_recovery_time"] = float(group["recovery_undefined"].astype(float).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _fault_ci(r: Any, name: str) -> str:
    """A fault-table cell: the mean with its CI, or the bare value of a single seed (a one-seed CI is a point)."""
    point = getattr(r, name)
    if r.n_seeds < 2:
        return f"{point:.1f}"
    return _ci(point, getattr(r, f"{name}_ci_low"), getattr(r, f"{name}_ci_high"), 1)


def _recovery_text(r: Any) -> str:
    if not np.isfinite(r.recovery):
        return "none: no reward before the fault"
    return f"{_fault_ci(r, 'recovery')} steps, {100 * r.censored:.0f} % censored"


def format_faults(faults: Any) -> str:
    """The fault table for the terminal: post-fault return and recovery time per env, split and method."""
    lines = ["Faults (each run's last evaluation; means over seeds with 95 % CIs)"]
    for r in faults.itertuples():
        lines.append(
            f"  {r.env_name:<12} {SPLIT_NAMES.get(r.split, r.split):<9} {r.method_name:<13} n={r.n_seeds}  "
            f"after the fault {_fault_ci(r, 'after')}  "
            f"recovery {_recovery_text(r)}"
        )
    return "\n".join(lines)


def plot_fault_traces(frame: Any, out: Path) -> list[Path]:
    """One PNG per env: the mean reward per step around the fault (each run's last evaluation), per method and split,
    with a 95 % normal band over seeds; step 0 is the first step with inverted actions."""

    def draw(ax: Any, rows: Any, color: str) -> None:
        traces = np.array([json.loads(t) if isinstance(t, str) else t for t in rows["reward_trace"]], dtype=float)
        x = np.arange(traces.shape[1]) + int(rows["reward_trace_start"].iloc[0]) - int(rows["invert_at"].iloc[0])
        mean = traces.mean(axis=0)
        half = 1.96 * traces.std(axis=0, ddof=1) / np.sqrt(len(traces)) if len(traces) > 1 else np.zeros_like(mean)
        label = f"{rows['method_name'].iloc[0]} ({len(traces)} seed{'s' * (len(traces) > 1)})"
        ax.plot(x, mean, color=color, label=label)
        ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2)

    xlabel = "steps since the fault (actions inverted from 0)"
    return _plot_per_env(_final_fault_rows(frame), out, "fault", SPLITS, draw, xlabel, "mean reward per step", vline=0)


def _fault_markdown(faults: Any) -> list[str]:
    header = ["Env", "Split", "Method", "Seeds", "Return before the fault", "Return after the fault (post-fault AER)",
              "Recovery time (steps)", "Censored", "No pre-fault reward"]  # fmt: skip
    rows = [
        [
            r.env_name,
            SPLIT_NAMES.get(r.split, r.split),
            r.method_name,
            r.n_seeds,
            _fault_ci(r, "before"),
            _fault_ci(r, "after"),
            _fault_ci(r, "recovery") if np.isfinite(r.recovery) else "none",
            f"{100 * r.censored:.0f} %" if np.isfinite(r.censored) else "-",
            f"{100 * r.no_recovery_time:.0f} %",
        ]
        for r in faults.itertuples()
    ]
    invert_at = ", ".join(str(v) for v in sorted(faults["invert_at"].unique()))
    return [
        f"## Faults: actions inverted from step {invert_at} of each scored episode",
        "",
        "Means over seeds of each run's last evaluation, 95 % bootstrap CIs (none for a single seed). Recovery time: "
        "steps from the fault until "
        "the reward averaged over K steps is back to 90 % of its level in the K steps before the fault (per episode; the "
        "run's median; censored episodes count at their censoring time). 'No pre-fault reward': episodes without reward "
        "before the fault, which have no recovery time.",
        "",
        _markdown_table(header, rows),
        "",
    ]


def plot_iqm_bars(aggregate: Any, out: Path) -> Path:
    """Grouped bars: normalised IQM with its 95 % CI per subset and method, one panel per split."""
    splits = [s for s in (*SPLITS, "aggregated") if s in set(aggregate["split"])]
    methods = _order(aggregate["method"].unique(), METHOD_ORDER)
    fig = _figure(4.2 * len(splits), 3.6)
    axes = fig.subplots(1, len(splits), squeeze=False, sharey=True)[0]
    width = 0.8 / max(1, len(methods))
    for ax, split in zip(axes, splits, strict=True):
        for m, method in enumerate(methods):
            xs, ys, errs = [], [], [[], []]
            for s, subset in enumerate(SUBSETS):
                row = aggregate[
                    (aggregate["split"] == split) & (aggregate["subset"] == subset) & (aggregate["method"] == method)
                ]
                if row.empty:
                    continue
                r = row.iloc[0]
                xs.append(s + (m - (len(methods) - 1) / 2) * width)
                ys.append(r["iqm"])
                errs[0].append(r["iqm"] - r["iqm_low"])
                errs[1].append(r["iqm_high"] - r["iqm"])
            if xs:
                name = aggregate.loc[aggregate["method"] == method, "method_name"].iloc[0]
                ax.bar(xs, ys, width, yerr=np.array(errs), capsize=2, color=method_color(method), label=name)
        ax.set_xticks(range(len(SUBSETS)))
        ax.set_xticklabels(SUBSETS)
        ax.set_title(SPLIT_NAMES[split])
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("normalised IQM")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    path = out / "iqm.png"
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------------------------------------- markdown
def _ci(point: float, lower: float, upper: float, digits: int = 2) -> str:
    return f"{point:.{digits}f} [{lower:.{digits}f}, {upper:.{digits}f}]"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _meta_lines(results: Any, frame: Any) -> list[str]:
    lines = []
    for source in result_sources(results) or []:
        grid = source / "grid.json" if source.is_dir() else source.parent / "grid.json"
        if grid.exists():
            meta = json.loads(grid.read_text(encoding="utf-8")).get("meta", {})
            lines.append(f"- command: `{meta.get('command', '?')}`")
            lines.append(f"- versions: {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}")
    if "commit" in frame:  # which code produced how many runs
        runs = frame.drop_duplicates("run_id") if "run_id" in frame else frame
        counts = runs.dropna(subset=["commit"]).groupby("commit").size()
        what = "runs" if "run_id" in frame else "rows"
        lines.append(f"- commit(s) ({what}): " + ", ".join(f"{commit} ({n})" for commit, n in sorted(counts.items())))
    for column, label in (
        ("budget", "budget(s), vector steps"),
        ("n_episodes", "episodes per context"),
    ):
        if column in frame:
            values = sorted({str(v) for v in frame[column].dropna()})
            lines.append(f"- {label}: {', '.join(values)}")
    return lines


def _duration_text(seconds: Any) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _per_run_markdown(frame: Any, scores: Any, names: Mapping[str, str], methods: Sequence[str]) -> list[str]:
    """Per env, one row per run: its score on each split, its wall-clock and the commit it ran from."""
    splits = [s for s in SPLITS if s in set(scores["split"])]
    runs = frame.drop_duplicates(["env", "method", "seed"]).set_index(["env", "method", "seed"])
    parts = ["## Per-run scores (best of the last two evaluations)", ""]
    for env, env_scores in scores.groupby("env", sort=False):
        parts += [f"### {env_scores['env_name'].iloc[0]}", ""]
        rows = []
        for method in methods:
            for seed in sorted(env_scores.loc[env_scores["method"] == method, "seed"].unique()):
                cell = env_scores[(env_scores["method"] == method) & (env_scores["seed"] == seed)].set_index("split")
                run = runs.loc[(env, method, seed)]
                duration = run.get("duration_s")
                commit = run.get("commit")
                rows.append(
                    [names[method], int(seed)]
                    + [f"{cell.loc[s, 'aer']:.1f}" if s in cell.index else "-" for s in splits]
                    + [
                        _duration_text(duration),
                        f"`{str(commit)[:7]}{'+dirty' if str(commit).endswith('+dirty') else ''}`"
                        if isinstance(commit, str)
                        else "-",
                    ]
                )
        parts += [_markdown_table(["Method", "Seed", *[SPLIT_NAMES[s] for s in splits], "Wall-clock", "Commit"], rows), ""]
    return parts


def _paired_markdown(paired: Any, names: Mapping[str, str], reference: str) -> list[str]:
    if paired is None or paired.empty:
        return []
    rows = [
        [
            r["env_name"],
            SPLIT_NAMES.get(r["split"], r["split"]),
            names.get(r["baseline"], r["baseline"]),
            r["differences"],
            _ci_cell(r["mean_difference"], r["ci_low"], r["ci_high"], int(r["n_seeds"]), int(r["n_seeds"]), 1),
            f"{r['reference_ahead']} of {r['n_seeds']} seeds",
        ]
        for _, r in paired.iterrows()
    ]
    header = ["Env", "Split", "Baseline", "per-seed differences", "mean [95 % CI]", "ahead on"]
    title = f"## {names.get(reference, reference)} against each baseline, paired by seed (AER difference)"
    return [title, "", _markdown_table(header, rows), ""]


def write_markdown(
    path: Path,
    results: Any,
    frame: Any,
    scores: Any,
    per_env: Any,
    aggregate: Any,
    gains: Any,
    improvement: Any,
    bounds: Mapping[str, tuple[float, float]],
    warnings: Sequence[str],
    figures: Sequence[Path],
    reps: int,
    reference: str,
    diverged: Sequence[Mapping[str, Any]] = (),
    faults: Any = None,
    paired: Any = None,
) -> None:
    methods = _order(scores["method"].unique(), METHOD_ORDER)
    names = {m: scores.loc[scores["method"] == m, "method_name"].iloc[0] for m in methods}
    parts = ["# AIB report", ""]
    parts += [
        "- source: " + (", ".join(f"`{source}`" for source in result_sources(results) or []) or "rows"),
        f"- environments: {', '.join(dict.fromkeys(scores['env_name']))}",
        f"- methods: {', '.join(names[m] for m in methods)}",
        f"- seeds per run cell: {scores.groupby(['env', 'method', 'split'])['seed'].nunique().min()}"
        f"-{scores.groupby(['env', 'method', 'split'])['seed'].nunique().max()}",
        *_meta_lines(results, frame),
        "- per-run score: best AER of the last two evaluations; normalised (AER - lo) / (hi - lo) with bounds "
        + ", ".join(f"{env} [{lo:g}, {hi:g}]" for env, (lo, hi) in bounds.items()),
        f"- IQM over seeds x envs with 95 % stratified-bootstrap CIs ({reps} replicates, percentile method)",
        "",
    ]
    if warnings:
        parts += ["**Warnings**", "", *[f"- {w}" for w in warnings], ""]
    if diverged:
        parts += [f"## {DIVERGED_HEADING}", ""]
        parts += [
            f"- `{d['run_id']}`: {d['env']}, {names.get(d['method'], d['method'])}, seed {d['seed']}: "
            f"{d['reason'] or 'no reason stored'}"
            for d in diverged
        ]
        parts.append("")
    if faults is not None:
        parts += _fault_markdown(faults)
    parts += ["## Aggregate normalised IQM", ""]
    header = ["Split", "Subset", *[names[m] for m in methods]]
    rows, marked = [], False
    for split in (*SPLITS, "aggregated"):
        for subset in SUBSETS:
            cells = aggregate[(aggregate["split"] == split) & (aggregate["subset"] == subset)]
            if cells.empty:
                continue
            by_method = {r["method"]: r for _, r in cells.iterrows()}
            row = [SPLIT_NAMES[split], subset]
            for m in methods:
                r = by_method.get(m)
                if r is None:
                    row.append("-")
                    continue
                row.append(_ci_cell(r["iqm"], r["iqm_low"], r["iqm_high"], int(r["min_seeds"]), int(r["max_seeds"])))
                marked |= int(r["min_seeds"]) < MIN_SEEDS
            rows.append(row)
    parts += [_markdown_table(header, rows), ""]
    if marked:
        parts += [
            f"*n=K*: only K seeds in some env of the cell, fewer than {MIN_SEEDS}: the CI says little; *n=1: no CI*: "
            "one seed per env, the bootstrap cannot move.",
            "",
        ]
    if not gains.empty:
        baselines = list(dict.fromkeys(gains["baseline"]))
        parts += [
            f"## Relative gain of {names.get(reference, reference)} (ratio of two-decimal IQMs, %)",
            "",
            _markdown_table(
                ["Split", "Subset", *[f"vs {names.get(b, b)}" for b in baselines]],
                [
                    [SPLIT_NAMES[split], subset]
                    + [
                        f"{g:.1f} %" if np.isfinite(g) else "n/a"
                        for g in (
                            group.set_index("baseline").reindex(baselines)["gain_percent"].to_numpy(float)
                            if not group.empty
                            else []
                        )
                    ]
                    for (split, subset), group in gains.groupby(["split", "subset"], sort=False)
                ],
            ),
            "",
        ]
    if not improvement.empty:
        parts += [f"## Probability of improvement of {names.get(reference, reference)}", ""]
        parts += [
            _markdown_table(
                ["Split", "Subset", "Baseline", "P(improvement) [95 % CI]", "tasks"],
                [
                    [
                        SPLIT_NAMES[r["split"]],
                        r["subset"],
                        names.get(r["baseline"], r["baseline"]),
                        _ci(r["probability"], r["ci_low"], r["ci_high"]),
                        r["n_tasks"],
                    ]
                    for _, r in improvement.iterrows()
                ],
            ),
            "",
        ]
    parts += _paired_markdown(paired, names, reference)
    parts += _per_run_markdown(frame, scores, names, methods)
    parts += ["## Per-environment AER (mean over seeds [95 % CI])", ""]
    for split in [s for s in (*SPLITS, *sorted(set(per_env["split"]) - set(SPLITS))) if s in set(per_env["split"])]:
        sel = per_env[per_env["split"] == split]
        parts += [f"### {SPLIT_NAMES.get(split, split)}", ""]
        rows = []
        for _, group in sel.groupby("env", sort=False):
            by_method = {r["method"]: r for _, r in group.iterrows()}
            rows.append(
                [group["env_name"].iloc[0], group["env_class"].iloc[0]]
                + [
                    "-"
                    if m not in by_method
                    else _ci_cell(
                        by_method[m]["mean"],
                        by_method[m]["ci_low"],
                        by_method[m]["ci_high"],
                        int(by_method[m]["n_seeds"]),
                        int(by_method[m]["n_seeds"]),
                        1,
                    )
                    for m in methods
                ]
            )
        parts += [_markdown_table(["Env", "Class", *[names[m] for m in methods]], rows), ""]
    if figures:
        parts += ["## Figures", ""]
        parts += [f"![{p.stem}]({p.name})" for p in figures]
        parts.append("")
    path.write_text("\n".join(parts), encoding="utf-8")


def make_report(
    results: Results,
    out: str | os.PathLike,
    reps: int = 50_000,
    seed: int = 0,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    reference: str = "dmash",
    plots: bool = True,
    per_env_reps: int | None = None,
    improvement_reps: int | None = None,
    envs: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> ReportResult:
    """Build the report of a results table into ``out``.

    Writes ``scores.csv`` (per-run scores, raw and normalised), ``per_env.csv``, ``aggregate.csv``, ``gains.csv``,
    ``improvement.csv``, ``paired.csv`` (the reference against each baseline, paired by seed),
    ``per_context_eval_out.csv``, the PNG figures and ``report.md``.

    :param results: a bench folder, ``results.csv``/``results.jsonl``, a list of them (their rows together: a study and
        a baseline run apart, say), or a list of row dicts. For a bench folder (or a table inside one) the diverged
        runs of its ``runs/`` are listed in the report and in ``ReportResult.diverged``. Each (env, method, seed) must
        have one run (:func:`check_one_run_per_cell`).
    :param out: the report folder.
    :param reps: bootstrap replicates of the aggregate CIs (rliable's default 50,000).
    :param seed: bootstrap seed (every cell uses a fresh generator from it: results do not depend on the order).
    :param bounds: normalisation bounds per env (key: env, env id or display name).
    :param reference: the method whose gains and probabilities of improvement are reported.
    :param plots: write the PNG figures.
    :param per_env_reps: replicates of the per-env CIs (default ``min(reps, 10000)``).
    :param improvement_reps: replicates of the P(improvement) CIs (default ``min(reps, 2000)``).
    :param envs: report only these envs (env keys such as ``AIB-ODE-v0:k=5``, ids or display names); default all.
    :param methods: report only these methods; default all.
    """
    out = Path(out)
    diverged = find_diverged(results)
    try:
        frame = load_frame(results)
    except ValueError as exc:
        if diverged and "no result rows" in str(exc):
            raise ValueError(f"{exc}; every finished run diverged:\n{format_diverged(diverged)}") from None
        raise
    frame, diverged = select_runs(frame, diverged, envs, methods)
    check_one_run_per_cell(frame)
    out.mkdir(parents=True, exist_ok=True)
    scores = final_scores(frame)
    env_bounds, warnings = normalisation_bounds(frame, bounds)
    scores = normalise(scores, env_bounds)
    warnings += seed_warnings(scores)
    if diverged:
        warnings.append(
            f"{len(diverged)} run(s) diverged and are left out of every table and aggregate (listed in the report)"
        )
    finals = scores.groupby("env")["final_step"].nunique()
    for env in finals[finals > 1].index:
        steps = sorted(int(v) for v in scores.loc[scores["env"] == env, "final_step"].unique())
        warnings.append(f"{env}: runs end at different evaluation steps {steps}; unfinished or mixed-budget runs are compared")
    per_env = per_env_table(scores, reps=per_env_reps or min(reps, 10_000), seed=seed)
    aggregate = aggregate_table(scores, reps=reps, seed=seed)
    gains = gain_table(aggregate, reference)
    improvement = improvement_table(scores, reference, reps=improvement_reps or min(reps, 2_000), seed=seed)
    per_context = per_context_table(scores)
    paired = paired_table(scores, reference, reps=per_env_reps or min(reps, 10_000), seed=seed)
    tables = {
        "scores": scores,
        "per_env": per_env,
        "aggregate": aggregate,
        "gains": gains,
        "improvement": improvement,
        "paired": paired,
        "per_context_eval_out": per_context,
    }
    if has_faults(frame):
        tables["faults"] = fault_table(frame, reps=per_env_reps or min(reps, 10_000), seed=seed)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    figures: list[Path] = []
    if plots:
        figures.append(plot_iqm_bars(aggregate, out))
        figures.extend(plot_learning_curves(frame, out))
        if has_faults(frame):
            figures.extend(plot_fault_traces(frame, out))
    markdown = out / "report.md"
    write_markdown(
        markdown,
        results,
        frame,
        scores,
        per_env,
        aggregate,
        gains,
        improvement,
        env_bounds,
        warnings,
        figures,
        reps,
        reference,
        diverged,
        tables.get("faults"),
        paired,
    )
    return ReportResult(out, markdown, tables, figures, warnings, diverged)
