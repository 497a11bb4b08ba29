"""Process-wide C allocator settings that make batched CPU inference pay (issue 14 item 6).

At batch 32 the prior's last blocks make hidden maps of 60-240 MB. glibc's ``malloc`` serves
every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns it to the
kernel on ``free``, so each render maps, faults in and zeroes gigabytes afresh: on the 2-core
benchmark machine a quarter to a third of the batch-32 render's time was system time in page
faults (``benchmarks/batch_speed.py``, figures in ``benchmarks/RESULTS.md``). At batch 1 the maps
are a few MB and malloc reuses them, which is why batching did not pay.

:func:`retain_freed_memory` raises the mmap and trim thresholds so that freed blocks stay in the
heap and the next batch reuses them. It changes no result, only where memory comes from; the
price is that the process keeps its peak heap (about the peak of one batch) until it exits.
``dapfsr upscale`` and ``dapfsr bench`` call it; library users may call it once at start-up
(``DAPFSR_RETAIN_FREED_MEMORY=0`` turns it off for the commands).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30
"""Blocks below 1 GiB come from the heap (the largest map at batch 32 is about 240 MB)."""
TRIM_THRESHOLD = (1 << 31) - 1
"""Free memory at the top of the heap is kept up to about 2 GiB (``mallopt`` takes an ``int``)."""
ENV = "DAPFSR_RETAIN_FREED_MEMORY"

_applied = False


def retain_freed_memory() -> bool:
    """Keep freed large blocks in the C heap for reuse (glibc ``mallopt``); returns whether the
    setting is in effect. A no-op returning ``False`` off glibc (macOS, Windows, musl) or when
    ``DAPFSR_RETAIN_FREED_MEMORY=0``."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        if not libc.gnu_get_libc_version:
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Order matters: setting the trim threshold first keeps a later refused mmap setting harmless.
    _applied = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return _applied
