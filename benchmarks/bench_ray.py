"""hybridserve on Ray against plain Ray Serve, in one run, with one client.

Systems (``--systems``):

- ``plain-ray``: plain Ray Serve serving the giant (vgg) alone: one deployment with
  ``@serve.batch`` (``--plain-max-batch`` 64, ``--plain-wait-ms`` 5) behind Serve's HTTP proxy,
  JSON ``{"inputs": [image]}`` in, the label out (the deployment is below).
- ``ray-giant-only``: ``hybridserve serve --backend ray`` with a one-model chain (vgg).
- ``ray-cascade-ap``: ``hybridserve serve --backend ray`` with the workdir's AP policy.
- ``ray-serve-front-cascade-ap``: the same with ``--ray-front serve`` (Serve's proxies and an
  ingress deployment in front of the same engine), to price the proxy hop.
- ``local-cascade-ap``: ``hybridserve serve`` (the local backend) with the AP policy.

Every system gets the same closed-loop client (``hybridserve.bench.httpload``: kept-alive
connections, one real fashion-mnist test image per request, JSON bodies, labels checked) at
each of ``--clients`` concurrency levels (default 64, 256 and 512), one after the other on the
same server; a system's *saturated* throughput is its highest median req/s over the levels,
and the ratios compare those. One level is not enough: a cascade's request makes several
sequential hops (each a Ray call), so with few clients it is limited by latency, not capacity
(``docs/measurements.md`` shows by how much). The systems take turns, round after round, each
started fresh, warmed up, measured at every level and stopped (a Ray instance does not survive
being paused, so the others are not kept up meanwhile); drift on a shared machine then hits
every system alike over the rounds. Server CPU is user + system
time of the server's whole process tree (Ray's GCS, raylet and workers are children of the
serving process) in the measured window, per answered request.

    PYTHONPATH=src python benchmarks/bench_ray.py --workdir W               # full run
    PYTHONPATH=src python benchmarks/bench_ray.py --workdir W --duration-s 5 --rounds 1

The workdir needs ``calibration.json``, ``profile.json`` and ``policy-ap.json`` (``hybridserve
quickstart --workdir W`` writes them); its ``plan.json`` is used when present.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from fastapi import Request  # at module level: FastAPI resolves the endpoint's annotations here

from hybridserve.bench.httpload import ServerProcess, env_with_src, free_port, measure
from hybridserve.bench.httprounds import (
    encoded_requests,
    fmt,
    giant_only_policy,
    median_table,
    require_workdir,
    run_record,
    serve_command,
)

FAMILY = "fashion-mnist"
OUT = Path(__file__).parent / "out" / "bench_ray.json"
SYSTEMS = (
    "plain-ray",
    "ray-giant-only",
    "ray-cascade-ap",
    "ray-serve-front-cascade-ap",
    "local-cascade-ap",
)
#: the request format each system takes (plain Ray Serve: the LitServe-style API below)
KIND = {name: "lit" if name == "plain-ray" else "json" for name in SYSTEMS}


# ---------------------------------------------------------------------------------- plain Ray
def serve_plain_ray(port: int, max_batch: int, wait_ms: float, replicas: int, cpus: int) -> None:
    """Plain Ray Serve serving the giant on ``port`` until SIGTERM."""
    import signal
    import threading

    import ray
    from fastapi import FastAPI
    from ray import serve

    app = FastAPI()

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=1024)
    @serve.ingress(app)
    class Giant:
        def __init__(self) -> None:
            from hybridserve.models import load_family

            self.model = load_family(FAMILY, device="cpu").giant

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_ms / 1000.0)
        async def classify(self, images: list[np.ndarray]) -> list[int]:
            labels = self.model.predict_logits(np.stack(images)).argmax(axis=1)
            return [int(v) for v in labels]

        @app.post("/predict")
        async def predict(self, request: Request) -> dict[str, int]:
            body = await request.json()
            label: int = await self.classify(np.asarray(body["inputs"][0], dtype=np.float32))
            return {"label": label}

        @app.get("/health")
        def health(self) -> str:
            return "ok"

    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        _system_config={"worker_niceness": 0},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Giant.bind(), name="plain", route_prefix="/")  # type: ignore[attr-defined]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


# ---------------------------------------------------------------------------------- systems
def giant_only(workdir: Path, out: Path) -> Path:
    """A workdir serving the AP policy's giant alone: the one-model policy (as ``hybridserve
    bench`` builds it) and its own plan from the workdir's profile (``hybridserve plan``), so
    the giant gets the replicas the planner gives it when it takes all the traffic."""
    import shutil
    import subprocess

    from hybridserve.tuning.policy import CascadePolicy

    wd = out / "giant-only"
    wd.mkdir()
    for name in ("calibration.json", "profile.json"):
        shutil.copy(workdir / name, wd / name)
    ap = CascadePolicy.load(workdir / "policy-ap.json")
    # the one-model policy carries no tuning summary: the plan is told the giant's reach
    cmd = [sys.executable, "-m", "hybridserve.cli", "plan", "--workdir", str(wd)]
    cmd += ["--family", ap.family, "--reach", f"{ap.giant}=1"]
    subprocess.run(cmd, check=True, env=env_with_src(), capture_output=True)
    giant_only_policy(workdir, wd).rename(wd / "policy-ap.json")
    return wd


def start(system: str, args: argparse.Namespace, tmp: Path) -> ServerProcess:
    port = free_port()
    env = env_with_src()
    log = (tmp / f"{system}.log").open("ab")
    if system == "plain-ray":
        cmd = [
            sys.executable,
            __file__,
            "--serve-plain-ray",
            str(port),
            "--plain-max-batch",
            str(args.plain_max_batch),
            "--plain-wait-ms",
            str(args.plain_wait_ms),
            "--plain-replicas",
            str(args.plain_replicas),
            "--ray-cpus",
            str(args.ray_cpus),
        ]
        return ServerProcess(system, cmd, port, "/health", log=log, env=env)
    workdir = tmp / "giant-only" if system == "ray-giant-only" else args.workdir
    backend = ["--backend", "local"] if system.startswith("local") else ["--backend", "ray"]
    front = ["--ray-front", "serve"] if "serve-front" in system else []
    cmd = serve_command(workdir, port, *backend, *front, *args.serve_arg)
    return ServerProcess(system, cmd, port, "/v2/health/ready", log=log, env=env)


# ---------------------------------------------------------------------------------- report
def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system and client count: the median over rounds of each measure, errors summed."""
    return median_table(rows, ("system", "clients"))


def saturated(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system, its row at the client count where its median req/s is highest."""
    best: dict[str, dict[str, Any]] = {}
    for row in levels:
        have = best.get(row["system"])
        if have is None or (row["requests_per_s"] or 0.0) > (have["requests_per_s"] or 0.0):
            best[row["system"]] = row
    return list(best.values())


def ratios(table: list[dict[str, Any]]) -> dict[str, float]:
    """Requests/s of ``ray-cascade-ap`` against the baselines the issue names, and more."""
    rps = {r["system"]: r["requests_per_s"] for r in table if r["requests_per_s"]}
    pairs = [
        ("ray-cascade-ap", "plain-ray"),
        ("ray-cascade-ap", "ray-giant-only"),
        ("ray-giant-only", "plain-ray"),
        ("ray-serve-front-cascade-ap", "plain-ray"),
        ("ray-cascade-ap", "local-cascade-ap"),
    ]
    return {f"{a} / {b}": rps[a] / rps[b] for a, b in pairs if a in rps and b in rps}


def print_table(table: list[dict[str, Any]], rel: dict[str, float]) -> None:
    head = f"{'system':<28} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
    head += f"{'cpu ms/req':>10} "
    head += f"{'errors':>6} {'wrong':>6}"
    print(head)
    print("-" * len(head))
    for r in table:
        print(
            f"{r['system']:<28} {r['clients']:>7} {fmt(r['requests_per_s']):>8} "
            f"{fmt(r['p50_ms']):>8} "
            f"{fmt(r['p99_ms']):>8} {fmt(r['server_cpu_ms_per_request'], 2):>10} "
            f"{r['errors']:>6} {r['wrong_labels']:>6}"
        )
    for name, value in rel.items():
        print(f"{name}: {value:.2f}x")


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qs"))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[64, 256, 512],
        help="closed-loop client counts each system is measured at (module docstring)",
    )
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=2000, help="test images cycled through")
    parser.add_argument("--plain-max-batch", type=int, default=64)
    parser.add_argument("--plain-wait-ms", type=float, default=5.0)
    parser.add_argument("--plain-replicas", type=int, default=1)
    parser.add_argument("--ray-cpus", type=int, default=psutil.cpu_count() or 2)
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra `hybridserve serve` argument"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--serve-plain-ray", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_plain_ray is not None:
        serve_plain_ray(
            args.serve_plain_ray,
            args.plain_max_batch,
            args.plain_wait_ms,
            args.plain_replicas,
            args.ray_cpus,
        )
        return
    require_workdir(args.workdir)
    requests, y = encoded_requests(FAMILY, args.images, {KIND[n] for n in args.systems})
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp_name:
        tmp = Path(tmp_name)
        if "ray-giant-only" in args.systems:
            giant_only(args.workdir, tmp)
        for r in range(args.rounds):
            for name in args.systems:
                t0 = time.monotonic()
                server = start(name, args, tmp)
                try:
                    server.wait_ready()
                    started = time.monotonic() - t0
                    kind = KIND[name]
                    for clients in args.clients:
                        out = measure(
                            server,
                            requests[kind],
                            y,
                            kind,
                            clients=clients,
                            warmup_s=args.warmup_s,
                            duration_s=args.duration_s,
                        )
                        row = {"round": r, "system": name, "clients": clients, **out}
                        rows.append(row | {"start_s": started})
                        brief = {k: v for k, v in rows[-1].items() if k != "error_statuses"}
                        print(json.dumps(brief), flush=True)
                finally:
                    server.stop(timeout_s=60.0)
    levels = aggregate(rows)
    table = saturated(levels)
    rel = ratios(table)
    result = {
        **run_record(argv, args, "serve_plain_ray"),
        "table": table,
        "by_clients": levels,
        "ratios_rps": rel,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(levels, {})
    print("saturated (each system at the client count where its median req/s is highest):")
    print_table(table, rel)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
