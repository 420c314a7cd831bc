"""The scripts in examples/ run end to end at a tiny budget (their results are not checked here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_di_runs_and_prints_the_per_mode_table() -> None:
    args = ["--vector-steps", "4", "--learning-starts", "30", "--net-arch", "16", "--eval-episodes", "1"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_di.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| agent | split | AER | inverted (action_factor -1) | nominal (+1) |" in out.stdout
    for agent in ("DMA*-SH (DMASHSAC)", "SAC (context-unaware)"):
        for split in ("train", "eval_in", "eval_out"):
            assert f"| {agent} | {split} |" in out.stdout
