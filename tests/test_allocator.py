"""glibc's thresholds are pinned once per process, and can be left alone."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from hybridserve import allocator

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
    monkeypatch.setattr(allocator, "_pinned", None)
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert allocator.pin_large_allocations() is True
    assert allocator.allocator_settings()["malloc_thresholds_pinned"] is True
    before = libc.mallinfo2().hblks
    block = libc.malloc(64 * 1024 * 1024)  # above the 32 MiB glibc can adapt its threshold to
    try:
        # unpinned, a block this size is always its own mmap, whatever the history
        assert libc.mallinfo2().hblks == before
    finally:
        libc.free(block)


def test_opting_out_leaves_glibc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_pinned", None)
    monkeypatch.setenv(allocator.ENV, "default")
    assert allocator.pin_large_allocations() is False
    settings = allocator.allocator_settings()
    assert settings["malloc_thresholds_pinned"] is False
    assert settings["mmap_threshold_bytes"] is None
