"""Keep glibc from handing large tensor buffers back to the OS after every batch.

glibc serves allocations above its mmap threshold with a fresh ``mmap`` and unmaps them on
free, so every batch of a conv net page-faults its activations in again (zeroed by the
kernel). The threshold also moves: freeing such a block raises it to that block's size, so
whether a batch of a given size pays the faults depends on what the process allocated before.
Measured on this project's 2-core CPU: the giant's batch of 256 took 215 ms with the defaults
and 154-167 ms with fixed thresholds, and served giant-only used ~14 % less CPU per request; a
profile taken after other work (the quickstart) and a fresh one disagreed for the same reason.

``pin_large_allocations`` fixes both thresholds high, once per process, so buffers are reused
from the heap and timings no longer depend on history. The CLI and the benchmarks call it; a
library user's process is left alone unless they call it. ``HYBRIDSERVE_MALLOC=default``
turns it off (then glibc's adaptive behaviour applies).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (the giant's largest batch needs ~32 MiB a layer).
MMAP_THRESHOLD_BYTES = 256 * 1024 * 1024
#: Free memory at the top of the heap is returned to the OS only beyond this.
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024
ENV = "HYBRIDSERVE_MALLOC"

_pinned: bool | None = None


def pin_large_allocations() -> bool:
    """Fix glibc's mmap and trim thresholds (once); True if they are set in this process."""
    global _pinned
    if _pinned is not None:
        return _pinned
    _pinned = False
    if os.environ.get(ENV, "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)
    ok = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1) and ok
    if not ok:
        log.warning("mallopt refused the thresholds; glibc's adaptive defaults stay")
    _pinned = ok
    return ok


def allocator_settings() -> dict[str, object]:
    """What ``pin_large_allocations`` did, for reports (``profile.json``, ``report.json``)."""
    return {
        "malloc_thresholds_pinned": bool(_pinned),
        "mmap_threshold_bytes": MMAP_THRESHOLD_BYTES if _pinned else None,
        "trim_threshold_bytes": TRIM_THRESHOLD_BYTES if _pinned else None,
    }
