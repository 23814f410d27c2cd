"""Requests/s and server CPU per request for each body format against running servers.

A quick closed-loop comparison, not a full benchmark: 64 kept-alive clients, one real
fashion-mnist test image per request, the same client for every format. Give each server as
PORT:PID (the PID is read for its CPU time, so run the servers on this machine):

    python benchmarks/bench_bodies.py --server 8000:12345 --kinds json v2json v2bin npy

Formats: ``json`` (``/v1/predict`` nested lists), ``v2json`` (KServe v2 JSON tensor), ``v2bin``
(KServe v2 binary tensor extension, FP32) and ``npy`` (``/v1/predict`` ``application/x-npy``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from typing import Any

import numpy as np
import psutil

from hybridserve.models import load_family

Body = tuple[bytes, bytes, dict[bytes, bytes], bytes]  # path, content type, headers, body


def make_body(kind: str, x: np.ndarray, family: str) -> Body:
    """One request holding the batch ``x`` in the ``kind`` format."""
    infer = f"/v2/models/{family}/infer".encode()
    if kind == "json":
        return b"/v1/predict", b"application/json", {}, json.dumps({"inputs": x.tolist()}).encode()
    tensor: dict[str, Any] = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    if kind == "v2json":
        body = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
        return infer, b"application/json", {}, body
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, x)
        return b"/v1/predict", b"application/x-npy", {}, buf.getvalue()
    if kind == "v2bin":
        raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps({"inputs": [tensor]}).encode()
        length = {b"Inference-Header-Content-Length": str(len(head)).encode()}
        return infer, b"application/octet-stream", length, head + raw
    raise SystemExit(f"unknown body kind {kind!r}")


async def _client(
    port: int, bodies: list[Body], labels: np.ndarray, start: int, step: int, end: float
) -> tuple[int, int, dict[int, int]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ok = wrong = 0
    other: dict[int, int] = {}
    i = start
    while time.perf_counter() < end:
        path, media, extra, body = bodies[i]
        headers = b"".join(k + b": " + v + b"\r\n" for k, v in extra.items())
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n"
            % (path, media, headers, len(body))
            + body
        )
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        payload = await reader.readexactly(length)
        if status == 200:
            ok += 1
            wrong += json.loads(payload)["answers"][0]["label"] != int(labels[i])
        else:
            other[status] = other.get(status, 0) + 1
        i = (i + step) % len(bodies)
    writer.close()
    return ok, wrong, other


async def run(port: int, pid: int, bodies: list[Body], labels: np.ndarray, seconds: float) -> Any:
    proc = psutil.Process(pid)
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.perf_counter()
    n = 64
    done = await asyncio.gather(
        *(_client(port, bodies, labels, k, n, t0 + seconds) for k in range(n))
    )
    wall = time.perf_counter() - t0
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    ok = sum(d[0] for d in done)
    other: dict[int, int] = {}
    for d in done:
        for status, count in d[2].items():
            other[status] = other.get(status, 0) + count
    return {
        "ok_rps": ok / wall,
        "server_cpu_ms_per_request": 1000.0 * cpu / ok if ok else None,
        "wrong": sum(d[1] for d in done),
        "other_status": other,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", required=True, help="PORT:PID, repeatable")
    parser.add_argument("--kinds", nargs="+", default=["json", "v2json", "v2bin", "npy"])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--family", default="fashion-mnist")
    args = parser.parse_args()
    split = load_family(args.family).split("test")
    x, y = split.x[:2000], split.y[:2000]
    rows = []
    for r in range(args.rounds):
        for kind in args.kinds:
            bodies = [make_body(kind, x[i : i + 1], args.family) for i in range(len(x))]
            for server in args.server:
                port, _, pid = server.partition(":")
                out = asyncio.run(run(int(port), int(pid), bodies, y, args.seconds))
                rows.append({"round": r, "server": server, "kind": kind, **out})
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
