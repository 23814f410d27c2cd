"""hybridserve over HTTP against LitServe, in one run, with one client.

Systems: ``litserve`` (LitServe serving the giant, vgg, with its own dynamic batching; the LitAPI
is below), ``giant-only`` (``hybridserve serve`` with a one-model chain: vgg) and ``cascade-ap``
(``hybridserve serve`` with the tuned AP policy); ``cascade-ap-drift`` (not run unless named
in ``--systems``) is ``cascade-ap`` with ``--drift``, shadow checks on (its run record adds the
shadow checks done and dropped, read from ``/v1/policy``). Every system gets the same
closed-loop client (``hybridserve.bench.httpload``: kept-alive connections, one real
fashion-mnist test image per request, answers checked against the label, every request
encoded before the load starts);
hybridserve is loaded with JSON bodies and with binary ones (KServe v2 binary tensors in the
images' own UINT8 with binary outputs, ``.npy``; ``--kinds`` also takes ``v2json`` and
``v2bin-f32``), LitServe with JSON (its API takes JSON).

All servers start first and then take turns, round after round, so drift on a shared machine
hits every system alike (the body formats of one system take turns too, in an order rotated
every round); the servers not being measured are paused (SIGSTOP) so their idle loops
take no CPU from the one that is. Server CPU is user + system time of the server's whole process
tree (LitServe's workers are child processes) in the measured window, per answered request; loop
CPU is that of the server's main thread alone (uvicorn's event loop: HTTP, body decoding, engine
hand-off, replies; not the models), where the body format makes its difference. Formats are also
compared inside each round (``vs_json``: a format's req/s and CPU over JSON's in the same round,
the median over rounds), which a shared machine's drift between rounds does not move.

    PYTHONPATH=src python benchmarks/bench_http.py                     # full run
    PYTHONPATH=src python benchmarks/bench_http.py --duration-s 5 --rounds 1   # quick look

The workdir needs ``calibration.json``, ``profile.json`` and ``policy-ap.json`` (``hybridserve
quickstart --workdir W`` writes them). LitServe (``pip install litserve``) is not a dependency of
hybridserve: without it the ``litserve`` system is skipped with a message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hybridserve.bench.httpload import (
    KINDS,
    ServerProcess,
    env_with_src,
    free_port,
    measure,
)
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
OUT = Path(__file__).parent / "out" / "bench_http.json"
SYSTEMS = ("litserve", "giant-only", "cascade-ap")
EXTRA_SYSTEMS = ("cascade-ap-drift",)
HYBRID_KINDS = ("json", "v2bin", "npy")


# ---------------------------------------------------------------------------------- LitServe
try:
    import litserve as ls
except ImportError:  # not a dependency of hybridserve: the litserve system is then skipped
    ls = None

if ls is not None:
    # at module level: LitServe spawns its workers, which unpickle the API by its import path

    class GiantAPI(ls.LitAPI):  # type: ignore[misc]
        """The bundled giant behind LitServe: JSON ``{"inputs": [image]}`` in, the label out."""

        def setup(self, device: str) -> None:
            from hybridserve.models import load_family

            family = load_family(FAMILY, device="cpu")
            self.model = family.giant  # the same weights and preprocessing hybridserve serves
            self.names = family.label_names

        # no annotations on the request and the response: LitServe builds its FastAPI endpoint
        # from them, and this module's postponed (string) annotations would confuse it
        def decode_request(self, request):  # type: ignore[no-untyped-def]
            return np.asarray(request["inputs"][0], dtype=np.float32)

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.stack(inputs)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.model.predict_logits(x).argmax(axis=1)

        def unbatch(self, output: np.ndarray) -> list[int]:
            return [int(v) for v in output]

        def encode_response(self, label):  # type: ignore[no-untyped-def]
            return {"label": label, "label_name": self.names[label]}


def serve_litserve(port: int, max_batch: int, batch_timeout_s: float, fast_queue: bool) -> None:
    """LitServe with its own dynamic batching, one worker, one API server, on ``port``."""
    assert ls is not None, "litserve is not installed"
    api = GiantAPI(max_batch_size=max_batch, batch_timeout=batch_timeout_s)
    server = ls.LitServer(
        api, accelerator="cpu", devices=1, workers_per_device=1, timeout=30, fast_queue=fast_queue
    )
    server.run(
        host="127.0.0.1",
        port=port,
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
    )


# ---------------------------------------------------------------------------------- systems
def start(system: str, args: argparse.Namespace, tmp: Path) -> ServerProcess:
    port = free_port()
    env = env_with_src()
    log = (tmp / f"{system}.log").open("wb")
    if system == "litserve":
        cmd = [
            sys.executable,
            __file__,
            "--serve-litserve",
            str(port),
            "--max-batch",
            str(args.max_batch),
            "--lit-batch-timeout-s",
            str(args.lit_batch_timeout_s),
            *(["--lit-fast-queue"] if args.lit_fast_queue else []),
        ]
        return ServerProcess(system, cmd, port, "/health", log=log, env=env)
    policy = tmp / "policy-giant-only.json" if system == "giant-only" else None
    policy = policy or args.workdir / "policy-ap.json"
    drift = ["--drift"] if system == "cascade-ap-drift" else []
    cmd = serve_command(args.workdir, port, "--policy", str(policy), *drift, *args.serve_arg)
    return ServerProcess(system, cmd, port, "/v2/health/ready", log=log, env=env)


def shadow_counts(server: ServerProcess) -> dict[str, Any]:
    """What a ``--drift`` server's shadow runner did (checked, dropped, ...)."""
    import httpx

    body = httpx.get(f"http://127.0.0.1:{server.port}/v1/policy", timeout=10.0).json()
    drift = body.get("drift") or {}
    return {"shadow": drift.get("shadow"), "alarms": drift.get("alarms")}


@contextlib.contextmanager
def servers(names: list[str], args: argparse.Namespace, tmp: Path) -> Iterator[dict[str, Any]]:
    running: dict[str, ServerProcess] = {}
    try:
        for name in names:
            running[name] = start(name, args, tmp)
        for server in running.values():
            server.wait_ready()
            server.pause()
        yield running
    finally:
        for server in running.values():
            server.stop()


# ---------------------------------------------------------------------------------- report
def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system and body kind: the median over rounds of each measure, errors summed."""
    return median_table(rows, ("system", "kind"))


def ratios(table: list[dict[str, Any]]) -> dict[str, float]:
    """Requests/s of every hybridserve row over LitServe's (JSON bodies)."""
    lit = next((r for r in table if r["system"] == "litserve"), None)
    if lit is None or not lit["requests_per_s"]:
        return {}
    return {
        f"{r['system']}/{r['kind']} vs litserve": r["requests_per_s"] / lit["requests_per_s"]
        for r in table
        if r["system"] != "litserve" and r["requests_per_s"] is not None
    }


def drift_vs_cascade(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per body kind: the median over rounds of cascade-ap-drift's req/s and CPU per request
    over cascade-ap's in the same round (what shadow checks cost a saturated server)."""
    out: dict[str, float] = {}
    for kind in sorted({r["kind"] for r in rows if r["system"] == "cascade-ap-drift"}):
        rps, cpu = [], []
        for r in {r["round"] for r in rows}:
            on = [x for x in rows if x["round"] == r and x["kind"] == kind]
            a = next((x for x in on if x["system"] == "cascade-ap-drift"), None)
            b = next((x for x in on if x["system"] == "cascade-ap"), None)
            if a and b and a["requests_per_s"] and b["requests_per_s"]:
                rps.append(a["requests_per_s"] / b["requests_per_s"])
                if a.get("server_cpu_ms_per_request") and b.get("server_cpu_ms_per_request"):
                    cpu.append(a["server_cpu_ms_per_request"] / b["server_cpu_ms_per_request"])
        if rps:
            out[f"{kind}: req/s drift / cascade-ap"] = float(np.median(rps))
        if cpu:
            out[f"{kind}: cpu per request drift / cascade-ap"] = float(np.median(cpu))
    return out


def in_turn(kinds: list[str], round_index: int) -> list[str]:
    """The formats in round ``round_index``'s order: rotated every round, so none is always
    measured first after its server resumes (or always last, as the machine heats up)."""
    k = round_index % len(kinds)
    return kinds[k:] + kinds[:k]


def against_json(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per hybridserve system and binary format: its req/s, server CPU and loop CPU per request
    over JSON's in the same round, the median over rounds."""
    out: dict[str, dict[str, list[float]]] = {}
    fields = ("requests_per_s", "server_cpu_ms_per_request", "loop_cpu_ms_per_request")
    for row in rows:
        if row["kind"] in ("json", "lit"):
            continue
        base = next(
            (
                r
                for r in rows
                if (r["system"], r["round"], r["kind"]) == (row["system"], row["round"], "json")
            ),
            None,
        )
        if base is None:
            continue
        key = f"{row['system']}/{row['kind']} vs json"
        for field in fields:
            if row.get(field) and base.get(field):
                ratio = row[field] / base[field]
                out.setdefault(key, {}).setdefault(field, []).append(ratio)
    return {
        key: {field: float(np.median(values)) for field, values in by.items()}
        for key, by in out.items()
    }


def print_table(
    table: list[dict[str, Any]], rel: dict[str, float], vs_json: dict[str, dict[str, float]]
) -> None:
    head = f"{'system':<12} {'body':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
    head += f"{'cpu ms/req':>10} {'loop ms/req':>11} {'errors':>6} {'wrong':>6}"
    print(head)
    print("-" * len(head))
    for r in table:
        print(
            f"{r['system']:<12} {r['kind']:<9} {fmt(r['requests_per_s']):>8} "
            f"{fmt(r['p50_ms']):>8} {fmt(r['p99_ms']):>8} "
            f"{fmt(r['server_cpu_ms_per_request'], 2):>10} "
            f"{fmt(r['loop_cpu_ms_per_request'], 3):>11} {r['errors']:>6} "
            f"{r['wrong_labels']:>6}"
        )
    for name, value in rel.items():
        print(f"{name}: {value:.2f}x")
    for name, by in vs_json.items():
        parts = [f"{field.split('_')[0]} {value:.2f}x" for field, value in by.items()]
        print(f"{name} (median of per-round ratios): {', '.join(parts)}")


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qs"))
    parser.add_argument(
        "--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS + EXTRA_SYSTEMS
    )
    hybrid = [k for k in KINDS if k != "lit"]
    parser.add_argument("--kinds", nargs="+", default=list(HYBRID_KINDS), choices=hybrid)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2000, help="test images cycled through")
    parser.add_argument("--max-batch", type=int, default=64, help="LitServe's max_batch_size")
    parser.add_argument("--lit-batch-timeout-s", type=float, default=0.005)
    parser.add_argument(
        "--lit-fast-queue", action="store_true", help="LitServe's ZeroMQ queue (fast_queue=True)"
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra `hybridserve serve` argument"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--serve-litserve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_litserve is not None:
        serve_litserve(
            args.serve_litserve, args.max_batch, args.lit_batch_timeout_s, args.lit_fast_queue
        )
        return
    names = list(args.systems)
    if "litserve" in names and ls is None:
        print("litserve is not installed (pip install litserve): skipping the litserve system")
        names.remove("litserve")
    require_workdir(args.workdir)
    kinds = {n: (["lit"] if n == "litserve" else list(args.kinds)) for n in names}
    requests, y = encoded_requests(FAMILY, args.images, {k for ks in kinds.values() for k in ks})
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        giant_only_policy(args.workdir, tmp)
        with servers(names, args, tmp) as running:
            for r in range(args.rounds):
                for name in names:
                    server = running[name]
                    server.resume()
                    try:
                        for kind in in_turn(kinds[name], r):
                            out = measure(
                                server,
                                requests[kind],
                                y,
                                kind,
                                clients=args.clients,
                                warmup_s=args.warmup_s,
                                duration_s=args.duration_s,
                            )
                            rows.append({"round": r, "system": name, "kind": kind, **out})
                            brief = {k: v for k, v in rows[-1].items() if k != "error_statuses"}
                            print(json.dumps(brief), flush=True)
                    finally:
                        server.pause()
            shadow = {}
            for name, server in running.items():
                if name == "cascade-ap-drift":
                    server.resume()
                    shadow[name] = shadow_counts(server)
    table = aggregate(rows)
    rel = ratios(table)
    vs_json = against_json(rows)
    result = {
        **run_record(argv, args, "serve_litserve"),
        "table": table,
        "ratios_rps": rel,
        "vs_json": vs_json,
        "shadow": shadow,
        "drift_vs_cascade": drift_vs_cascade(rows),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(table, rel, vs_json)
    for k, v in result["drift_vs_cascade"].items():
        print(f"{k}: {v:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
