"""Process settings for serving: glibc's allocation thresholds and the garbage collector.

**Allocator.** glibc serves allocations above its mmap threshold with a fresh ``mmap`` and
unmaps them on free, so every batch of a conv net page-faults its activations in again (zeroed
by the kernel). The threshold also moves: freeing such a block raises it to that block's size,
so whether a batch of a given size pays the faults depends on what the process allocated before:
a conv net's batch runs measurably slower with the defaults, and a profile taken after other work
and a fresh one disagree (docs/measurements.md, "Figures behind design choices").

``pin_large_allocations`` fixes both thresholds high, once per process, so buffers are reused
from the heap and timings no longer depend on history. The CLI and the benchmarks call it; a
library user's process is left alone unless they call it. ``HYBRIDSERVE_MALLOC=default``
turns it off (then glibc's adaptive behaviour applies).

**Garbage collector.** A serving process holds hundreds of thousands of tracked objects once
torch, numpy, the server and the models are loaded, and every full collection walks them all,
a cost the event loop pays per request. And a young-generation collection, due every 700
allocations of containers (a request makes several), walks every in-flight request's objects
(figures: docs/measurements.md, "Figures behind design choices"). ``tune_gc_for_serving`` collects
once, moves what is alive into the permanent generation (``gc.freeze``: later collections walk
only what serving allocates), and raises the young generation's threshold to
``GC_GEN0_THRESHOLD``. Reference counting still frees everything acyclic at once; only cycles
wait longer. ``EngineConfig(tune_gc_at_start=True)`` calls it when the engine is ready; the
CLI's ``serve`` and ``bench`` set it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
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
#: Allocations of containers between young-generation collections while serving (default 700).
GC_GEN0_THRESHOLD = 20_000

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


def tune_gc_for_serving() -> int:
    """Collect garbage, keep every live object out of later collections, and collect the young
    generation less often; return how many objects are frozen now."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 and gen0 < GC_GEN0_THRESHOLD:  # 0 means disabled: leave that alone
        gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    return gc.get_freeze_count()


def process_settings() -> dict[str, object]:
    """What this module did to the process, for reports (``profile.json``, ``report.json``)."""
    return {
        "malloc_thresholds_pinned": bool(_pinned),
        "mmap_threshold_bytes": MMAP_THRESHOLD_BYTES if _pinned else None,
        "trim_threshold_bytes": TRIM_THRESHOLD_BYTES if _pinned else None,
        "gc_frozen_objects": gc.get_freeze_count(),
        "gc_thresholds": list(gc.get_threshold()),
    }
