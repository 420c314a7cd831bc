"""Does the actor use the inferred context? Train one model on AIB-ODE-v0 and print, every 1000 update rounds:

- ``probe``: accuracy of a linear probe on z predicting the sign of c_0 (held-out half of windows of random actions);
- ``|a+ - a-|``: mean absolute difference of the actor's deterministic action for the same observations when z comes
  from c_0 > 0 windows and from c_0 < 0 windows (0: the actor ignores the context);
- ``a0 sgn(c0) sgn(x)``: for c_0 > 0 (``pos``) and c_0 < 0 (``neg``, sign flipped): negative means the actor pushes x
  towards 0 in that mode (the right behaviour); near 0 means it does not act on the mode;
- the dynamics loss and the entropy coefficient of the last update.

    python benchmarks/context_use.py --method dmash --updates 14000
    python benchmarks/context_use.py --method dma_star --updates 5000

Setup (defaults) as ``studies/aib-cheap`` (docs/results.md): 20 sub-envs on the training contexts, 5,000 random vector steps,
batch 256 stratified, networks of width 64, seed 0, one torch thread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch as th

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.experiments.diagnostics import collect_embeddings, linear_probe_accuracy
from sb3_dmash.experiments.utils import tune_malloc

ENV_ID = "AIB-ODE-v0"


def context_use(model: DMASHSAC) -> dict[str, float]:
    policy = model.policy
    data = collect_embeddings(model, ENV_ID, split="train", n_episodes=1, steps_per_episode=40, actions="random", seed=5)
    z, context = data["z"], data["context"]
    sign = (context[:, 0] > 0).astype(int)
    order = np.random.default_rng(0).permutation(len(z))
    train, test = order[: len(z) // 2], order[len(z) // 2 :]
    probe = linear_probe_accuracy(z[train], sign[train], z[test], sign[test])
    z_pos, z_neg = th.tensor(z[sign == 1][:200]), th.tensor(z[sign == 0][:200])
    n = min(len(z_pos), len(z_neg))
    obs = th.linspace(-1, 1, n)[:, None]

    with th.no_grad():
        a_pos = policy.actor(obs, policy.rl_context_from_z(z_pos[:n]), deterministic=True)
        a_neg = policy.actor(obs, policy.rl_context_from_z(z_neg[:n]), deterministic=True)
    return {
        "probe": probe,
        "diff": (a_pos - a_neg).abs().mean().item(),
        "pos": (a_pos[:, 0] * th.sign(obs[:, 0])).mean().item(),
        "neg": (-a_neg[:, 0] * th.sign(obs[:, 0])).mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="dmash", choices=["dmash", "dma_star", "dma"])
    parser.add_argument("--updates", type=int, default=10_000, help="update rounds (vector steps after learning starts)")
    parser.add_argument("--every", type=int, default=1000, help="update rounds between reports")
    parser.add_argument("--learning-starts", type=int, default=5000, help="random vector steps first")
    parser.add_argument("--net-arch", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    tune_malloc()
    env = aib.make_vec_env(ENV_ID, "train", n_envs=20, seed=args.seed)
    model = DMASHSAC(
        "MlpPolicy",
        env,
        method=args.method,
        learning_starts=20 * args.learning_starts,
        batch_size=256,
        seed=args.seed,
        policy_kwargs=dict(net_arch=args.net_arch),
    )
    start = time.perf_counter()
    for chunk in range(args.updates // args.every):
        vector_steps = args.every + (args.learning_starts if chunk == 0 else 0)
        model.learn(20 * vector_steps, reset_num_timesteps=False)
        use = context_use(model)
        values = model.logger.name_to_value
        print(
            f"{args.method} {(chunk + 1) * args.every} updates: probe {use['probe']:.2f} |a+ - a-| {use['diff']:.3f} "
            f"a0 sgn(c0) sgn(x): pos {use['pos']:+.2f} neg {use['neg']:+.2f} "
            f"dynamics loss {values['train/dynamics_loss']:.2e} ent_coef {values['train/ent_coef']:.3f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
