"""Train DMA*-SH and context-unaware SAC on AIB-DI-v0 and compare their deterministic returns per inversion mode.

The double integrator's hidden ``action_factor`` flips the sign of every action. A context-unaware agent (SAC over
the 20 training contexts, i.e. domain randomisation) cannot tell the modes apart; DMA*-SH infers the mode from the
last K transitions.

    # about 30 min on one core; at 30k our 3 seeds of DMA*-SH scored 53-77 of 100 in each mode on train, while SAC
    # scored 0 in the inverted mode and 0-55 in the nominal one (docs/results.md)
    python examples/train_di.py --vector-steps 30000 --net-arch 64 64 --eval-every 5000 \
        --checkpoint-dir runs/di-example --plot runs/di-example/curves.png
    python examples/train_di.py --eval-every 5000 --checkpoint-dir runs/di-paper   # the paper's budget and width

Budgets are in vector steps of 20 sub-envs (the paper's unit; the paper trains 100k after 5k random ones). Both agents
use the same SAC settings (batch 240, one update round per vector step) and the same evaluation: the AIB protocol
(``aib.evaluate``: K deterministic warm-up steps, then the scored episode) on the train, eval_in and eval_out splits.

Long runs: ``--eval-every N`` evaluates every N vector steps and prints one line per evaluation; with
``--checkpoint-dir DIR`` each evaluation also saves the model, its replay buffer and the evaluation history there, and a
later call with the same arguments resumes from the newest checkpoint (a finished agent is only evaluated). The two
agents can train in two processes (``--algos dmash`` and ``--algos sac``) on one checkpoint directory; a third call
with both prints the joint table. A resumed run continues the same replay buffer, optimisers and rollout counters, but
the random streams restart, so it is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3 import SAC

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.experiments.utils import tune_malloc

ENV_ID = "AIB-DI-v0"
N_ENVS = 20
ALGOS = {"dmash": DMASHSAC, "sac": SAC}
LABELS = {"dmash": "DMA*-SH (DMASHSAC)", "sac": "SAC (context-unaware)"}
# What a checkpoint must agree on to be resumed (the budget may grow).
RESUME_KEYS = ("learning_starts", "net_arch", "seed")


def per_mode(result: aib.SplitResult) -> dict[str, float]:
    factor = np.array([c["action_factor"] for c in result.contexts])
    return {"inverted": float(result.per_context[factor < 0].mean()), "nominal": float(result.per_context[factor > 0].mean())}


def make_model(name: str, env, args: argparse.Namespace):
    common = dict(
        learning_starts=args.learning_starts * N_ENVS,
        train_freq=1,
        gradient_steps=1,
        seed=args.seed,
        verbose=0,
        policy_kwargs=dict(net_arch=args.net_arch),
    )
    if name == "dmash":
        return DMASHSAC("MlpPolicy", env, batch_size=256, **common)  # stratified: 12 per context -> 240
    return SAC("MlpPolicy", env, batch_size=240, **common)


class CheckpointMismatch(ValueError):
    """A checkpoint in ``--checkpoint-dir`` was trained with other arguments."""


class Checkpoint:
    """One agent's files in ``--checkpoint-dir``: model, replay buffer, run config and evaluation history."""

    def __init__(self, directory: Path, name: str, args: argparse.Namespace) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        stem = f"{name}_seed{args.seed}"
        self.model = directory / f"{stem}.zip"
        self.buffer = directory / f"{stem}_replay_buffer.pkl"
        self.config = directory / f"{stem}_config.json"
        self.history = directory / f"{stem}_evals.jsonl"
        self.wanted = {key: getattr(args, key) for key in RESUME_KEYS}

    def load(self, env):
        """The saved model with its replay buffer, or ``None`` when there is none yet."""
        if not self.model.exists():
            return None
        saved = json.loads(self.config.read_text())
        for key in RESUME_KEYS:
            if saved[key] != self.wanted[key]:
                raise CheckpointMismatch(
                    f"{self.model} was trained with --{key.replace('_', '-')} {saved[key]}, not {self.wanted[key]}; "
                    "pass the same value to resume it, or another --checkpoint-dir for a new run"
                )
        model = ALGOS[self.name].load(self.model, env=env, device="cpu")
        model.load_replay_buffer(self.buffer)
        return model

    def minutes(self) -> float:
        """Training minutes recorded so far (0 for a new run)."""
        if not self.history.exists():
            return 0.0
        return json.loads(self.history.read_text().splitlines()[-1])["minutes"]

    def save(self, model, record: dict) -> None:
        """Write the model and buffer through temporary files, so an interrupted save leaves the old ones."""
        self.config.write_text(json.dumps(self.wanted))
        for path, write in (
            (self.model, model.save),
            (self.buffer, model.save_replay_buffer),
        ):
            tmp = path.with_name(f"tmp_{path.name}")
            write(tmp)
            os.replace(tmp, path)
        with self.history.open("a") as history:
            history.write(json.dumps(record) + "\n")


def learning_steps(model, args: argparse.Namespace) -> int:
    """Vector steps trained after the random ones."""
    return model.num_timesteps // N_ENVS - args.learning_starts


def evaluate(model, args: argparse.Namespace, vec_env) -> dict[str, dict[str, float]]:
    results = aib.evaluate(model, ENV_ID, n_episodes=args.eval_episodes, eval_seed=1_000_000 + args.seed, vec_env=vec_env)
    return {split: {"aer": float(result.aer), **per_mode(result)} for split, result in results.items()}


def train(name: str, args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], float]:
    """Train (or resume) one agent to the budget; return its final per-split scores and its training minutes."""
    env = aib.make_vec_env(ENV_ID, "train", n_envs=N_ENVS, seed=args.seed)
    checkpoint = Checkpoint(Path(args.checkpoint_dir), name, args) if args.checkpoint_dir else None
    model = checkpoint.load(env) if checkpoint else None
    if model is None:
        model = make_model(name, env, args)
    else:
        print(f"{name}: resumed from {checkpoint.model} at {learning_steps(model, args)} vector steps", flush=True)
    total = (args.learning_starts + args.vector_steps) * N_ENVS
    every = (args.eval_every or args.vector_steps) * N_ENVS
    elapsed = 60 * checkpoint.minutes() if checkpoint else 0.0  # cumulative over resumed calls
    eval_env = aib.make_eval_vec_env(ENV_ID)  # one 60-env VecEnv for the three splits, reused by every evaluation
    scores = None
    while model.num_timesteps < total:
        # The next evaluation point: a multiple of --eval-every past the random warm-up, or the end of the budget.
        done_after_start = max(model.num_timesteps - args.learning_starts * N_ENVS, 0)
        stop = min(args.learning_starts * N_ENVS + (done_after_start // every + 1) * every, total)
        start = time.perf_counter()
        model.learn(stop - model.num_timesteps, reset_num_timesteps=False, progress_bar=args.progress)
        elapsed += time.perf_counter() - start
        scores = evaluate(model, args, eval_env)
        steps = learning_steps(model, args)
        print(
            f"{name} {steps} vector steps ({elapsed / 60:.1f} min): "
            + ", ".join(f"{s} {v['aer']:.1f} (inv {v['inverted']:.1f} / nom {v['nominal']:.1f})" for s, v in scores.items()),
            flush=True,
        )
        if checkpoint:
            checkpoint.save(model, {"vector_steps": steps, "minutes": elapsed / 60, **scores})
    if scores is None:  # a finished checkpoint: evaluate it
        if model.num_timesteps > total:
            steps = learning_steps(model, args)
            print(f"{name}: the checkpoint has {steps} vector steps, more than --vector-steps; scoring it as it is")
        scores = evaluate(model, args, eval_env)
    env.close()
    eval_env.close()
    return scores, elapsed / 60


def plot_histories(directory: Path, algos: list[str], out: Path) -> None:
    """Per-mode mean return against training vector steps, one panel per split, averaged over the seeds in
    ``directory``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the `analysis` extra
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(aib.SPLITS), sharey=True)
    for colour, name in enumerate(algos):
        runs = [
            {r["vector_steps"]: r for r in map(json.loads, path.read_text().splitlines())}
            for path in sorted(directory.glob(f"{name}_seed*_evals.jsonl"))
        ]
        # A run still in progress contributes the evaluations it has: the mean is over the seeds that reached a step.
        steps = sorted(set().union(*runs))
        for ax, split in zip(axes, aib.SPLITS, strict=True):
            for mode, style in (("inverted", "-"), ("nominal", "--")):
                mean = [np.mean([run[step][split][mode] for run in runs if step in run]) for step in steps]
                label = f"{LABELS[name]}, {mode} ({len(runs)} seed{'s' * (len(runs) != 1)})"
                ax.plot(steps, mean, style, color=f"C{colour}", marker="o", markersize=3, label=label)
    for ax, split in zip(axes, aib.SPLITS, strict=True):
        ax.set_title(f"{ENV_ID} - {split}")
        ax.set_xlabel("training vector steps (after the random ones)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean deterministic return")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vector-steps", type=int, default=100_000, help="training vector steps after learning starts")
    parser.add_argument(
        "--learning-starts", type=int, default=5_000, help="vector steps of random actions first (the paper's 5000)"
    )
    parser.add_argument("--net-arch", type=int, nargs="+", default=[256, 256], help="hidden sizes of every network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--eval-every", type=int, default=0, help="evaluate every N vector steps (0: only at the end)")
    parser.add_argument("--checkpoint-dir", default=None, help="save at every evaluation and resume from here")
    parser.add_argument("--plot", default=None, help="write the evaluation histories of --checkpoint-dir to this PNG")
    parser.add_argument("--algos", nargs="+", default=["dmash", "sac"], choices=list(ALGOS))
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar while training")
    args = parser.parse_args()
    for flag, minimum in (("vector_steps", 1), ("eval_episodes", 1), ("learning_starts", 0), ("eval_every", 0)):
        if getattr(args, flag) < minimum:
            parser.error(f"--{flag.replace('_', '-')} must be an integer >= {minimum}, got {getattr(args, flag)}")
    if args.plot and not args.checkpoint_dir:
        parser.error("--plot draws the evaluation histories saved in --checkpoint-dir; pass --checkpoint-dir too")
    th.set_num_threads(1)
    tune_malloc()  # process-wide allocator settings: this script owns its process (docs/performance.md)

    rows = []
    for name in args.algos:
        try:
            scores, minutes = train(name, args)
        except CheckpointMismatch as error:
            parser.error(str(error))
        print(f"{name}: {minutes:.1f} min of training", flush=True)
        rows += [(name, split, score) for split, score in scores.items()]

    print(
        f"\n{ENV_ID}, seed {args.seed}, {args.vector_steps} vector steps (+{args.learning_starts} random), "
        f"net_arch {args.net_arch}, {args.eval_episodes} deterministic episodes per context"
    )
    print("| agent | split | AER | inverted (action_factor -1) | nominal (+1) |")
    print("|---|---|---|---|---|")
    for name, split, score in rows:
        print(f"| {LABELS[name]} | {split} | {score['aer']:.1f} | {score['inverted']:.1f} | {score['nominal']:.1f} |")
    if args.plot:
        plot_histories(Path(args.checkpoint_dir), args.algos, Path(args.plot))


if __name__ == "__main__":
    main()
