"""Schemathesis against a live ``hybridserve serve``, without and with an API key.

Each run starts the server (the bundled family, giant-only policy, one CPU replica), points
``schemathesis run --checks all`` at its ``/openapi.json`` for a bounded number of cases and
time, and reads schemathesis's JSON report: cases generated, failures by check code, 5xx.

The run fails (exit 1) on any 5xx (ST101/ST102), any response that breaks the documented
schema (ST103-ST111: undocumented status, content type, header, body), and any other check
except ST202 ("schema-valid request rejected"). ST202 is counted but tolerated: JSON Schema
cannot say which strings are decodable PNGs of the family's size, nor the family's input shape
inside a nested list, so a schema-valid body can still be a 422.

Run (schemathesis is in the ``test`` extras; else ``pip install schemathesis``)::

    python benchmarks/bench_schemathesis.py          # writes benchmarks/out/bench_schemathesis.json
    python benchmarks/bench_schemathesis.py --quick  # fewer cases, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_runtime import _free_port, giant_policy, start_server, wait_ready

from hybridserve.models import load_family

OUT = Path(__file__).resolve().parent / "out"
KEY = "bench-schemathesis-key"
#: Check codes that fail the run: 5xx, and every response that breaks the documented schema.
SERVER_ERRORS = frozenset({"ST101", "ST102"})
SCHEMA_VIOLATIONS = frozenset(f"ST{n}" for n in range(103, 112))
#: Reported, not failed: the schema cannot express every rule the server enforces (see above).
TOLERATED = frozenset({"ST202"})


def schemathesis_command() -> list[str]:
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        raise SystemExit("schemathesis is not installed: pip install schemathesis")
    return [exe]


def run_schemathesis(
    url: str, report: Path, key: str | None, args: argparse.Namespace
) -> tuple[int, str]:
    cmd = [
        *schemathesis_command(),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(args.max_examples),
        "--max-time",
        str(args.max_time_s),
        "--seed",
        str(args.seed),
        "--workers",
        str(args.workers),
        "--request-timeout",
        "30",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    if key is not None:
        cmd += ["--header", f"Authorization: Bearer {key}"]
    # from the temporary workdir: schemathesis leaves a .schemathesis/ cache where it runs
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=report.parent)
    return proc.returncode, proc.stdout + proc.stderr


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    failures = {
        f["code"]: {"title": f["title"], "count": f["count"], "operations": f["operations"]}
        for f in report.get("failures", [])
    }
    counted = {code: v["count"] for code, v in failures.items()}
    return {
        "cases": report["test_cases"]["generated"],
        "cases_with_failures": report["test_cases"]["with_failures"],
        "running_time_s": round(report["running_time"], 1),
        "stop_reason": report["stop_reason"],
        "operations_tested": report["operations"]["tested"],
        "failures_by_check": failures,
        "server_errors_5xx": sum(n for c, n in counted.items() if c in SERVER_ERRORS),
        "schema_violations": sum(n for c, n in counted.items() if c in SCHEMA_VIOLATIONS),
        "other_failures": sum(
            n for c, n in counted.items() if c not in SERVER_ERRORS | SCHEMA_VIOLATIONS | TOLERATED
        ),
        "tolerated_failures": sum(n for c, n in counted.items() if c in TOLERATED),
        "errors": report.get("errors", []),
        "missing_test_data": report.get("warnings", {}).get("missing_test_data", []),
    }


def one_run(workdir: Path, key: str | None, args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    env_key = os.environ.pop("HYBRIDSERVE_API_KEY", None)
    if key is not None:
        os.environ["HYBRIDSERVE_API_KEY"] = key  # start_server passes the environment on
    try:
        proc = start_server(workdir, port, queue_size=1024, batch=256, config=args.config)
    finally:
        os.environ.pop("HYBRIDSERVE_API_KEY", None)
        if env_key is not None:
            os.environ["HYBRIDSERVE_API_KEY"] = env_key
    try:
        wait_ready(port, proc)
        report_path = workdir / f"schemathesis-{'key' if key else 'open'}.json"
        t0 = time.monotonic()
        rc, output = run_schemathesis(f"http://127.0.0.1:{port}", report_path, key, args)
        if not report_path.is_file():
            raise SystemExit(f"schemathesis wrote no report (exit {rc}):\n{output[-3000:]}")
        summary = summarise(json.loads(report_path.read_text()))
        summary["wall_s"] = round(time.monotonic() - t0, 1)
        summary["schemathesis_exit_code"] = rc
        summary["schemathesis_output_tail"] = output[-2500:]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        summary["server_exit_code"] = proc.returncode
        summary["server_log_tail"] = out[-1500:]
        return summary
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="fashion-mnist")
    parser.add_argument("--config", type=Path, default=None, help="a family YAML instead")
    parser.add_argument("--max-examples", type=int, default=50, help="cases per operation")
    parser.add_argument("--max-time-s", type=int, default=120, help="budget of each run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="few cases (smoke check)")
    parser.add_argument("--out", type=Path, default=OUT / "bench_schemathesis.json")
    args = parser.parse_args()
    if args.quick:
        args.max_examples, args.max_time_s = 10, 30

    family = load_family(args.family, args.config)
    result: dict[str, Any] = {
        "family": family.name,
        "max_examples": args.max_examples,
        "max_time_s": args.max_time_s,
        "seed": args.seed,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-schemathesis-") as tmp:
        workdir = Path(tmp)
        giant_policy(family).save(workdir / "policy-ap.json")
        for name, key in (("no_key", None), ("api_key", KEY)):
            print(f"schemathesis, {name.replace('_', ' ')} ...", flush=True)
            run = one_run(workdir, key, args)
            result["runs"][name] = run
            print(
                f"  {run['cases']} cases, 5xx {run['server_errors_5xx']}, schema violations "
                f"{run['schema_violations']}, other {run['other_failures']}, tolerated "
                f"{run['tolerated_failures']}",
                flush=True,
            )
    runs = result["runs"].values()
    result["pass"] = all(
        r["server_errors_5xx"] == 0
        and r["schema_violations"] == 0
        and r["other_failures"] == 0
        and not r["errors"]
        and r["server_exit_code"] == 0
        for r in runs
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"pass {result['pass']}; wrote {args.out}")
    sys.exit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()
