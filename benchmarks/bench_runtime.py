"""Serving runtime: overhead against raw batched inference, latency under load, overload safety.

Targets (giant-only serving, i.e. a one-model chain of the family's giant):

1. saturated throughput of the engine (single-input requests, dynamic batching at batch size B)
   ≥ 90 % of raw batched ``model(x)`` throughput at the same B, in the same process;
2. p50/p90/p99 latency over HTTP (``hybridserve serve`` subprocess) at a fixed offered load
   (half the measured HTTP capacity by default);
3. a 2× overload over HTTP for 30 s: beyond capacity only 503s, no other 5xx but 503/504,
   every 200 correct (same label as the giant's logits), the server's peak RSS reported, and the
   server exits 0 on SIGTERM.

Run (after the family's weights exist)::

    python benchmarks/bench_runtime.py                 # writes benchmarks/out/bench_runtime.json
    python benchmarks/bench_runtime.py --quick         # shorter runs, for a smoke check

The HTTP client is a minimal keep-alive HTTP/1.1 client on asyncio streams, so the load
generator costs far less CPU than the server it loads (this machine has few cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from hybridserve.models import Family, load_family
from hybridserve.planning import Plan
from hybridserve.process import pin_large_allocations
from hybridserve.runtime import Engine, EngineConfig
from hybridserve.tuning import CascadePolicy, identity_calibrator

OUT = Path(__file__).resolve().parent / "out"
RATIO_TARGET = 0.90


def giant_policy(family: Family) -> CascadePolicy:
    return CascadePolicy(
        family=family.name,
        chain=(family.giant.name,),
        thresholds=(),
        calibrators=(identity_calibrator(),),
        mode="manual",
    )


# ---------------------------------------------------------------------- in-process


def raw_throughput(family: Family, x: np.ndarray, batch: int, duration_s: float) -> dict[str, Any]:
    """Inputs/s of ``giant.predict_logits`` on back-to-back batches of ``batch``."""
    model = family.giant
    n_batches = len(x) // batch
    for i in range(3):
        model.predict_logits(x[i * batch : (i + 1) * batch])
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < duration_s:
        i = (done // batch) % n_batches
        model.predict_logits(x[i * batch : (i + 1) * batch])
        done += batch
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "inputs": done,
        "wall_s": wall,
        "throughput_rps": done / wall,
        "cpu_ms_per_input": cpu / done * 1000.0,
    }


async def engine_load(
    engine: Engine, x: np.ndarray, duration_s: float, concurrency: int
) -> dict[str, Any]:
    """Inputs/s of ``engine`` under ``concurrency`` closed-loop single-input clients."""
    stop = False
    count = [0]

    async def client(k: int) -> None:
        i = k
        while not stop:
            await engine.predict_result(x[i : i + 1])
            count[0] += 1
            i = (i + concurrency) % len(x)

    tasks = [asyncio.create_task(client(k)) for k in range(concurrency)]
    await asyncio.sleep(min(0.3, duration_s / 4))  # let the batcher reach steady state
    c0, t0, b0 = count[0], time.perf_counter(), engine.positions[0].batches
    cpu0 = time.process_time()
    await asyncio.sleep(duration_s)
    done, wall = count[0] - c0, time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    batches = engine.positions[0].batches - b0
    stop = True
    await asyncio.gather(*tasks)
    return {
        "concurrency": concurrency,
        "inputs": done,
        "wall_s": wall,
        "throughput_rps": done / wall,
        "cpu_ms_per_input": cpu / max(done, 1) * 1000.0,
        "mean_batch_size": done / max(batches, 1),
    }


async def compare_throughput(
    family: Family, x: np.ndarray, batch: int, duration_s: float, rounds: int
) -> dict[str, Any]:
    """Raw and engine runs interleaved, ``rounds`` times, so load from elsewhere hits both."""
    plan = Plan.default(family.name, (family.giant.name,), batch_size=batch, max_wait_ms=5.0)
    concurrency = 4 * batch
    # as `hybridserve serve` runs it (hybridserve.process: the collector tuned once ready)
    config = EngineConfig(
        queue_size=max(4 * concurrency, 1024), max_batch_size=batch, tune_gc_at_start=True
    )
    per_round = []
    async with Engine(giant_policy(family), plan, family, config) as engine:
        for r in range(rounds):
            # alternate the order (ABBA) so a drift in outside load does not favour either
            if r % 2 == 0:
                raw = await asyncio.to_thread(raw_throughput, family, x, batch, duration_s)
                eng = await engine_load(engine, x, duration_s, concurrency)
            else:
                eng = await engine_load(engine, x, duration_s, concurrency)
                raw = await asyncio.to_thread(raw_throughput, family, x, batch, duration_s)
            ratio = eng["throughput_rps"] / raw["throughput_rps"]
            # CPU-normalised: raw CPU per input / engine CPU per input (robust to other load)
            cpu_ratio = raw["cpu_ms_per_input"] / eng["cpu_ms_per_input"]
            load = os.getloadavg()[0]
            print(
                f"  round {r}: raw {raw['throughput_rps']:.1f}/s, engine "
                f"{eng['throughput_rps']:.1f}/s, ratio {ratio:.3f}, cpu ratio {cpu_ratio:.3f}, "
                f"load avg {load:.1f}",
                flush=True,
            )
            per_round.append(
                {"raw": raw, "engine": eng, "ratio": ratio, "cpu_ratio": cpu_ratio, "loadavg": load}
            )
    ratios = [p["ratio"] for p in per_round]
    return {
        "rounds": per_round,
        "raw_rps_median": float(np.median([p["raw"]["throughput_rps"] for p in per_round])),
        "engine_rps_median": float(np.median([p["engine"]["throughput_rps"] for p in per_round])),
        "ratio": float(np.median(ratios)),
        "ratio_min": float(min(ratios)),
        "ratio_max": float(max(ratios)),
        "cpu_ratio": float(np.median([p["cpu_ratio"] for p in per_round])),
        "loadavg_after": os.getloadavg()[0],
    }


# ---------------------------------------------------------------------- HTTP


class _ClosedError(Exception):
    """The server closed a kept-alive connection before answering."""


class Pool:
    """Keep-alive HTTP/1.1 connections to one server; POST JSON, read status and body."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.size = size
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.waiters: list[asyncio.Future[None]] = []

    async def _conn(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            if self.idle:
                return self.idle.pop()
            if self.opened < self.size:
                self.opened += 1
                try:
                    return await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    self.opened -= 1
                    raise
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            await fut

    def _release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        if conn is None:
            self.opened -= 1
        else:
            self.idle.append(conn)
        while self.waiters:
            fut = self.waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                break

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes, dict[bytes, bytes]]:
        try:
            return await self._post(path, body)
        except _ClosedError:
            # the server closed an idle kept-alive connection (uvicorn does after 5 s idle), so
            # it never read this request: the other idle ones are as stale, drop them and send
            # again on a fresh connection
            self._drop_idle()
            return await self._post(path, body)

    def _drop_idle(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.opened -= len(self.idle)
        self.idle.clear()

    async def _post(self, path: bytes, body: bytes) -> tuple[int, bytes, dict[bytes, bytes]]:
        conn = await self._conn()
        reader, writer = conn
        try:
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body)
            )
            first = await reader.readline()
            if not first:
                raise _ClosedError
            status = int(first.split()[1])
            headers: dict[bytes, bytes] = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
            payload = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        except Exception:
            writer.close()
            self._release(None)
            raise
        if headers.get(b"connection") == b"close":
            writer.close()
            self._release(None)
        else:
            self._release(conn)
        return status, payload, headers

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


class Tally:
    """Statuses, latencies of 200s and wrong answers of one run."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.latency_ms: list[float] = []
        self.wrong = 0
        self.client_errors: dict[str, int] = {}
        self.retry_after_missing = 0

    def summary(self, wall_s: float) -> dict[str, Any]:
        lat = np.array(self.latency_ms) if self.latency_ms else np.array([np.nan])
        ok = self.status.get("200", 0)
        return {
            "requests": sum(self.status.values()) + sum(self.client_errors.values()),
            "status": dict(sorted(self.status.items())),
            "client_errors": self.client_errors,
            "ok_rps": ok / wall_s,
            "wall_s": wall_s,
            "wrong_answers": self.wrong,
            "missing_retry_after": self.retry_after_missing,
            "latency_ms_200": {
                "p50": float(np.percentile(lat, 50)),
                "p90": float(np.percentile(lat, 90)),
                "p99": float(np.percentile(lat, 99)),
                "max": float(np.max(lat)),
            },
        }


async def _send(pool: Pool, body: bytes, expected: int, tally: Tally, t_due: float) -> None:
    try:
        status, payload, headers = await pool.post(b"/v1/predict", body)
    except Exception as err:
        name = type(err).__name__
        tally.client_errors[name] = tally.client_errors.get(name, 0) + 1
        return
    # latency from the scheduled send time: waiting for a free connection counts too
    tally.latency_ms.append((time.perf_counter() - t_due) * 1000.0) if status == 200 else None
    tally.status[str(status)] = tally.status.get(str(status), 0) + 1
    if status == 200:
        if int(json.loads(payload)["answers"][0]["label"]) != expected:
            tally.wrong += 1
    elif status == 503 and b"retry-after" not in headers:
        tally.retry_after_missing += 1


async def closed_loop_http(
    port: int, bodies: list[bytes], expected: np.ndarray, concurrency: int, duration_s: float
) -> dict[str, Any]:
    pool = Pool(port, concurrency)
    tally = Tally()
    end = time.perf_counter() + duration_s

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < end:
            await _send(pool, bodies[i], int(expected[i]), tally, time.perf_counter())
            i = (i + concurrency) % len(bodies)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    wall = time.perf_counter() - t0
    await pool.close()
    return tally.summary(wall)


async def open_loop_http(
    port: int,
    bodies: list[bytes],
    expected: np.ndarray,
    rate_rps: float,
    duration_s: float,
    connections: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Poisson arrivals at ``rate_rps`` whatever the answers (an open loop)."""
    pool = Pool(port, connections)
    tally = Tally()
    rng = np.random.default_rng(seed)
    n = int(rate_rps * duration_s)
    due = np.cumsum(rng.exponential(1.0 / rate_rps, n))
    tasks: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter()
    for k in range(n):
        t_due = t0 + float(due[k])
        delay = t_due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        i = k % len(bodies)
        task = asyncio.create_task(_send(pool, bodies[i], int(expected[i]), tally, t_due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    send_wall = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    await pool.close()
    out = tally.summary(wall)
    out["offered_rps"] = rate_rps
    out["achieved_send_rps"] = n / send_wall
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.2):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return


def start_server(
    workdir: Path, port: int, queue_size: int, batch: int, config: Path | None
) -> subprocess.Popen[str]:
    exe = shutil.which("hybridserve")
    cmd = [exe] if exe else [sys.executable, "-m", "hybridserve.cli"]
    cmd += [
        "serve",
        "--workdir",
        str(workdir),
        "--port",
        str(port),
        "--queue-size",
        str(queue_size),
        "--max-batch",
        str(batch),
        "--log-level",
        "warning",
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_ready(port: int, proc: subprocess.Popen[str], timeout_s: float = 180.0) -> None:
    import httpx

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(
                f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise SystemExit("server never became ready")


# ---------------------------------------------------------------------- main


def main() -> None:
    pin_large_allocations()  # as the CLI does: see hybridserve.process
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="fashion-mnist")
    parser.add_argument("--config", type=Path, default=None, help="a family YAML instead")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=2.0, help="each throughput run")
    parser.add_argument("--rounds", type=int, default=20, help="raw/engine run pairs")
    parser.add_argument("--capacity-s", type=float, default=15.0, help="HTTP capacity run")
    parser.add_argument("--latency-s", type=float, default=20.0, help="fixed-load run")
    parser.add_argument("--load-fraction", type=float, default=0.5, help="of HTTP capacity")
    parser.add_argument("--overload-s", type=float, default=30.0)
    parser.add_argument("--overload-factor", type=float, default=2.0)
    parser.add_argument("--queue-size", type=int, default=256, help="server --queue-size")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke check)")
    parser.add_argument("--out", type=Path, default=OUT / "bench_runtime.json")
    args = parser.parse_args()
    if args.quick:
        args.duration_s, args.latency_s, args.overload_s, args.rounds = 2.0, 5.0, 8.0, 2
        args.capacity_s = 5.0

    family = load_family(args.family, args.config)
    x = family.split("test").x
    b = args.batch_size
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpu_cores": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "family": family.name,
        "giant": family.giant.name,
        "batch_size": b,
    }

    print(f"raw {family.giant.name} vs engine at batch {b}, {args.rounds} rounds ...", flush=True)
    thr = asyncio.run(compare_throughput(family, x, b, args.duration_s, args.rounds))
    ratio = thr["ratio"]
    print(f"  median ratio {ratio:.1%}", flush=True)
    report["throughput"] = {**thr, "target": RATIO_TARGET, "pass": ratio >= RATIO_TARGET}

    # HTTP: a real server process with the giant-only policy and a one-replica plan
    expected = np.argmax(family.giant.predict_logits(x), axis=1)
    bodies = [json.dumps({"inputs": [x[i].tolist()]}).encode() for i in range(len(x))]
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        giant_policy(family).save(wd / "policy-ap.json")
        Plan.default(family.name, (family.giant.name,), batch_size=b).save(wd / "plan.json")
        port = _free_port()
        proc = start_server(wd, port, args.queue_size, b, args.config)
        sampler = RssSampler(proc.pid)
        sampler.start()
        try:
            wait_ready(port, proc)
            print("HTTP capacity (closed loop) ...", flush=True)
            cap = asyncio.run(closed_loop_http(port, bodies, expected, 2 * b, args.capacity_s))
            capacity = cap["ok_rps"]
            print(f"  {capacity:.0f} requests/s", flush=True)
            rate = args.load_fraction * capacity
            print(f"fixed load {rate:.0f} rps for {args.latency_s:.0f} s ...", flush=True)
            fixed = asyncio.run(
                open_loop_http(port, bodies, expected, rate, args.latency_s, connections=2 * b)
            )
            print(f"  latency {fixed['latency_ms_200']}", flush=True)
            over_rate = args.overload_factor * capacity
            print(f"overload {over_rate:.0f} rps for {args.overload_s:.0f} s ...", flush=True)
            over = asyncio.run(
                open_loop_http(
                    port, bodies, expected, over_rate, args.overload_s, connections=8 * b, seed=1
                )
            )
            print(f"  {over['status']} client errors {over['client_errors']}", flush=True)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
            sampler.halt.set()
            exit_code = proc.returncode
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    bad_5xx = {
        s: n for s, n in over["status"].items() if s.startswith("5") and s not in ("503", "504")
    }
    other = {s: n for s, n in over["status"].items() if s not in ("200", "503", "504")}
    report["http"] = {
        "server": {"queue_size": args.queue_size, "batch_size": b},
        "capacity": cap,
        "fixed_load": fixed,
        "overload": over,
        # informational: 200s per second under overload relative to the measured capacity
        "overload_goodput_ratio": over["ok_rps"] / capacity if capacity else None,
        # sampled every 0.2 s from start-up to exit (the kernel's ru_maxrss of children would
        # count the pages a child shares with this big process between fork and exec)
        "peak_rss_bytes": sampler.peak,
        "exit_code_on_sigterm": exit_code,
        "server_log_tail": out[-2000:],
        "checks": {
            "only_200_503_504": not other,
            "no_5xx_but_503_504": not bad_5xx,
            "every_200_correct": over["wrong_answers"] == 0 and fixed["wrong_answers"] == 0,
            "503s_carry_retry_after": over["missing_retry_after"] == 0,
            "clean_exit_on_sigterm": exit_code == 0,
        },
    }
    report["pass"] = report["throughput"]["pass"] and all(report["http"]["checks"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    t = report["throughput"]
    print(f"throughput ratio {t['ratio']:.3f} (min {t['ratio_min']:.3f}), pass {t['pass']}")
    print(json.dumps(report["http"]["checks"], indent=2))
    print(f"peak server RSS {report['http']['peak_rss_bytes'] / 2**20:.0f} MiB; wrote {args.out}")


if __name__ == "__main__":
    main()
