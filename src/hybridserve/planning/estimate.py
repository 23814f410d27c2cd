"""Estimated profile tables for GPUs we could not measure, from datasheet specs and model shapes.

No GPU measurement was made for the bundled ``profile-a5000.yaml`` / ``profile-h100.yaml``;
they are written by this module (``python -m hybridserve.planning.estimate``) and say
``estimate: true``. One GPU was measured since (``profile-h200.json``; docs/measurements.md
"On a GPU" compares it with these tables): for this tiny family the estimates are
optimistic, since per-batch host overhead, not arithmetic, sets a batch's cost there and the GPU
stays mostly idle.

Per model, from its MACs, parameters and activation sizes (counted with forward hooks on the
bundled architectures, FP32):

* latency per batch (ms) = ``batch_overhead_ms + kernels·kernel_launch_ms + weight_bytes/BW``
  (intercept) + ``b · (2·MACs / (efficiency·FP32 FLOP/s) + 2·4·activations / BW)`` (slope):
  a fixed per-batch cost (host→device copy, synchronisation, Python dispatch), one launch per
  layer, weights read once per batch, arithmetic at a fixed fraction of peak FP32, and every
  activation written and read once from memory;
* memory (bytes) = ``weight_bytes + workspace_bytes`` + ``b · 4 · (input + 2·widest layer)``
  (the widest layer's input and output are live together at the peak);
* utilisation ``u(b) = b² / (b² + β·b)`` with ``β = resident threads / widest layer``: the
  batch at which the widest layer gives the device half its resident threads of work.

The efficiency, launch and per-batch overheads are assumptions, written into each table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from hybridserve.planning.costs import ProfileTable, TableModel, _Fit, _Util

BYTES_FP32 = 4


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of one GPU."""

    device_type: str
    name: str
    fp32_tflops: float
    memory_bandwidth_gbps: float
    memory_bytes: int
    sms: int
    threads_per_sm: int
    tdp_w: float
    source: str


A5000 = GpuSpec(
    device_type="a5000",
    name="NVIDIA RTX A5000 (24 GB GDDR6)",
    fp32_tflops=27.8,
    memory_bandwidth_gbps=768.0,
    memory_bytes=24 * 2**30,
    sms=64,
    threads_per_sm=1536,
    tdp_w=230.0,
    source="NVIDIA RTX A5000 datasheet: 27.8 TFLOPS FP32, 768 GB/s, 64 SMs (GA102), 230 W",
)

H100 = GpuSpec(
    device_type="h100",
    name="NVIDIA H100 SXM5 (80 GB HBM3)",
    fp32_tflops=66.9,
    memory_bandwidth_gbps=3350.0,
    memory_bytes=80 * 10**9,
    sms=132,
    threads_per_sm=2048,
    tdp_w=700.0,
    source="NVIDIA H100 datasheet (SXM5): 67 TFLOPS FP32, 3.35 TB/s, 132 SMs, 700 W",
)


@dataclass(frozen=True)
class Assumptions:
    """What the estimate assumes beyond the datasheet (see the module docstring)."""

    efficiency: float = 0.3  # share of peak FP32 that small convolutions reach
    kernel_launch_ms: float = 0.01  # PyTorch eager dispatch + launch per layer
    batch_overhead_ms: float = 0.1  # host->device copy, synchronise, copy back
    workspace_bytes: int = 64 * 2**20
    p90_ratio: float = 1.15


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about one model (per input sample, FP32)."""

    name: str
    params: int
    macs: int
    kernels: int
    input_elems: int
    widest_elems: int
    total_activation_elems: int

    @property
    def weight_bytes(self) -> int:
        return self.params * BYTES_FP32


def shape_of(name: str, module: object, input_shape: tuple[int, ...]) -> ModelShape:
    """Count a ``torch.nn.Sequential``'s kernels and activation sizes with forward hooks."""
    import torch
    from torch import nn

    from hybridserve.models.macs import count_macs, count_params

    assert isinstance(module, nn.Module)
    sizes: list[int] = []
    free = (nn.Flatten, nn.Dropout, nn.Identity)

    def hook(layer: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if not isinstance(layer, free):
            sizes.append(int(output[0].numel()))

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    module.eval()
    try:
        with torch.inference_mode():
            module(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    return ModelShape(
        name=name,
        params=count_params(module),
        macs=count_macs(module, input_shape),
        kernels=len(sizes),
        input_elems=math.prod(input_shape),
        widest_elems=max(sizes),
        total_activation_elems=sum(sizes),
    )


def bundled_shapes() -> list[ModelShape]:
    """Shapes of the bundled fashion-mnist family, in cascade order."""
    from hybridserve.models.zoo.fashion_mnist import ARCHITECTURES

    return [shape_of(n, build(), (1, 28, 28)) for n, build in ARCHITECTURES.items()]


def synthetic_shapes(n: int, giant_params: int = 2_000_000_000) -> list[ModelShape]:
    """``n`` models growing geometrically up to a ``giant_params`` giant (benchmarks, tests)."""
    out = []
    for i in range(n):
        scale = (i + 1) / n
        params = max(int(giant_params**scale), 1000)
        out.append(
            ModelShape(
                name=f"m{i}",
                params=params,
                macs=params * 4,
                kernels=8 + 4 * i,
                input_elems=3 * 224 * 224,
                widest_elems=max(int(params**0.5) * 8, 64),
                total_activation_elems=max(int(params**0.5) * 64, 512),
            )
        )
    return out


def estimate_model(shape: ModelShape, spec: GpuSpec, a: Assumptions) -> TableModel:
    flops = spec.fp32_tflops * 1e12 * a.efficiency
    bw = spec.memory_bandwidth_gbps * 1e9
    intercept = a.batch_overhead_ms + shape.kernels * a.kernel_launch_ms
    intercept += shape.weight_bytes / bw * 1e3
    slope = 2.0 * shape.macs / flops * 1e3
    slope += 2.0 * BYTES_FP32 * shape.total_activation_elems / bw * 1e3
    threads = spec.sms * spec.threads_per_sm
    return TableModel(
        name=shape.name,
        params=shape.params,
        macs=shape.macs,
        weight_bytes=shape.weight_bytes,
        activation_bytes=BYTES_FP32 * shape.widest_elems,
        p90_ratio=a.p90_ratio,
        latency_ms=_Fit(intercept=intercept, slope=slope),
        memory_bytes=_Fit(
            intercept=float(shape.weight_bytes + a.workspace_bytes),
            slope=float(BYTES_FP32 * (shape.input_elems + 2 * shape.widest_elems)),
        ),
        utilisation=_Util(beta=threads / max(shape.widest_elems, 1), gamma=0.0, u_max=1.0),
    )


def estimate_table(
    family: str, shapes: Sequence[ModelShape], spec: GpuSpec, a: Assumptions | None = None
) -> ProfileTable:
    a = a or Assumptions()
    return ProfileTable(
        kind="device-profile",
        device_type=spec.device_type,
        family=family,
        estimate=True,
        method=(__doc__ or "").strip(),
        specs=asdict(spec),
        assumptions=asdict(a),
        models=[estimate_model(s, spec, a) for s in shapes],
    )


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the method text) as readable ``|`` blocks."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_block)


def write_table(table: ProfileTable, path: Path) -> None:
    header = (
        f"# ESTIMATE, not a measurement: {table.device_type} costs of the {table.family} family,\n"
        "# derived from datasheet specs and model MACs by hybridserve.planning.estimate\n"
        "# (regenerate: python -m hybridserve.planning.estimate). See 'method' below.\n"
    )
    body = yaml.dump(
        table.model_dump(mode="json"),
        Dumper=_BlockDumper,
        sort_keys=False,
        width=100,
        allow_unicode=True,
    )
    path.write_text(header + body)


def main() -> None:
    """Regenerate the bundled estimated tables."""
    from hybridserve.planning.inputs import bundled_dir

    shapes = bundled_shapes()
    for spec in (A5000, H100):
        write_table(
            estimate_table("fashion-mnist", shapes, spec),
            bundled_dir() / f"profile-{spec.device_type}.yaml",
        )


if __name__ == "__main__":
    main()
