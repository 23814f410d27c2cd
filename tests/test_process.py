"""glibc's thresholds are pinned once per process, and can be left alone."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from hybridserve import process

pytestmark = pytest.mark.unit


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_pinned_thresholds_serve_large_blocks_from_the_heap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = _libc()
    monkeypatch.setattr(process, "_pinned", None)
    monkeypatch.delenv(process.ENV, raising=False)
    assert process.pin_large_allocations() is True
    assert process.process_settings()["malloc_thresholds_pinned"] is True
    before = libc.mallinfo2().hblks
    block = libc.malloc(64 * 1024 * 1024)  # above the 32 MiB glibc can adapt its threshold to
    try:
        # unpinned, a block this size is always its own mmap, whatever the history
        assert libc.mallinfo2().hblks == before
    finally:
        libc.free(block)


def test_opting_out_leaves_glibc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "_pinned", None)
    monkeypatch.setenv(process.ENV, "default")
    assert process.pin_large_allocations() is False
    settings = process.process_settings()
    assert settings["malloc_thresholds_pinned"] is False
    assert settings["mmap_threshold_bytes"] is None


def test_gc_tuning_freezes_live_objects_and_raises_the_young_threshold() -> None:
    import gc

    alive = [object()]  # a container the collector tracks
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        frozen = process.tune_gc_for_serving()
        # not an equality: threads other tests left running (Ray's, servers') allocate and free
        assert frozen > 0 and gc.get_freeze_count() > 0
        assert gc.get_threshold() == (process.GC_GEN0_THRESHOLD, 10, 10)
        settings = process.process_settings()
        assert settings["gc_frozen_objects"] > 0
        assert settings["gc_thresholds"] == [process.GC_GEN0_THRESHOLD, 10, 10]
        assert not any(o is alive for o in gc.get_objects())  # not in any generation
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert any(o is alive for o in gc.get_objects())
