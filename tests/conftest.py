"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """Run a script of the repository (``"examples/train_di.py"``) in a fresh interpreter with one torch thread; its
    exit status must be 0 unless ``check=False``."""

    def run(path: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [sys.executable, str(ROOT / path), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=600,
            check=False,
        )
        if check:
            assert out.returncode == 0, out.stderr[-3000:]
        return out

    return run
