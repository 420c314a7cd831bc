"""Single-env throughput of every AIB environment (steps per second), as a markdown table.

Method: one env built with ``gym.make`` (so gymnasium's ``TimeLimit``, ``OrderEnforcing`` and
passive checker wrappers are included), uniform random actions sampled before the clock starts, ``--steps`` steps
timed with ``time.perf_counter``, resets at the end of each episode included, median of ``--repeats`` runs. Each env
runs one fixed context (instance 0 of the train split), as a sub-env of ``aib.make_vec_env`` does; building the
physics (and, for dm_control, compiling the model) happens before timing.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/env_throughput.py                       # all 13 ids + ODE-k5, 10k steps
    OMP_NUM_THREADS=1 python benchmarks/env_throughput.py --steps 2000 --envs AIB-DI-v0 AIB-Cheetah-v0
    OMP_NUM_THREADS=1 python benchmarks/env_throughput.py --write docs/benchmark.md

``--write`` replaces the text between ``<!-- env-throughput:start -->`` and ``<!-- env-throughput:end -->`` in the
given file with the table and a line describing the machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import aib

START_MARKER = "<!-- env-throughput:start -->"
END_MARKER = "<!-- env-throughput:end -->"
SIMULATORS = {None: "numpy", "dmc": "dm_control", "mujoco": "gymnasium MuJoCo"}


def entries(env_ids: Sequence[str] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, env_id, env_kwargs)`` of the AIB-v2 suite (the 13 ids and ODE-k5), optionally filtered by id."""
    rows = []
    for info in aib.SUITES["AIB-v2"]:
        if env_ids and info.env_id not in env_ids:
            continue
        label = info.env_id + "".join(f" ({k}={v})" for k, v in info.env_kwargs.items())
        rows.append((label, info.env_id, dict(info.env_kwargs)))
    return rows


def measure(env_id: str, env_kwargs: dict[str, Any], steps: int, repeats: int, seed: int = 0) -> list[float]:
    """Steps per second of ``repeats`` timed runs of ``steps`` steps each."""
    k = env_kwargs.get("k", 2)
    context = aib.get_contexts(env_id, "train", k=k)[0]
    env = gym.make(env_id, context=context, **env_kwargs)
    env.action_space.seed(seed)
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=seed)
    for action in actions[: min(100, steps)]:  # warm-up: first-call costs outside the clock
        env.step(action)
    rates = []
    for repeat in range(repeats):
        env.reset(seed=seed + repeat)
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        rates.append(steps / (time.perf_counter() - start))
    env.close()
    return rates


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(steps: int, repeats: int) -> str:
    versions = ", ".join(f"{p} {_version(p)}" for p in ("gymnasium", "mujoco", "dm_control", "numpy"))
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"Measured on {_cpu()} ({os.cpu_count()} logical CPUs{load}, OMP_NUM_THREADS={threads}), Python "
        f"{platform.python_version()}, {versions}; {steps:,} steps per run, median of {repeats} runs."
    )


def table(results: list[tuple[str, str, float | None, str]]) -> str:
    lines = ["| env | simulator | steps/s | ms/step |", "|---|---|---:|---:|"]
    for label, simulator, rate, error in results:
        if rate is None:
            lines.append(f"| `{label}` | {simulator} | n/a ({error}) | n/a |")
        else:
            lines.append(f"| `{label}` | {simulator} | {rate:,.0f} | {1000.0 / rate:.3f} |")
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the marked section of ``path`` with ``text`` (the markers stay)."""
    content = path.read_text()
    start, end = content.find(START_MARKER), content.find(END_MARKER)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"{path} has no section {START_MARKER} ... {END_MARKER}")
    new = content[: start + len(START_MARKER)] + "\n" + text.strip() + "\n" + content[end:]
    path.write_text(new)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000, help="steps per timed run (default 10,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per env; the median is reported (default 3)")
    parser.add_argument("--envs", nargs="+", default=None, metavar="ID", help="only these AIB ids (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the actions and resets")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE", help="replace the marked section of FILE")
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.repeats <= 0:
        parser.error("--steps and --repeats must be positive")
    unknown = [env_id for env_id in args.envs or () if env_id not in aib.list_envs()]
    if unknown:
        parser.error(f"unknown AIB ids {unknown}; expected some of {aib.list_envs()}")

    machine = machine_line(args.steps, args.repeats)  # before measuring: the load average of the other processes
    results: list[tuple[str, str, float | None, str]] = []
    for label, env_id, env_kwargs in entries(args.envs):
        simulator = SIMULATORS[aib.env_info(env_id).requires]
        try:
            rate: float | None = statistics.median(measure(env_id, env_kwargs, args.steps, args.repeats, args.seed))
            error = ""
        except Exception as exc:  # an env whose optional dependency is missing: report it, measure the others
            rate, error = None, f"{type(exc).__name__}: {exc}".splitlines()[0][:80]
            print(f"{label}: {error}", file=sys.stderr)
        results.append((label, simulator, rate, error))
        print(f"{label}: {'n/a' if rate is None else f'{rate:,.0f} steps/s'}", file=sys.stderr, flush=True)

    text = table(results) + "\n\n" + machine
    print(text)
    if args.write is not None:
        write_section(args.write, text)
        print(f"wrote the table into {args.write}", file=sys.stderr)
    return 1 if any(rate is None for _, _, rate, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
