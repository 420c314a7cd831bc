"""Trainable parameters of each method preset (target critics excluded), as a markdown table.

python benchmarks/count_parameters.py --env AIB-Walker-v0
"""

from __future__ import annotations

import argparse

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.dmash.presets import METHODS, PAPER_NAMES


def count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="AIB-Walker-v0")
    args = parser.parse_args()
    print(f"Trainable parameters on {args.env} (default sizes; target critics excluded)\n")
    print("| method | paper name | encoder | forward model + hypernetwork | actor | critics | total |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
        aware = method in ("concat", "decision_adapter")
        env = aib.make_vec_env(args.env, "train", n_envs=1, env_kwargs={"context_aware": aware})
        policy = DMASHSAC("MlpPolicy", env, method=method, buffer_size=1).policy
        context = policy.context
        encoder = count(context.encoder) if context is not None else 0
        fm = count(context) - encoder if context is not None else 0
        actor, critic = count(policy.actor), count(policy.critic)
        total = encoder + fm + actor + critic
        print(f"| `{method}` | {PAPER_NAMES[method]} | {encoder:,} | {fm:,} | {actor:,} | {critic:,} | {total:,} |")
        env.close()


if __name__ == "__main__":
    main()
