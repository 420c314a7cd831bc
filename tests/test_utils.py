"""Process-wide settings are opt-in: importing the library changes nothing; tune_malloc changes the allocator only."""

import subprocess
import sys

import numpy as np
import torch as th

from sb3_dmash.experiments.utils import tune_malloc

RECORD_MALLOPT = """
import ctypes
calls = []
real_cdll = ctypes.CDLL
class Recorder:
    def __init__(self, *args, **kwargs):
        self._lib = real_cdll(*args, **kwargs)
    def __getattr__(self, name):
        attr = getattr(self._lib, name)
        if name == "mallopt":
            return lambda *a: calls.append(a) or attr(*a)
        return attr
ctypes.CDLL = Recorder
import torch
import aib, sb3_dmash, sb3_dmash.zoo, sb3_dmash.experiments.bench, sb3_dmash.experiments.cli
from sb3_dmash import DMASHSAC
print("on import", len(calls))
from sb3_dmash.experiments.utils import tune_malloc
print("tuned", tune_malloc(), len(calls))
print("matmul backend", torch.backends.mkldnn.matmul.fp32_precision)
"""


def test_import_changes_no_process_wide_setting():
    out = subprocess.run([sys.executable, "-c", RECORD_MALLOPT], capture_output=True, text=True, check=True).stdout
    assert "on import 0" in out
    assert "tuned True 3" in out
    assert "matmul backend none" in out  # the default: fp32 matmuls are never switched to bf16 behind the user's back


def test_tune_malloc_keeps_numerics():
    x = th.randn(240, 64, generator=th.Generator().manual_seed(0))
    before = (x @ x.T).numpy()
    assert tune_malloc()
    np.testing.assert_array_equal(before, (x @ x.T).numpy())
