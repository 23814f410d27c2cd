"""Summaries of load runs and the ``report.json`` / ``report.md`` they are written to.

``report.json`` (format kind ``report``)::

    {"task": "classify|generate", "machine": {...}, "energy_source": "nvml|rapl|modelled",
     "load": {"mode": "saturate|open-loop", ...},
     "systems": {NAME: {"accuracy", "energy_j_per_request", "throughput_rps",
                        "latency_ms": {"p50", "p90", "p99"}, "requests", "errors",
                        "reach_fraction": {model: fraction},
                        "chain": [model, ...], "deferral": "maxprob|learned|...", ...}}}

Version 2 added ``task`` (version 1 files are classifier reports); a generative report
(``task: generate``, ``bench/genrun.py``) keeps every field above and adds per system
``tokens_per_s``, ``tokens_per_request`` and ``generated_tokens_per_request``.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybridserve.bench.loadgen import RunResult
from hybridserve.process import process_settings
from hybridserve.workdir import read_json, write_json

REPORT_VERSION = 2
#: Versions ``read_report`` accepts (1: before ``task``; classifier reports only).
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class SystemResult:
    """One served system's measured figures."""

    accuracy: float
    energy_j_per_request: float | None  # None where nothing was metered (a remote server)
    throughput_rps: float
    latency_ms: Mapping[str, float]
    requests: int
    errors: int
    reach_fraction: Mapping[str, float]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "energy_j_per_request": self.energy_j_per_request,
            "throughput_rps": self.throughput_rps,
            "latency_ms": dict(self.latency_ms),
            "requests": self.requests,
            "errors": self.errors,
            "reach_fraction": dict(self.reach_fraction),
            **dict(self.extra),
        }


def summarise(
    run: RunResult,
    chain: Sequence[str],
    energy_j: float,
    *,
    extra: Mapping[str, Any] | None = None,
    span_s: float | None = None,
) -> SystemResult:
    """Accuracy, energy per answered request, throughput, latency percentiles and reach.

    Throughput is answers per second of ``span_s`` (the summed spans of a system's rounds),
    else of the run's own span (first request sent to last answer).
    """
    done = run.completed
    n = len(done)
    lat = np.array([(r.done_s - r.sent_s) * 1e3 for r in done]) if n else np.array([np.nan])
    reach = {m: (sum(1 for r in done if m in r.path) / n if n else 0.0) for m in chain}
    span = max(span_s if span_s is not None else run_span(run), 1e-9)
    return SystemResult(
        accuracy=float(np.mean([r.correct for r in done])) if n else float("nan"),
        energy_j_per_request=energy_j / n if n and math.isfinite(energy_j) else None,
        throughput_rps=n / span,
        latency_ms={
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
        },
        requests=len(run.records),
        errors=len(run.records) - n,
        reach_fraction=reach,
        extra=dict(extra or {}),
    )


def run_span(run: RunResult) -> float:
    """Seconds from the first request sent to the last answer (the wall time if none came)."""
    done = run.completed
    if not done:
        return run.wall_s or 1.0
    return max(max(r.done_s for r in done) - min(r.sent_s for r in done), 1e-9)


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        **process_settings(),
    }


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    """Write a report; one without ``task`` is a classifier's."""
    write_json(path, "report", REPORT_VERSION, {"task": "classify", **report})


def read_report(path: Path) -> dict[str, Any]:
    """A report of any readable version, ``task`` filled in for version 1 files."""
    body = read_json(path, "report", READABLE_VERSIONS)
    body.setdefault("task", "classify")
    return body


def system_label(name: str, s: Mapping[str, Any]) -> str:
    """``cascade-ap (learned)``: a cascade's name with its deferral rule (single models: name)."""
    rule = s.get("deferral")
    return f"{name} ({rule})" if rule and len(s.get("chain") or ()) > 1 else name


def markdown_table(systems: Mapping[str, Mapping[str, Any]], baseline: str = "giant-only") -> str:
    """The comparison table, with energy and throughput relative to ``baseline``."""
    base = systems.get(baseline)
    rows = [
        "| system | accuracy | energy J/req | energy ÷ giant | throughput req/s | × giant "
        "| p50 ms | p90 ms | p99 ms | requests | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in systems.items():
        e_ratio = t_ratio = "—"
        energy = s.get("energy_j_per_request")
        if base and energy and base.get("energy_j_per_request"):
            e_ratio = f"{s['energy_j_per_request'] / base['energy_j_per_request']:.3f}"
        if base and s.get("throughput_rps") and base.get("throughput_rps"):
            t_ratio = f"{s['throughput_rps'] / base['throughput_rps']:.2f}"
        lat = s.get("latency_ms") or {}

        def ms(key: str, lat: Mapping[str, float] = lat) -> str:
            v = lat.get(key)
            return "—" if v is None or v != v else f"{v:.1f}"

        thr = s.get("throughput_rps")
        rows.append(
            f"| {system_label(name, s)} | {100 * s['accuracy']:.2f} % "
            f"| {'—' if energy is None else f'{energy:.5f}'} | {e_ratio} "
            f"| {'—' if thr is None else f'{thr:.0f}'} | {t_ratio} | {ms('p50')} | {ms('p90')} "
            f"| {ms('p99')} | {s.get('requests', '—')} | {s.get('errors', '—')} |"
        )
    return "\n".join(rows)


def token_table(systems: Mapping[str, Mapping[str, Any]], baseline: str = "giant-only") -> str:
    """Generative reports: tokens per second and per request beside the comparison table."""
    base = systems.get(baseline) or {}
    rows = [
        "| system | tokens/s | × giant | answer tokens / request | tokens generated / request |",
        "|---|---|---|---|---|",
    ]
    for name, s in systems.items():
        tps, base_tps = s.get("tokens_per_s"), base.get("tokens_per_s")
        ratio = f"{tps / base_tps:.2f}" if tps and base_tps else "—"
        per = s.get("tokens_per_request")
        generated = s.get("generated_tokens_per_request") or {}
        total = sum(generated.values()) if generated else None
        rows.append(
            f"| {system_label(name, s)} | {'—' if tps is None else f'{tps:.0f}'} | {ratio} "
            f"| {'—' if per is None else f'{per:.2f}'} "
            f"| {'—' if total is None else f'{total:.2f}'} |"
        )
    return "\n".join(rows)
