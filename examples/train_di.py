"""Train DMA*-SH and context-unaware SAC on AIB-DI-v0 and compare their deterministic returns per inversion mode.

The double integrator's hidden ``action_factor`` flips the sign of every action. A context-unaware agent (SAC over
the 20 training contexts, i.e. domain randomisation) cannot tell the modes apart; DMA*-SH infers the mode from the
last K transitions.

    python examples/train_di.py --vector-steps 20000
    python examples/train_di.py --vector-steps 5000 --net-arch 64 64      # a quicker, smaller run

Budgets are in vector steps of 20 sub-envs (the paper's unit; the paper trains 100k after 5k random ones). Both agents
use the same SAC settings (batch 240, one update round per vector step) and the same evaluation: the AIB protocol
(``aib.evaluate``: K deterministic warm-up steps, then the scored episode) on the train, eval_in and eval_out splits.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch as th
from stable_baselines3 import SAC

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.utils import tune_malloc

ENV_ID = "AIB-DI-v0"


def per_mode(result: aib.SplitResult) -> dict[str, float]:
    factor = np.array([c["action_factor"] for c in result.contexts])
    return {"inverted": float(result.per_context[factor < 0].mean()), "nominal": float(result.per_context[factor > 0].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vector-steps", type=int, default=20_000, help="training vector steps after learning starts")
    parser.add_argument(
        "--learning-starts", type=int, default=5_000, help="vector steps of random actions first (the paper's 5000)"
    )
    parser.add_argument("--net-arch", type=int, nargs="+", default=[256, 256], help="hidden sizes of every network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--algos", nargs="+", default=["dmash", "sac"], choices=["dmash", "sac"])
    args = parser.parse_args()
    th.set_num_threads(1)
    tune_malloc()  # process-wide allocator settings: this script owns its process (docs/performance.md)

    n_envs = 20
    common = dict(
        learning_starts=args.learning_starts * n_envs,
        batch_size=256,  # stratified: 12 per context -> 240 for DMA*-SH
        train_freq=1,
        gradient_steps=1,
        seed=args.seed,
        verbose=0,
        policy_kwargs=dict(net_arch=args.net_arch),
    )
    total = (args.learning_starts + args.vector_steps) * n_envs
    rows = []
    for name in args.algos:
        env = aib.make_vec_env(ENV_ID, "train", n_envs=n_envs, seed=args.seed)
        if name == "dmash":
            model = DMASHSAC("MlpPolicy", env, **common)
        else:
            model = SAC("MlpPolicy", env, **{**common, "batch_size": 240})
        start = time.perf_counter()
        model.learn(total, progress_bar=False)
        elapsed = time.perf_counter() - start
        results = aib.evaluate(model, ENV_ID, n_episodes=args.eval_episodes, eval_seed=1_000_000 + args.seed)
        for split, result in results.items():
            modes = per_mode(result)
            rows.append((name, split, result.aer, modes["inverted"], modes["nominal"], elapsed))
        print(f"{name}: {elapsed / 60:.1f} min for {args.vector_steps} vector steps", flush=True)

    print(
        f"\n{ENV_ID}, seed {args.seed}, {args.vector_steps} vector steps (+{args.learning_starts} random), "
        f"{args.eval_episodes} deterministic episodes per context"
    )
    print("| agent | split | AER | inverted (action_factor -1) | nominal (+1) |")
    print("|---|---|---|---|---|")
    for name, split, aer, inverted, nominal, _ in rows:
        label = "DMA*-SH (DMASHSAC)" if name == "dmash" else "SAC (context-unaware)"
        print(f"| {label} | {split} | {aer:.1f} | {inverted:.1f} | {nominal:.1f} |")


if __name__ == "__main__":
    main()
