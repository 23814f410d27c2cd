"""What a profile records of the device it measured (device strings: ``hybridserve.devices``)."""

from __future__ import annotations

import platform

from hybridserve.devices import DeviceSpec, cpu_cores
from hybridserve.profiling.profile import DeviceInfo


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
