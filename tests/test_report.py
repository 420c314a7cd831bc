"""``sb3-dmash report`` on a synthetic results table: per-run scores, normalisation, IQM and its stratified-bootstrap
CIs (checked against scipy's ``trim_mean``, a hand computation, a separately written bootstrap, and rliable when it
is installed), the paper's gain rule, the probability of improvement, and the files of the report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import trim_mean

from sb3_dmash.experiments import bench, cli, stats
from sb3_dmash.experiments.report import final_scores, load_frame, make_report, normalisation_bounds

ENVS = {  # env id -> (class, bounds hi or None, mean return per method)
    "AIB-DI-v0": ("non-overlap", 100.0, {"dmash": 70, "dr": 35, "concat": 60}),
    "AIB-DIFriction-v0": ("overlap", 100.0, {"dmash": 72, "dr": 70, "concat": 66}),
    "AIB-ODE-v0": ("non-overlap", 200.0, {"dmash": 150, "dr": 90, "concat": 120}),
    "AIB-WalkerGym-v0": ("overlap", None, {"dmash": 3000, "dr": 2800, "concat": 2900}),
}
METHODS = ("dmash", "dr", "concat")
SEEDS = range(6)
SPLITS = ("train", "eval_in", "eval_out")
STEPS = (0, 5000, 10000)


def synthetic_rows() -> list[dict]:
    rng = np.random.default_rng(42)
    rows = []
    for env, (_, _, means) in ENVS.items():
        for method in METHODS:
            for seed in SEEDS:
                for s, split in enumerate(SPLITS):
                    for step in STEPS:
                        base = means[method] * (1.0 - 0.15 * s) * (0.6 + 0.2 * STEPS.index(step))
                        per_context = base + rng.normal(0, 0.05 * means[method], size=20)
                        aer = float(per_context.mean())
                        if step == 0:
                            aer = 10.0 * means[method]  # a huge early value must not count (only the last two do)
                        rows.append(
                            dict(
                                env=env,
                                env_id=env,
                                method=method,
                                seed=seed,
                                split=split,
                                step=step,
                                aer=aer,
                                per_context=[float(v) for v in per_context],
                                n_episodes=10,
                                budget=10000,
                            )
                        )
    return rows


@pytest.fixture(scope="module")
def rows():
    return synthetic_rows()


@pytest.fixture(scope="module")
def report(rows, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return make_report(rows, out, reps=2000, seed=0)


def by_hand_scores(rows, split: str, method: str, envs) -> np.ndarray:
    """(n_seeds, n_envs) normalised best-of-last-two scores, computed directly from the rows."""
    hi_fallback = {env: max(r["aer"] for r in rows if r["env"] == env) for env in ENVS}
    matrix = np.zeros((len(SEEDS), len(envs)))
    for j, env in enumerate(envs):
        hi = ENVS[env][1] or hi_fallback[env]
        for i, seed in enumerate(SEEDS):
            last_two = [
                r["aer"]
                for r in rows
                if r["env"] == env
                and r["method"] == method
                and r["seed"] == seed
                and r["split"] == split
                and r["step"] >= 5000
            ]
            assert len(last_two) == 2
            matrix[i, j] = max(last_two) / hi
    return matrix


def hand_iqm(values: np.ndarray) -> float:
    x = np.sort(values.reshape(-1))
    cut = len(x) // 4
    return float(x[cut : len(x) - cut].mean())


def loop_bootstrap_iqm(matrix: np.ndarray, reps: int, seed: int) -> tuple[float, float]:
    """A separately written stratified bootstrap: Python loops, its own random stream."""
    rng = np.random.RandomState(seed)
    n_runs, n_tasks = matrix.shape
    values = []
    for _ in range(reps):
        sample = np.empty_like(matrix)
        for j in range(n_tasks):
            sample[:, j] = matrix[rng.randint(0, n_runs, n_runs), j]
        values.append(hand_iqm(sample))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def test_best_of_last_two_and_normalisation(rows):
    frame = load_frame(rows)
    scores = final_scores(frame)
    assert len(scores) == len(ENVS) * len(METHODS) * len(SEEDS) * len(SPLITS)
    assert set(scores["final_step"]) == {10000} and set(scores["step"]) <= {5000, 10000}
    bounds, warnings = normalisation_bounds(frame)
    assert bounds["AIB-DI-v0"] == (0.0, 100.0) and bounds["AIB-ODE-v0"] == (0.0, 200.0)
    walker_max = max(r["aer"] for r in rows if r["env"] == "AIB-WalkerGym-v0")
    assert bounds["AIB-WalkerGym-v0"] == (0.0, walker_max)
    assert len(warnings) == 1 and "WalkerGym" in warnings[0] and f"{walker_max:.6g}" in warnings[0]
    user, warnings = normalisation_bounds(frame, {"AIB-WalkerGym-v0": (0.0, 5000.0)})
    assert user["AIB-WalkerGym-v0"] == (0.0, 5000.0) and not warnings


def test_aggregate_iqm_and_cis_against_independent_computations(rows, report):
    aggregate = report.tables["aggregate"]
    envs = sorted(ENVS)
    for split in SPLITS:
        for method in METHODS:
            matrix = by_hand_scores(rows, split, method, envs)
            row = aggregate[(aggregate["split"] == split) & (aggregate["subset"] == "All") & (aggregate["method"] == method)]
            assert len(row) == 1
            row = row.iloc[0]
            assert row["n_tasks"] == 4 and row["n_runs"] == 24
            assert row["iqm"] == pytest.approx(trim_mean(matrix, 0.25, axis=None), abs=1e-12)
            assert row["iqm"] == pytest.approx(hand_iqm(matrix), abs=1e-12)
            assert row["mean"] == pytest.approx(matrix.mean(), abs=1e-12)
            assert row["iqm_low"] <= row["iqm"] <= row["iqm_high"]
    # the CI of one cell against a loop bootstrap with its own random stream (Monte-Carlo tolerance)
    matrix = by_hand_scores(rows, "eval_out", "dmash", envs)
    lower, upper = loop_bootstrap_iqm(matrix, reps=3000, seed=7)
    row = aggregate[(aggregate["split"] == "eval_out") & (aggregate["subset"] == "All") & (aggregate["method"] == "dmash")]
    assert row["iqm_low"].iloc[0] == pytest.approx(lower, abs=0.01)
    assert row["iqm_high"].iloc[0] == pytest.approx(upper, abs=0.01)
    # subsets: only the overlap envs, and the aggregated split pools (env, split) tasks
    overlap = aggregate[(aggregate["split"] == "train") & (aggregate["subset"] == "Overlap") & (aggregate["method"] == "dr")]
    over_envs = sorted(e for e, (c, _, _) in ENVS.items() if c == "overlap")
    assert overlap["iqm"].iloc[0] == pytest.approx(trim_mean(by_hand_scores(rows, "train", "dr", over_envs), 0.25, axis=None))
    pooled = np.hstack([by_hand_scores(rows, split, "concat", envs) for split in SPLITS])
    agg = aggregate[(aggregate["split"] == "aggregated") & (aggregate["subset"] == "All") & (aggregate["method"] == "concat")]
    assert agg["n_tasks"].iloc[0] == 12 and agg["iqm"].iloc[0] == pytest.approx(trim_mean(pooled, 0.25, axis=None))


def test_cross_check_with_rliable(rows):
    rly = pytest.importorskip("rliable.library", reason="rliable is not installed (pip install 'sb3-dmash[analysis]')")
    metrics = pytest.importorskip("rliable.metrics")
    matrices = {m: by_hand_scores(rows, "eval_out", m, sorted(ENVS)) for m in METHODS}
    points, intervals = rly.get_interval_estimates(
        matrices,
        lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)]),
        reps=2000,
        random_state=np.random.RandomState(0),
    )
    for method, matrix in matrices.items():
        ours = stats.stratified_bootstrap(matrix, ("iqm", "mean"), reps=4000, rng=1)
        assert ours["iqm"][0] == pytest.approx(points[method][0], abs=1e-12)
        assert ours["mean"][0] == pytest.approx(points[method][1], abs=1e-12)
        assert ours["iqm"][1] == pytest.approx(intervals[method][0, 0], abs=0.01)
        assert ours["iqm"][2] == pytest.approx(intervals[method][1, 0], abs=0.01)
        assert ours["mean"][1] == pytest.approx(intervals[method][0, 1], abs=0.01)
        assert ours["mean"][2] == pytest.approx(intervals[method][1, 1], abs=0.01)
    x, y = matrices["dmash"], matrices["concat"]
    assert stats.probability_of_improvement(x, y) == pytest.approx(float(metrics.probability_of_improvement(x, y)))
    _, poi_ci = rly.get_interval_estimates(
        {"xy": [x, y]}, metrics.probability_of_improvement, reps=1000, random_state=np.random.RandomState(0)
    )
    ours = stats.probability_of_improvement_interval(x, y, reps=2000, rng=0)
    assert ours[1] == pytest.approx(poi_ci["xy"][0, 0], abs=0.03) and ours[2] == pytest.approx(poi_ci["xy"][1, 0], abs=0.03)


def test_bootstrap_exact_cases():
    constant = np.full((5, 3), 0.7)
    point, lower, upper = stats.stratified_bootstrap(constant, reps=500)["iqm"]
    assert point == lower == upper == pytest.approx(0.7)
    # one task, runs {0, 1}: the resampled mean is 0, 1/2 or 1 -> the 95 % interval is [0, 1]
    _, lower, upper = stats.stratified_bootstrap([np.array([0.0, 1.0])], ("mean",), reps=4000)["mean"]
    assert (lower, upper) == (0.0, 1.0)
    # strata: resampling within tasks never mixes tasks, so per-task constants give a degenerate interval
    _, lower, upper = stats.stratified_bootstrap(np.array([[0.1, 0.9]] * 4), ("mean",), reps=500)["mean"]
    assert lower == upper == pytest.approx(0.5)
    # ragged tasks (different seed counts) work
    assert stats.iqm([np.array([1.0, 2.0, 3.0]), np.array([4.0])]) == pytest.approx(trim_mean([1, 2, 3, 4], 0.25))
    with pytest.raises(ValueError):
        stats.stratified_bootstrap(np.zeros(3), reps=10)


def test_probability_of_improvement_by_hand():
    x = np.array([[1.0, 0.0], [3.0, 1.0]])
    y = np.array([[2.0, 1.0], [2.0, 1.0], [0.0, 1.0]])
    # task 0: pairs (1>2,1>2,1>0 | 3>all) -> (1 + 3) / 6; task 1: x {0, 1} vs y {1, 1, 1} -> (0 + 3 * 0.5) / 6
    assert stats.probability_of_improvement(x, y) == pytest.approx(((4 / 6) + (1.5 / 6)) / 2)


def test_gain_rule():
    # the paper's headline: 0.68 / 0.43 -> 58.1 %, 0.68 / 0.61 -> 11.5 % (on two-decimal IQMs)
    assert stats.relative_gain(0.6849, 0.4349) == pytest.approx(58.14, abs=0.01)
    assert stats.relative_gain(0.68, 0.61) == pytest.approx(11.48, abs=0.01)
    assert np.isnan(stats.relative_gain(0.5, 0.001))


def test_gain_table_uses_two_decimal_iqms(report):
    gains, aggregate = report.tables["gains"], report.tables["aggregate"]
    assert set(gains["baseline"]) == {"dr", "concat"} and set(gains["reference"]) == {"dmash"}
    for _, row in gains.iterrows():
        cell = aggregate[(aggregate["split"] == row["split"]) & (aggregate["subset"] == row["subset"])]
        ref = round(float(cell.loc[cell["method"] == "dmash", "iqm"].iloc[0]), 2)
        base = round(float(cell.loc[cell["method"] == row["baseline"], "iqm"].iloc[0]), 2)
        assert row["gain_percent"] == pytest.approx((ref / base - 1) * 100)
    improvement = report.tables["improvement"]
    assert set(improvement["baseline"]) == {"dr", "concat"}
    assert (
        (improvement["ci_low"] <= improvement["probability"]) & (improvement["probability"] <= improvement["ci_high"])
    ).all()


def test_per_env_table(rows, report):
    per_env = report.tables["per_env"]
    row = per_env[(per_env["env"] == "AIB-ODE-v0") & (per_env["method"] == "dr") & (per_env["split"] == "eval_in")].iloc[0]
    values = by_hand_scores(rows, "eval_in", "dr", ["AIB-ODE-v0"])[:, 0] * 200
    assert row["n_seeds"] == 6 and row["mean"] == pytest.approx(values.mean())
    assert row["ci_low"] < row["mean"] < row["ci_high"]


def test_report_files(report):
    out = report.out
    for name in ("report.md", "aggregate.csv", "per_env.csv", "gains.csv", "improvement.csv", "scores.csv", "iqm.png"):
        assert (out / name).exists(), name
    assert len(report.figures) == 1 + len(ENVS)
    for figure in report.figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.markdown.read_text()
    for heading in ("Aggregate normalised IQM", "Relative gain of DMA*-SH", "Probability of improvement", "Eval-out"):
        assert heading in text
    assert "no known return bounds" in text and "![iqm](iqm.png)" in text
    per_context = report.tables["per_context_eval_out"]
    assert len(per_context) == len(ENVS) * len(METHODS) * 20


def test_cli_report_from_a_bench_csv(rows, tmp_path, capsys):
    columns = [c for c in bench.TABLE_COLUMNS]
    full = [{c: r.get(c) for c in columns} for r in rows]
    for r in full:
        r["env_name"] = bench.env_display_name(r["env_id"])
        r["method_name"] = bench.method_display_name(r["method"])
        r["env_class"] = ENVS[r["env_id"]][0]
    bench.write_tables(tmp_path, full)
    assert json.loads(json.dumps(bench.load_results(tmp_path / "results.csv"))) == json.loads(json.dumps(full))
    code = cli.main(
        ["report", str(tmp_path / "results.csv"), "--out", str(tmp_path / "rep"), "--reps", "300", "--no-plots",
         "--bounds", "AIB-WalkerGym-v0=0,4000"]
    )  # fmt: skip
    assert code == 0
    assert "report written" in capsys.readouterr().out
    assert "no known return bounds" not in (tmp_path / "rep" / "report.md").read_text()
    with pytest.raises(SystemExit):
        cli.main(["report", str(tmp_path / "results.csv"), "--bounds", "AIB-WalkerGym-v0=9,1"])


# ---------------------------------------------------------------------------------------------------------- terminal
def fake_bench_folder(rows, out, diverged_reason: str = "non-finite critic loss at vector step 1234"):
    """A bench folder written with bench's own functions: DI and ODE x dmash and dr x seeds 0-2 from ``rows``, plus
    one diverged run (DI, dmash, seed 3) that has evaluations but must stay out of every table."""
    meta = {"commit": "abc123", "versions": {"sb3-dmash": "0.1.0"}}
    fields = ("split", "step", "aer", "per_context", "n_episodes")
    for env in ("AIB-DI-v0", "AIB-ODE-v0"):
        for method in ("dmash", "dr"):
            for seed in (0, 1, 2, 3):
                if seed == 3 and (env, method) != ("AIB-DI-v0", "dmash"):
                    continue
                spec = bench.RunSpec(env, method, seed, budget=10000)
                records = [
                    {**{k: r[k] for k in fields}, "mean_reward": r["aer"]}
                    for r in rows
                    if (r["env"], r["method"], r["seed"]) == (env, method, seed)
                ]
                payload = {"run_id": spec.run_id, "spec": spec.to_dict(), "meta": meta, "records": records}
                payload["duration_s"] = 60.0 * (10 + seed) if method == "dmash" else None  # dr's runs: no wall-clock
                payload["duration_s"] = 42.4 if (env, method, seed) == ("AIB-ODE-v0", "dmash", 2) else payload["duration_s"]
                if seed == 3:
                    payload.update(status="diverged", reason=diverged_reason, records=records[:3])
                else:
                    payload.update(status="ok")
                bench.write_payload(out, payload)
    bench.write_tables(out, bench.collect_rows(out))
    return out


def test_report_prints_the_aggregate_table(report):
    text = report.format()
    aggregate = report.tables["aggregate"]
    assert "Normalised IQM [95 % CI], All (4 envs)" in text and "Overlap (2 envs)" in text
    header = next(line for line in text.splitlines() if line.startswith("Method"))
    assert header.split() == ["Method", "Seeds/env", "Train", "Eval-in", "Eval-out", "Aggregated"]
    row = aggregate[(aggregate["split"] == "eval_out") & (aggregate["subset"] == "All") & (aggregate["method"] == "dmash")]
    cell = f"{row['iqm'].iloc[0]:.2f} [{row['iqm_low'].iloc[0]:.2f}, {row['iqm_high'].iloc[0]:.2f}]"
    dmash_line = next(line for line in text.splitlines() if line.startswith("DMA*-SH"))
    assert cell in dmash_line and dmash_line.split()[1] == "6"
    assert "n=" not in text and "Diverged" not in text  # 6 seeds everywhere, rows given directly
    assert not [w for w in report.warnings if "seed" in w]


def test_fewer_than_three_seeds_are_warned_about_and_marked(rows, tmp_path):
    # DI x DMA*-SH keeps one seed, ODE x DR two; the rest keep 6
    kept = [
        r
        for r in rows
        if not ((r["env"], r["method"]) == ("AIB-DI-v0", "dmash") and r["seed"] > 0)
        and not ((r["env"], r["method"]) == ("AIB-ODE-v0", "dr") and r["seed"] > 1)
    ]
    result = make_report(kept, tmp_path / "rep", reps=300, plots=False, bounds={"AIB-WalkerGym-v0": (0, 4000)})
    one = [w for w in result.warnings if w.startswith("only 1 seed")]
    two = [w for w in result.warnings if w.startswith("only 2 seeds")]
    assert len(one) == 1 and "3 cell(s)" in one[0] and "AIB-DI-v0 x DMA*-SH" in one[0] and "n=1: no CI" in one[0]
    assert len(two) == 1 and "AIB-ODE-v0 x DR" in two[0] and "says little" in two[0]
    markdown = result.markdown.read_text()
    assert "only 1 seed" in markdown and "(n=1: no CI)" in markdown  # the per-env cells of DI x DMA*-SH
    assert "(n=1-6)" in result.format() and "(n=2-6)" in result.format()  # the aggregate mixes 1 (or 2) and 6 seeds
    # one seed everywhere: every bootstrap CI is a point; the tables say "no CI" instead of showing [x, x]
    single = make_report([r for r in rows if r["seed"] == 0], tmp_path / "one", reps=300, plots=False)
    aggregate = single.tables["aggregate"]
    assert (aggregate["iqm_low"] == aggregate["iqm_high"]).all() and (aggregate["max_seeds"] == 1).all()
    text = single.format()
    cells = [line for line in text.splitlines() if line.startswith(("DMA*-SH", "DR", "Concat"))]
    assert cells and all(line.count("(n=1: no CI)") == 4 and "[" not in line for line in cells)
    table = single.markdown.read_text().split("## Aggregate normalised IQM")[1].split("##")[0]
    assert "| Train | All | " in table and "(n=1: no CI)" in table and "[" not in table


def test_diverged_runs_are_listed(rows, tmp_path, capsys):
    folder = fake_bench_folder(rows, tmp_path / "bench")
    assert len(bench.diverged_runs(folder)) == 1
    result = make_report(folder, tmp_path / "rep", reps=300, plots=False)
    (entry,) = result.diverged
    assert entry["env"] == "AIB-DI-v0" and entry["method"] == "dmash" and entry["seed"] == 3
    assert set(result.tables["scores"]["seed"]) == {0, 1, 2}  # the diverged run's evaluations are in no table
    markdown = result.markdown.read_text()
    assert "## Diverged runs (left out of every table and aggregate)" in markdown
    assert entry["run_id"] in markdown and "non-finite critic loss at vector step 1234" in markdown
    assert any("1 run(s) diverged" in w for w in result.warnings)
    # a results file inside a bench folder finds the folder's runs/ the same way
    assert make_report(folder / "results.csv", tmp_path / "rep2", reps=300, plots=False).diverged == result.diverged
    # the command prints the table and the list
    assert cli.main(["report", str(folder), "--out", str(tmp_path / "rep3"), "--reps", "300", "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "Normalised IQM [95 % CI], All (2 envs)" in captured.out
    assert "Diverged runs (left out of every table and aggregate): 1" in captured.out
    assert f"AIB-DI-v0 dmash seed 3 ({entry['run_id']}): non-finite critic loss at vector step 1234" in captured.out
    assert "warning: 1 run(s) diverged" in captured.err


def test_paired_by_seed_differences(rows, report):
    """DMA*-SH against each baseline on the seeds both have: the differences by hand, their mean and the seeds ahead."""
    paired = report.tables["paired"]
    assert (report.out / "paired.csv").exists()
    row = paired[(paired["env"] == "AIB-ODE-v0") & (paired["split"] == "eval_out") & (paired["baseline"] == "dr")].iloc[0]
    ref = by_hand_scores(rows, "eval_out", "dmash", ["AIB-ODE-v0"])[:, 0] * 200
    base = by_hand_scores(rows, "eval_out", "dr", ["AIB-ODE-v0"])[:, 0] * 200
    diffs = ref - base
    assert row["n_seeds"] == len(diffs) and row["mean_difference"] == pytest.approx(diffs.mean())
    assert row["reference_ahead"] == int((diffs > 0).sum())
    assert row["differences"] == " ".join(f"{d:+.1f}" for d in diffs)
    assert row["ci_low"] <= row["mean_difference"] <= row["ci_high"]
    assert "paired by seed" in report.markdown.read_text()


def test_paired_uses_only_common_seeds(rows, tmp_path):
    fewer = [r for r in rows if not (r["method"] == "dr" and r["seed"] == SEEDS[0])]
    paired = make_report(fewer, tmp_path, reps=200, seed=0, plots=False).tables["paired"]
    row = paired[(paired["baseline"] == "dr")].iloc[0]
    assert row["n_seeds"] == len(SEEDS) - 1 and str(SEEDS[0]) not in row["seeds"].split()


def test_report_of_some_envs_and_methods(rows, tmp_path, capsys):
    folder = fake_bench_folder(rows, tmp_path / "bench")
    full = make_report(folder, tmp_path / "full", reps=300, plots=False)
    ode = make_report(folder, tmp_path / "ode", reps=300, plots=False, envs=["AIB-ODE-v0"])
    assert set(ode.tables["scores"]["env"]) == {"AIB-ODE-v0"} and ode.diverged == []  # the diverged run is DI's
    full_ode = full.tables["per_env"][full.tables["per_env"]["env"] == "AIB-ODE-v0"].reset_index(drop=True)
    assert ode.tables["per_env"].reset_index(drop=True).equals(full_ode)  # per-env cells do not depend on the others
    di = make_report(folder, tmp_path / "di", reps=300, plots=False, envs=["DI"], methods=["dmash"])  # display name
    assert set(di.tables["scores"]["env"]) == {"AIB-DI-v0"} and set(di.tables["scores"]["method"]) == {"dmash"}
    assert [run["seed"] for run in di.diverged] == [3]
    with pytest.raises(ValueError, match=r"envs \['AIB-Foo-v0'\] are not in the results table; it has \['AIB-DI-v0'"):
        make_report(folder, tmp_path / "x", reps=300, plots=False, envs=["AIB-Foo-v0"])
    with pytest.raises(ValueError, match=r"methods \['sac'\] are not in the results table; it has \['dmash', 'dr'\]"):
        make_report(folder, tmp_path / "x", reps=300, plots=False, methods=["sac"])
    args = ["report", str(folder), "--out", str(tmp_path / "cli"), "--reps", "300", "--no-plots", "--envs", "AIB-ODE-v0"]
    assert cli.main(args) == 0
    assert "Normalised IQM [95 % CI], All (1 env)" in capsys.readouterr().out


def test_each_method_keeps_its_colour():
    from sb3_dmash.experiments.report import METHOD_ORDER, method_color

    colours = [method_color(method) for method in METHOD_ORDER]
    assert len(set(colours)) == len(METHOD_ORDER)  # known methods never share a colour
    assert method_color("my_method") == method_color("my_method")  # others get a stable one


def test_report_says_which_code_produced_how_many_runs(rows, tmp_path):
    folder = fake_bench_folder(rows, tmp_path / "bench")
    result = make_report(folder, tmp_path / "rep", reps=300, plots=False)
    assert "- commit(s) (runs): abc123 (12)" in result.markdown.read_text()  # 2 envs x 2 methods x 3 seeds, ok runs


def test_one_report_from_several_sources(rows, tmp_path, capsys):
    folder = fake_bench_folder(rows, tmp_path / "bench")
    parts = {method: tmp_path / method for method in ("dmash", "dr")}  # the same runs, one folder per method
    for method, part in parts.items():
        for run in bench.finished_runs(folder):
            if run["spec"]["method"] == method:
                bench.write_payload(part, run)
        bench.write_tables(part, bench.collect_rows(part))
    whole = make_report(folder, tmp_path / "whole", reps=300, plots=False)
    joint = make_report(list(parts.values()), tmp_path / "joint", reps=300, plots=False)
    for name in ("scores", "per_env", "aggregate", "paired"):
        keys = [c for c in ("env", "method", "baseline", "seed", "split", "subset") if c in whole.tables[name]]
        a, b = (t.tables[name].sort_values(keys).reset_index(drop=True) for t in (joint, whole))  # row order aside
        assert a.equals(b), name
    assert [run["seed"] for run in joint.diverged] == [3]  # dmash's folder has the diverged run
    assert f"- source: `{parts['dmash']}`, `{parts['dr']}`" in joint.markdown.read_text()
    assert cli.main(["report", *map(str, parts.values()), "--out", str(tmp_path / "cli"), "--reps", "300", "--no-plots"]) == 0
    with pytest.raises(SystemExit):
        cli.main(["report", *map(str, parts.values())])
    assert "--out is required with several results" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"run AIB-DI-v0__dmash__seed0__\w+ is in two of the results given"):
        make_report([folder, parts["dmash"]], tmp_path / "twice", reps=300, plots=False)


def test_two_runs_of_one_cell_are_refused(rows, tmp_path):
    folder = fake_bench_folder(rows, tmp_path / "bench")
    # the same env, method and seed again at another budget: its evaluations must not be pooled with the first run's
    spec = bench.RunSpec("AIB-DI-v0", "dmash", 0, budget=20000)
    records = [
        {**{k: r[k] for k in ("split", "step", "aer", "per_context", "n_episodes")}, "mean_reward": r["aer"]}
        for r in rows
        if (r["env"], r["method"], r["seed"]) == ("AIB-DI-v0", "dmash", 0)
    ]
    run = {"run_id": spec.run_id, "spec": spec.to_dict(), "meta": {"commit": "abc123"}, "records": records, "status": "ok"}
    bench.write_payload(folder, run)
    bench.write_tables(folder, bench.collect_rows(folder))
    with pytest.raises(ValueError, match=r"AIB-DI-v0 dmash seed 0: runs \[.*\]; they differ in budget \['10000', '20000'\]"):
        make_report(folder, tmp_path / "rep", reps=300, plots=False)
    assert make_report(folder, tmp_path / "dr", reps=300, plots=False, methods=["dr"]).tables["scores"]["seed"].nunique() == 3


def test_per_run_scores_with_wall_clock_and_commit(rows, tmp_path):
    folder = fake_bench_folder(rows, tmp_path / "bench")
    text = make_report(folder, tmp_path / "rep", reps=300, plots=False).markdown.read_text()
    section = text.split("## Per-run scores (best of the last two evaluations)")[1].split("\n## ")[0]
    assert "| Method | Seed | Train | Eval-in | Eval-out | Wall-clock | Commit |" in section
    scores = final_scores(load_frame(folder)).set_index(["env", "method", "seed", "split"])["aer"]
    di = section.split("### DI")[1].split("### ODE")[0]
    expected = [f"{scores[('AIB-DI-v0', 'dmash', 1, s)]:.1f}" for s in ("train", "eval_in", "eval_out")]
    assert f"| DMA*-SH | 1 | {' | '.join(expected)} | 11 min | `abc123` |" in di
    assert "| DR | 0 |" in di and di.split("| DR | 0 |")[1].split("\n")[0].endswith("| - | `abc123` |")
    assert "| DMA*-SH | 3 |" not in di  # the diverged run has no score
    assert "| 42 s | `abc123` |" in section.split("### ODE")[1]  # short runs (fault evaluations) in seconds
