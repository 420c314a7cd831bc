"""Training throughput of DMA*-SH against SB3's SAC, measured side by side.

Each measurement runs in its own process with one torch thread; the configurations are interleaved and repeated, so
that drift of a shared machine hits all of them alike. Prints, per env: vector steps/s (median and range), the ratio
to SAC, the update time per vector step, peak memory, replay bytes per stored transition, and the achieved GFLOP/s of
the hypernetwork's products next to the best fp32 matrix-product rate of this CPU for the same shapes.

    python benchmarks/throughput.py                       # AIB-Walker-v0 (K=128) and AIB-DI-v0 (K=24)
    python benchmarks/throughput.py --envs AIB-DI-v0 --vector-steps 100 --repeats 2

Setup (the paper's): 20 sub-envs, batch 240 (12 per context), one update round per vector step, learning starts after a
few hundred random vector steps (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "sac": "SB3 SAC (as shipped)",
    "dmash": "DMA*-SH, exact",
    "dmash_approx": "DMA*-SH, reuse_rl_context=True (approximation)",
    "dmash_bf16": "DMA*-SH, hypernet_dtype='bfloat16' (approximation)",
    "dmash_unchecked": "DMA*-SH, exact, non-finite check off (only to measure its cost)",
}
APPROXIMATIONS = ("dmash_approx", "dmash_bf16")
DEFAULT_CONFIGS = ("sac", "dmash", "dmash_approx", "dmash_bf16")


def _guard_ms_per_round(n_rounds: int = 20_000) -> float:
    """Milliseconds per update round of the non-finite check as DMASHSAC runs it on average: 4 observed losses (dynamics,
    critic, and the actor's and entropy coefficient's on every second round, twice) and one read every 100 rounds."""
    import torch as th

    from sb3_dmash.common.divergence import FiniteGuard

    guard = FiniteGuard("benchmark", ("dynamics_loss", "critic_loss", "actor_loss", "ent_coef_loss"))
    losses = [th.rand((), requires_grad=True) * 2 for _ in range(4)]  # scalar losses with autograd history, as in train()
    params = [(f"p{i}", th.randn(256, 256)) for i in range(30)]
    start = time.perf_counter()
    for _ in range(n_rounds):
        guard.observe("dynamics_loss", losses[0])
        guard.observe("critic_loss", losses[1])
        guard.observe("actor_loss", losses[2])  # two actor updates every second round: one per round on average
        guard.observe("ent_coef_loss", losses[3])
        if guard.end_round():
            guard.check(params)
    return 1000 * (time.perf_counter() - start) / n_rounds


def _hypernet_rates(batch: int = 240) -> dict[str, float]:
    """Achieved GFLOP/s of one materialisation of omega by the hypernetwork heads, and the best fp32 rate of a single
    matrix product of the same total shape on this CPU."""
    import torch as th

    from sb3_dmash.common.hypernetworks import HyperNetwork

    hyper = HyperNetwork(8, 256)
    z = th.rand(batch, 8)
    x = hyper.trunk(z).detach()
    n_out = hyper.n_generated
    flops = 2 * batch * 64 * n_out
    weight, bias = th.randn(n_out, 64), th.randn(n_out)

    def best(fn, n: int = 30) -> float:
        for _ in range(5):
            fn()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with th.no_grad():
        heads = best(lambda: [head(x) for head in (hyper.w1_head, hyper.b1_head, hyper.w2_head, hyper.b2_head)])
        single = best(lambda: th.addmm(bias, x, weight.t()))
    return {"hypernet_gflops": flops / heads / 1e9, "best_gflops": flops / single / 1e9}


def worker(config: str, env_id: str, vector_steps: int, learning_starts: int) -> dict:
    import resource

    import numpy as np
    import torch as th
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    import aib
    from sb3_dmash import DMASHSAC
    from sb3_dmash.experiments.utils import tune_malloc

    th.set_num_threads(1)
    malloc_tuned = tune_malloc()  # our entry points opt in (docs/performance.md)
    n_envs = 20
    env = aib.make_vec_env(env_id, "train", n_envs=n_envs, seed=0)
    common = dict(learning_starts=learning_starts * n_envs, train_freq=1, gradient_steps=1, seed=0, buffer_size=200_000)
    if config == "sac":
        model = SAC("MlpPolicy", env, batch_size=240, **common)
    else:
        model = DMASHSAC(
            "MlpPolicy",
            env,
            batch_size=256,
            reuse_rl_context=config == "dmash_approx",
            policy_kwargs={"hypernet_dtype": "bfloat16" if config == "dmash_bf16" else "float32"},
            **common,
        )
        if config == "dmash_unchecked":
            model.finite_check_interval = None  # type: ignore[assignment]

    update_time = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            update_time[0] += time.perf_counter() - start
            return result

        return wrapper

    model.train = timed(model.train)  # type: ignore[method-assign]
    if config != "sac":
        from sb3_dmash.common.callbacks import DynamicsAlignmentCallback

        DynamicsAlignmentCallback.update = timed(DynamicsAlignmentCallback.update)  # type: ignore[method-assign]

    skip = 10  # vector steps after learning starts that are not timed (allocator and caches settle)

    class Clock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.start: float | None = None
            self.start_update = 0.0
            self.steps = 0

        def _on_step(self) -> bool:
            learning_steps = self.num_timesteps // n_envs - learning_starts
            if learning_steps == skip:
                self.start, self.start_update = time.perf_counter(), update_time[0]
            elif learning_steps > skip:
                self.steps += 1
            return True

    clock = Clock()
    model.learn((learning_starts + skip + vector_steps + 1) * n_envs, callback=clock)
    elapsed = time.perf_counter() - clock.start  # type: ignore[operator]
    buffer = model.replay_buffer
    arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
    result = {
        "config": config,
        "env": env_id,
        "vector_steps_per_s": clock.steps / elapsed,
        "update_ms_per_step": 1000 * (update_time[0] - clock.start_update) / clock.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "replay_bytes_per_transition": sum(a.nbytes for a in arrays) / (buffer.buffer_size * buffer.n_envs),
        "malloc_tuned": malloc_tuned,
        "device": str(model.device),
    }
    if config == "dmash":
        result.update(_hypernet_rates())
        result["guard_ms_per_round"] = _guard_ms_per_round()
    return result


def run_worker(config: str, env_id: str, vector_steps: int, learning_starts: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [sys.executable, __file__, "--worker", json.dumps([config, env_id, vector_steps, learning_starts])]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {config} on {env_id} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: list[dict], envs: list[str], configs: list[str]) -> str:
    lines = [
        "| env | configuration | vector steps/s (median [min, max]) | x SAC | update ms / vector step | peak RSS MB "
        "| replay B/transition |",
        "|---|---|---|---|---|---|---|",
    ]
    checks = []
    for env_id in envs:
        medians = {}
        for config in configs:
            rows = [r for r in results if r["env"] == env_id and r["config"] == config]
            rates = [r["vector_steps_per_s"] for r in rows]
            medians[config] = statistics.median(rates)
            update = statistics.median(r["update_ms_per_step"] for r in rows)
            rss = max(r["peak_rss_mb"] for r in rows)
            replay = rows[0]["replay_bytes_per_transition"]
            ratio = medians[config] / medians["sac"] if "sac" in medians else float("nan")
            lines.append(
                f"| {env_id} | {CONFIGS[config]} | {medians[config]:.1f} [{min(rates):.1f}, {max(rates):.1f}] | {ratio:.2f} | "
                f"{update:.1f} | {rss:.0f} | {replay:.1f} |"
            )
        sac_replay = next(
            (r["replay_bytes_per_transition"] for r in results if r["env"] == env_id and r["config"] == "sac"), None
        )
        if "sac" in medians:
            for config, target in (("dmash", 0.25), *((c, 0.30) for c in APPROXIMATIONS)):
                if config in medians:
                    ratio = medians[config] / medians["sac"]
                    verdict = "PASS" if ratio >= target else "FAIL"
                    checks.append(f"{env_id}: {CONFIGS[config]} at {ratio:.2f} x SAC (target >= {target}): {verdict}")
        dmash = [r for r in results if r["env"] == env_id and r["config"] == "dmash"]
        if dmash and sac_replay:
            ratio = dmash[0]["replay_bytes_per_transition"] / sac_replay
            verdict = "PASS" if ratio <= 1.10 else "FAIL"
            checks.append(f"{env_id}: replay bytes per transition {ratio:.3f} x SAC's (target <= 1.10): {verdict}")
        if dmash:
            guard = statistics.median(r["guard_ms_per_round"] for r in dmash)
            update = statistics.median(r["update_ms_per_step"] for r in dmash)
            share = 100 * guard / update
            checks.append(
                f"{env_id}: non-finite check {guard * 1000:.0f} us per update round, {share:.2f} % of the exact update "
                f"({update:.1f} ms; target <= 2 %): {'PASS' if share <= 2 else 'FAIL'}"
            )
            if "dmash_unchecked" in medians:
                ratio = medians["dmash"] / medians["dmash_unchecked"]
                checks.append(f"{env_id}: end to end, with the check / without it: {ratio:.3f} x the vector steps/s")
            achieved = statistics.median(r["hypernet_gflops"] for r in dmash)
            best = statistics.median(r["best_gflops"] for r in dmash)
            checks.append(
                f"{env_id}: hypernetwork products {achieved:.1f} GFLOP/s vs best fp32 {best:.1f} GFLOP/s "
                f"({100 * achieved / best:.0f} %, target >= 70 %): {'PASS' if achieved >= 0.7 * best else 'FAIL'}"
            )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {c}" for c in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["AIB-Walker-v0", "AIB-DI-v0"])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--vector-steps", type=int, default=200, help="timed vector steps per measurement")
    parser.add_argument("--learning-starts", type=int, default=200, help="random vector steps before learning (not timed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return
    import platform

    import torch

    results = []
    for repeat in range(args.repeats):
        for env_id in args.envs:
            for config in args.configs:
                result = run_worker(config, env_id, args.vector_steps, args.learning_starts)
                results.append(result)
                print(
                    f"[{repeat + 1}/{args.repeats}] {env_id} {config}: {result['vector_steps_per_s']:.1f} vector steps/s",
                    flush=True,
                )
    devices = sorted({r["device"] for r in results})
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), device {', '.join(devices)}, "
        f"1 thread per process, {args.vector_steps} timed vector steps x {args.repeats} interleaved repeats\n"
    )
    print(report(results, args.envs, args.configs))


if __name__ == "__main__":
    main()
