"""Process-wide performance settings (never applied on import: our entry points (the ``sb3-dmash`` CLI and its bench
workers, the benchmark scripts) call them, and users opt in explicitly), and imports of the optional extras."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from types import ModuleType

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Keep freed memory in the process instead of returning it to the OS (glibc only).

    A DMA*-SH update allocates and frees tensors of several MB (the generated adapter weights and their gradients).
    With glibc's defaults each of them is a fresh ``mmap`` whose pages fault on first touch: thousands of page faults
    per update round (measured: about 3,300 per round on AIB-DI-v0, 0 after this call). Sets the mmap threshold to
    32 MiB, never trims the heap, and pads it by 512 MiB. Numerics are unchanged. Process-wide: call it only in a
    process you own.

    :return: whether the settings were applied (False where glibc is not the allocator).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok &= mallopt(_M_TOP_PAD, 512 * 1024 * 1024) == 1
    return bool(ok)


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` of an optional extra; if it (or one of its own dependencies) is missing, say what to install.

    :param module: the module to import (``"pandas"``, ``"scipy.special"``).
    :param extra: the sb3-dmash extra that provides it (``"analysis"``).
    :raises ModuleNotFoundError: naming the missing module and the ``pip install "sb3-dmash[extra]"`` command.
    """
    from aib._optional import require as require_extra

    return require_extra(module, extra, who_needs="this feature of sb3-dmash needs")
