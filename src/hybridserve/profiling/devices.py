"""Device strings (``cpu``, ``cuda``, ``cuda:N``): parsing, existence checks and descriptions."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from typing import Literal

from hybridserve.errors import HybridServeError
from hybridserve.profiling.profile import DeviceInfo

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


def parse_device(device: str) -> DeviceSpec:
    """Parse ``cpu``, ``cuda`` or ``cuda:N`` (syntax only); anything else is a user error."""
    m = _PATTERN.match(device.strip().lower())
    if m is None:
        raise HybridServeError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if m.group(1) == "cpu":
        if m.group(2) is not None:
            raise HybridServeError(f"--device {device!r}: the CPU takes no index; use cpu")
        return DeviceSpec("cpu")
    return DeviceSpec("cuda", int(m.group(2) or 0))


def resolve_device(device: str) -> DeviceSpec:
    """Parse ``device`` and check that it exists on this machine."""
    spec = parse_device(device)
    if spec.type == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise HybridServeError(f"--device {device!r}: no CUDA device on this machine")
        if (spec.index or 0) >= count:
            raise HybridServeError(
                f"--device {device!r}: this machine has {count} CUDA device(s), cuda:0..{count - 1}"
            )
    return spec


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def describe_device(spec: DeviceSpec) -> DeviceInfo:
    """Name, cores and memory of the device, and the torch version measuring it."""
    import psutil
    import torch

    if spec.type == "cuda":
        props = torch.cuda.get_device_properties(spec.index or 0)
        return DeviceInfo(
            type="cuda",
            name=str(props.name),
            cores=int(props.multi_processor_count),
            memory_bytes=int(props.total_memory),
            torch=str(torch.__version__),
        )
    return DeviceInfo(
        type="cpu",
        name=_cpu_name(),
        cores=cpu_cores(),
        memory_bytes=int(psutil.virtual_memory().total),
        torch=str(torch.__version__),
    )
