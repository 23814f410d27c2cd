"""Requests/s and server CPU per request for each body format against running servers.

A quick closed-loop comparison, not a full benchmark: 64 kept-alive clients, one real
fashion-mnist test image per request, the same client for every format. Give each server as
PORT:PID (the PID is read for its CPU time, so run the servers on this machine):

    python benchmarks/bench_bodies.py --server 8000:12345 --kinds json v2json v2bin npy

Formats (``hybridserve.bench.httpload``'s, every request encoded before the load starts):
``json`` (``/v1/predict`` nested lists), ``v2json`` (KServe v2 JSON tensor), ``v2bin`` (KServe v2
binary tensor in the images' own UINT8, binary outputs asked for), ``v2bin-f32`` (the same with
FP32 values) and ``npy`` (``/v1/predict`` ``application/x-npy``).
"""

from __future__ import annotations

import argparse
import asyncio
import json

import psutil

from hybridserve.bench.httpload import KINDS, closed_loop, label_of, make_request
from hybridserve.models import load_family


def _main_thread_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of the server's main thread: uvicorn's event loop."""
    main = next(t for t in proc.threads() if t.id == proc.pid)
    return float(main.user_time + main.system_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", required=True, help="PORT:PID, repeatable")
    kinds = [k for k in KINDS if k != "lit"]
    parser.add_argument("--kinds", nargs="+", default=kinds, choices=kinds)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--family", default="fashion-mnist")
    args = parser.parse_args()
    split = load_family(args.family).split("test")
    x, y = split.x[:2000], split.y[:2000]
    # every body is encoded before any load: the client's CPU per request is the same
    requests = {
        k: [make_request(k, x[i : i + 1], args.family) for i in range(len(x))] for k in args.kinds
    }
    for r in range(args.rounds):
        for kind in args.kinds:
            for server in args.server:
                port, _, pid = server.partition(":")
                proc = psutil.Process(int(pid))
                stats = asyncio.run(
                    closed_loop(
                        int(port),
                        requests[kind],
                        y,
                        label_of(kind),
                        clients=args.clients,
                        warmup_s=args.warmup_s,
                        duration_s=args.seconds,
                        cpu_s=lambda proc=proc: sum(proc.cpu_times()[:2]),
                        loop_cpu_s=lambda proc=proc: _main_thread_cpu_s(proc),
                    )
                )
                row = {"round": r, "server": server, "kind": kind, **stats.summary()}
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
