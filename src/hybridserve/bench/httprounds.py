"""What the HTTP benchmarks (``benchmarks/bench_http.py``, ``bench_ray.py``) share around the
load client: the workdir check, the pre-encoded test requests, the ``hybridserve serve``
command of a system, the giant-only policy, the table of medians over rounds, and the run's
record (command, date, machine, settings)."""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil

#: Measures a row of a round carries, each the median over rounds in the table.
MEDIANS = (
    "requests_per_s",
    "p50_ms",
    "p99_ms",
    "server_cpu_ms_per_request",
    "loop_cpu_ms_per_request",
    "start_s",
)
#: Counts summed over rounds.
SUMS = ("errors", "wrong_labels", "ok")


def require_workdir(workdir: Path) -> None:
    """Exit with one line unless ``workdir`` has what serving its AP policy needs."""
    for needed in ("calibration.json", "profile.json", "policy-ap.json"):
        if not (workdir / needed).is_file():
            raise SystemExit(
                f"{workdir / needed} not found: run `hybridserve quickstart --workdir W` "
                "(or calibrate, profile and tune --mode ap) and pass --workdir W"
            )


def encoded_requests(
    family: str, images: int, kinds: Iterable[str]
) -> tuple[dict[str, list[bytes]], npt.NDArray[Any]]:
    """The first ``images`` test images of ``family``, one request body each per body kind
    (encoded before any load starts), and their labels."""
    from hybridserve.bench.httpload import make_request
    from hybridserve.models import load_family

    split = load_family(family).split("test")
    x, y = split.x[:images], split.y[:images]
    bodies = {k: [make_request(k, x[i : i + 1], family) for i in range(len(x))] for k in kinds}
    return bodies, y


def serve_command(workdir: Path, port: int, *extra: str) -> list[str]:
    """``hybridserve serve`` of ``workdir`` on ``port`` (warnings only), plus ``extra``."""
    cmd = [sys.executable, "-m", "hybridserve.cli", "serve", "--workdir", str(workdir)]
    return [*cmd, "--port", str(port), "--log-level", "warning", *extra]


def giant_only_policy(workdir: Path, out: Path) -> Path:
    """The workdir's AP policy's giant alone as a one-model chain (as ``hybridserve bench``
    builds it), saved as ``out/policy-giant-only.json``."""
    from hybridserve.bench.systems import single_model_policy
    from hybridserve.tuning.policy import CascadePolicy

    ap = CascadePolicy.load(workdir / "policy-ap.json")
    path = out / "policy-giant-only.json"
    single_model_policy(ap, ap.giant, ap.calibrators[-1]).save(path)
    return path


def median_table(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per distinct ``keys`` value, in first-seen order: the median over rounds of each
    measure a round has (``None`` where no round had it), counts summed."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    table = []
    for key, mine in groups.items():
        out: dict[str, Any] = dict(zip(keys, key, strict=True))
        out["rounds"] = len(mine)
        for field in MEDIANS:
            if any(field in r for r in mine):
                values = [r[field] for r in mine if r.get(field) is not None]
                out[field] = float(np.median(values)) if values else None
        for field in SUMS:
            out[field] = sum(int(r.get(field, 0)) for r in mine)
        table.append(out)
    return table


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def run_record(argv: list[str] | None, args: argparse.Namespace, hidden: str) -> dict[str, Any]:
    """The run's command, date, machine and settings (``hidden``: an internal option left out)."""
    return {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "load_average": list(psutil.getloadavg()),
        },
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != hidden
        },
    }
