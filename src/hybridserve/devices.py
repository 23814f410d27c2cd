"""Device strings (``cpu``, ``cuda``, ``cuda:N``): parsing, and what this machine has.

Shared by the profiler, the energy meters and the serve resolver, so it sits below all of them
and imports none of them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from hybridserve.errors import HybridServeError

_PATTERN = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string."""

    type: Literal["cpu", "cuda"]
    index: int | None = None

    @property
    def torch_device(self) -> str:
        if self.type == "cpu":
            return "cpu"
        return f"cuda:{self.index or 0}"


def parse_device(device: str, option: str = "--device") -> DeviceSpec:
    """Parse ``cpu``, ``cuda`` or ``cuda:N`` (syntax only); anything else is a user error."""
    m = _PATTERN.match(device.strip().lower())
    if m is None:
        raise HybridServeError(f"{option} {device!r}: expected cpu, cuda or cuda:N")
    if m.group(1) == "cpu":
        if m.group(2) is not None:
            raise HybridServeError(f"{option} {device!r}: the CPU takes no index; use cpu")
        return DeviceSpec("cpu")
    return DeviceSpec("cuda", int(m.group(2) or 0))


def cuda_device_count() -> int:
    """CUDA devices this process can use (0 without CUDA)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(device: str, option: str = "--device") -> DeviceSpec:
    """Parse ``device`` and check that it exists on this machine."""
    spec = parse_device(device, option)
    if spec.type == "cuda":
        count = cuda_device_count()
        if count == 0:
            raise HybridServeError(f"{option} {device!r}: no CUDA device on this machine")
        if (spec.index or 0) >= count:
            raise HybridServeError(
                f"{option} {device!r}: this machine has {count} CUDA device(s), cuda:0..{count - 1}"
            )
    return spec


def memory_bytes(device: str) -> int:
    """Memory of a local device: host RAM for ``cpu``, the GPU's for ``cuda:N`` (0 if unknown)."""
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().total)
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
        except (RuntimeError, AssertionError):
            pass
    return 0


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
