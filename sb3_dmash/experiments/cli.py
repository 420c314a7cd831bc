"""The ``sb3-dmash`` command: ``bench`` (a resumable sweep), ``status`` (where a sweep stands), ``faults`` (a study's
models under a mid-episode fault), ``report`` (tables, IQM, plots) and ``diagnose`` (z).

    sb3-dmash bench --envs AIB-DI-v0 AIB-ODE-v0 --methods dmash dr --seeds 0-9 --save-models --out results/
    sb3-dmash status results/
    sb3-dmash faults results/ --invert-at 50 --out results-faults/
    sb3-dmash report results/ --out report/
    sb3-dmash diagnose model.zip --env AIB-DI-v0 --split handcrafted_train --out diag/

See ``docs/protocol.md`` and ``docs/faults.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any


def _seeds(values: Sequence[str]) -> list[int]:
    """``["0-2", "5,7"]`` -> ``[0, 1, 2, 5, 7]``."""
    seeds: list[int] = []
    for value in values:
        for part in filter(None, value.split(",")):
            lo, sep, hi = part.partition("-")
            if sep and lo.isdigit() and hi.isdigit():
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part.isdigit():
                seeds.append(int(part))
            else:
                raise ValueError(f"--seeds expects non-negative integers or ranges like 0-9, got {part!r}")
    return seeds


def _json_dict(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _budget(text: str) -> int | str:
    if text == "paper":
        return text
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"budget must be >= 1 vector steps or 'paper', got {text!r}")
    return value


def _bench_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run (or resume) a grid of envs x methods x seeds and write one results table",
        description="Run (or resume) a grid of AIB envs x methods x seeds. Budgets are in vector steps (one step of all "
        "sub-envs). Finished runs are never redone; crashed runs are reported (non-zero exit) and retried next time.",
    )
    envs = p.add_mutually_exclusive_group(required=True)
    envs.add_argument("--envs", nargs="+", help="AIB ids; 'AIB-ODE-v0:k=5' passes env kwargs")
    envs.add_argument("--suite", choices=["AIB-v1", "AIB-v2"], help="all envs of a suite")
    p.add_argument(
        "--methods", nargs="+", default=["dmash"], help="DMASHSAC methods, 'sac' (SB3's SAC) or 'recurrent_ppo' (sb3-contrib)"
    )
    p.add_argument("--seeds", nargs="+", default=["0"], help="seeds: '0 1 2', '0-9' or '0,3,5'")
    p.add_argument("--out", required=True, help="output folder (reuse it to resume)")
    p.add_argument("--budget", type=_budget, default="paper", help="learning vector steps per run, or 'paper' (default)")
    p.add_argument("--learning-starts", type=int, default=5_000, help="random vector steps first (default 5000)")
    p.add_argument("--eval-every", type=int, default=5_000, help="vector steps between evaluations (default 5000)")
    p.add_argument("--eval-schedule", choices=["every", "final2"], default="every")
    p.add_argument("--eval-episodes", type=int, default=10, help="scored episodes per context (default 10)")
    p.add_argument("--splits", nargs="+", default=["train", "eval_in", "eval_out"])
    p.add_argument("--n-envs", type=int, default=20, help="training sub-envs (default 20)")
    p.add_argument("--net-arch", type=int, nargs="+", help="hidden sizes of actor, critics and forward model")
    p.add_argument("--hypernet-arch", type=int, nargs="+", help="hidden sizes of the hypernetwork")
    p.add_argument("--encoder-dim", type=int, help="context encoder width")
    p.add_argument("--batch-size", type=int, help="minibatch size (default 256, stratified; 240 for 'sac')")
    p.add_argument("--policy-kwargs", type=_json_dict, default={}, help="JSON policy kwargs of every run")
    p.add_argument("--hyperparams", type=_json_dict, default={}, help="JSON algorithm kwargs of every run")
    p.add_argument("--workers", type=int, default=1, help="parallel runs, one torch thread each (default 1)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--address", help="Ray cluster address ('auto', 'ray://head:10001'); default: a local Ray")
    p.add_argument("--no-retry-failed", action="store_true", help="keep runs that crashed before as failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--save-models", action="store_true", help="save each trained model as OUT/models/<run_id>.zip")
    p.add_argument(
        "--invert-at",
        type=int,
        default=None,
        help="evaluate with the fault protocol: actions inverted from this step of each scored episode (docs/faults.md)",
    )
    p.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="no in-run checkpoints (by default each run is saved after every evaluation and resumes from there exactly)",
    )


def _bench(args: argparse.Namespace) -> int:
    from sb3_dmash.experiments.bench import env_key, run_grid

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.suite:
        from aib.registration import SUITES

        envs = [env_key(info.env_id, info.env_kwargs) for info in SUITES[args.suite]]
    else:
        envs = args.envs
    policy_kwargs = dict(args.policy_kwargs)
    for key, value in (("net_arch", args.net_arch), ("hypernet_arch", args.hypernet_arch), ("encoder_dim", args.encoder_dim)):
        if value is not None:
            policy_kwargs[key] = value
    hyperparams = dict(args.hyperparams)
    if args.batch_size is not None:
        hyperparams["batch_size"] = args.batch_size
    non_dmash = {"sac"} & set(args.methods)
    if non_dmash and set(policy_kwargs) - {"net_arch"}:
        print("note: 'sac' uses only net_arch of the policy kwargs", file=sys.stderr)
    summary = run_grid(
        envs,
        args.methods,
        _seeds(args.seeds),
        args.out,
        budget=args.budget,
        learning_starts=args.learning_starts,
        eval_every=args.eval_every,
        eval_schedule=args.eval_schedule,
        n_envs=args.n_envs,
        eval_episodes=args.eval_episodes,
        splits=args.splits,
        policy_kwargs=policy_kwargs,
        hyperparams=hyperparams,
        workers=args.workers,
        backend=args.backend,
        address=args.address,
        retry_failed=not args.no_retry_failed,
        progress=not args.no_progress,
        command=" ".join(["sb3-dmash", *sys.argv[1:]]),
        save_models=args.save_models,
        checkpoints=not args.no_checkpoints,
        invert_at=args.invert_at,
    )
    print(summary.format())
    return 0 if summary.ok else 1


def _status_parser(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="where a bench folder stands: finished, in progress (step, time, last AER), failed; the time left",
        description="Read a bench folder without changing it, also while its driver runs: the runs finished, in "
        "progress (from their newest in-run checkpoint: learning steps, time so far, last evaluation), failed and not "
        "started, whether a driver holds the folder, and the time left estimated from the finished runs.",
    )
    p.add_argument("out", help="a bench folder (--out of sb3-dmash bench)")


def _status(args: argparse.Namespace) -> int:
    from sb3_dmash.experiments.status import study_status

    print(study_status(args.out).format())
    return 0


def _faults_parser(sub: Any) -> None:
    p = sub.add_parser(
        "faults",
        help="evaluate the saved models of a finished study with the fault protocol (no training)",
        description="Evaluate every saved model (bench --save-models) of a study with the fault protocol: the actions "
        "are inverted from step --invert-at of each scored episode. Writes a bench-style folder; `sb3-dmash report OUT` "
        "gives the post-fault returns, recovery times and reward traces. See docs/faults.md.",
    )
    p.add_argument("study", help="a bench folder run with --save-models")
    p.add_argument("--invert-at", type=int, required=True, help="first step of each scored episode with inverted actions")
    p.add_argument("--out", required=True, help="output folder (another folder than the study)")
    p.add_argument("--eval-episodes", type=int, default=None, help="scored episodes per context (default: the study's)")
    p.add_argument("--splits", nargs="+", default=None, help="evaluated splits (default: the study's)")
    p.add_argument("--envs", nargs="+", default=None, help="only these envs")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods")
    p.add_argument("--no-progress", action="store_true", help="no line per evaluated model")


def _faults(args: argparse.Namespace) -> int:
    from sb3_dmash.experiments.bench import evaluate_faults

    if args.eval_episodes is not None and args.eval_episodes < 1:
        raise ValueError(f"--eval-episodes {args.eval_episodes} must be an integer >= 1")
    summary = evaluate_faults(
        args.study,
        args.out,
        args.invert_at,
        n_episodes=args.eval_episodes,
        splits=args.splits,
        envs=args.envs,
        methods=args.methods,
        progress=not args.no_progress,
    )
    print(
        f"{summary.total} fault evaluations in {summary.out}: {len(summary.skipped)} already done, "
        f"{len(summary.finished)} done now; {len(summary.rows)} rows in {summary.out / 'results.csv'}"
    )
    return 0


def _bounds(values: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    out = {}
    for value in values or []:
        env, sep, rest = value.partition("=")
        try:
            lo, hi = (float(x) for x in rest.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--bounds expects ENV=LO,HI, got {value!r}") from None
        if not sep or hi <= lo:
            raise argparse.ArgumentTypeError(f"--bounds expects ENV=LO,HI with LO < HI, got {value!r}")
        out[env] = (lo, hi)
    return out


def _report_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="per-env tables, normalised IQM with CIs, gains, plots and a markdown report from a results table",
        description="Write the report of a results table to --out and print the aggregate normalised IQM table (with "
        "its 95 %% CIs and seeds per env) and the runs that diverged. Warnings (cells with fewer than 3 seeds, unknown "
        "return bounds, diverged runs) go to stderr.",
    )
    p.add_argument(
        "results",
        nargs="+",
        help="a bench folder, results.csv or results.jsonl; several give one report of their rows together "
        "(one run per env, method and seed)",
    )
    p.add_argument("--out", default=None, help="report folder (default: <results>/report; required with several)")
    p.add_argument("--reps", type=int, default=50_000, help="bootstrap replicates (rliable's default 50000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--bounds", nargs="+", help="normalisation bounds ENV=LO,HI (required for WalkerGym/HopperGym)")
    p.add_argument("--reference", default="dmash", help="method whose gains and P(improvement) are reported")
    p.add_argument("--envs", nargs="+", default=None, help="only these envs (ids or display names; default all)")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods (default all)")
    p.add_argument("--no-plots", action="store_true")


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sb3_dmash.experiments.report import make_report

    out = args.out
    if out is None:
        if len(args.results) > 1:
            raise ValueError(f"--out is required with several results ({len(args.results)} given: {args.results})")
        base = Path(args.results[0])
        out = (base if base.is_dir() else base.parent) / "report"
    result = make_report(
        args.results,  # one path or several: make_report takes a list either way
        out,
        reps=args.reps,
        seed=args.seed,
        bounds=_bounds(args.bounds),
        reference=args.reference,
        plots=not args.no_plots,
        envs=args.envs,
        methods=args.methods,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.format())  # the headline numbers (and what is not in them) where people look
    print(f"\nreport written to {result.markdown}")
    return 0


def _diagnose_parser(sub: Any) -> None:
    p = sub.add_parser(
        "diagnose",
        help="embedding diagnostics of a saved DMASHSAC model (MI, variability, overlap, cosines)",
        description="Roll a saved inferred-context DMASHSAC model out on a split, print a short summary of its context "
        "embeddings z (I(z; c) per variable against its maximum, variability, overlap, cosine ranges) and, with --out, "
        "write diagnostics.json, cosine.png and projection.png.",
    )
    p.add_argument("model", help="a model saved by DMASHSAC.save (.zip)")
    p.add_argument("--env", required=True, help="AIB id")
    p.add_argument("--split", default="handcrafted_train", help="train, eval_in, eval_out or handcrafted_train (DI)")
    p.add_argument("--episodes", type=int, default=2, help="episodes per context")
    p.add_argument("--steps", type=int, default=None, help="steps recorded per episode (default: all after K)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=3, help="neighbours of the Kraskov estimator (default 3)")
    p.add_argument("--env-kwargs", type=_json_dict, default={}, help="JSON env kwargs")
    p.add_argument("--out", default=None, help="folder for diagnostics.json, cosine.png and projection.png")
    p.add_argument("--json", action="store_true", help="print the full JSON (as diagnostics.json) instead of the summary")


def _diagnose(args: argparse.Namespace) -> int:
    from sb3_dmash.experiments.diagnostics import check_rollout_args, diagnose, load_model

    check_rollout_args(n_episodes=args.episodes, steps_per_episode=args.steps, k=args.k)  # before the slow load
    model = load_model(args.model)
    result = diagnose(
        model,
        args.env,
        split=args.split,
        n_episodes=args.episodes,
        steps_per_episode=args.steps,
        seed=args.seed,
        k=args.k,
        env_kwargs=args.env_kwargs or None,
        out=args.out,
    )
    if args.json:
        print(json.dumps(result.summary(), indent=1))
        return 0
    print(result.format())
    if args.out is None:
        print("(--out DIR saves diagnostics.json, cosine.png and projection.png; --json prints the full JSON)")
    else:
        written = [os.path.join(args.out, "diagnostics.json"), result.figure, result.projection]
        print("written: " + ", ".join(str(p) for p in written if p is not None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sb3-dmash", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _bench_parser(sub)
    _status_parser(sub)
    _faults_parser(sub)
    _report_parser(sub)
    _diagnose_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from sb3_dmash.experiments.bench import FolderInUseError

    parser = build_parser()
    args = parser.parse_args(argv)
    # A scheduler or `kill` stops a study as Ctrl-C does: the runs in progress keep their checkpoints, and the command
    # says what was kept. (A shell starts background jobs with SIGINT ignored, so SIGTERM is their way to stop.)
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        commands = {"bench": _bench, "status": _status, "faults": _faults, "report": _report, "diagnose": _diagnose}
        return commands[args.command](args)
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 130  # the command said what was kept and how to resume; no traceback
    except (ValueError, argparse.ArgumentTypeError, FileNotFoundError, FolderInUseError) as exc:
        parser.exit(2, f"sb3-dmash {args.command}: error: {exc}\n")
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 2  # pragma: no cover


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
