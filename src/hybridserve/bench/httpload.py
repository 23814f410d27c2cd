"""A lean closed-loop HTTP client and server-process meter for comparing inference servers.

``benchmarks/bench_http.py`` uses it to load LitServe and ``hybridserve serve`` alike. The client
speaks HTTP/1.1 over kept-alive asyncio streams and sends requests serialised once up front, so
on a small machine it spends far less CPU per request than httpx would: the client shares the
cores with the server it measures, and every cycle it burns is one the server does not get.
Answers are still parsed and checked (status and label), so a server that answers fast but
wrong is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
import psutil

#: Body formats of ``hybridserve serve`` (``json``: /v1/predict nested lists; ``v2json``: KServe
#: v2 JSON tensor; ``v2bin``: KServe v2 binary tensor in the images' own datatype, binary outputs
#: asked for; ``v2bin-f32``: the same with FP32 values; ``npy``: /v1/predict
#: ``application/x-npy``) and of the LitServe API (``lit``).
KINDS = ("json", "v2json", "v2bin", "v2bin-f32", "npy", "lit")
#: The v2 datatype of each numpy dtype a binary tensor can carry.
_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


class LabelOf(Protocol):
    """Reads the predicted label out of a 200 answer's body (``header_length``: the answer's
    ``Inference-Header-Content-Length``, for a binary one)."""

    def __call__(self, payload: bytes, header_length: int | None = None) -> int: ...


def _http_request(path: str, media: str, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    headers = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {media}\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _v2_binary(x: npt.NDArray[Any], family: str) -> bytes:
    datatype = _DATATYPES.get(x.dtype.name)
    if datatype is None:
        x, datatype = x.astype(np.float32), "FP32"
    raw = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<")).tobytes()
    tensor = {
        "name": "input",
        "shape": list(x.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    head = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    length = {"Inference-Header-Content-Length": str(len(head))}
    path = f"/v2/models/{family}/infer"
    return _http_request(path, "application/octet-stream", head + raw, length)


def make_request(kind: str, x: npt.NDArray[Any], family: str = "fashion-mnist") -> bytes:
    """The whole HTTP request (head and body) carrying the batch ``x`` in the ``kind`` format.

    Built once per input before the load starts, so encoding costs the client nothing while
    it measures, whatever the format.
    """
    if kind == "json":
        return _http_request(
            "/v1/predict", "application/json", orjson.dumps({"inputs": x.tolist()})
        )
    if kind == "lit":
        return _http_request("/predict", "application/json", orjson.dumps({"inputs": x.tolist()}))
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, x)
        return _http_request("/v1/predict", "application/x-npy", buf.getvalue())
    if kind == "v2json":
        datatype = _DATATYPES.get(x.dtype.name, "FP32")
        tensor = {"name": "input", "shape": list(x.shape), "datatype": datatype}
        body = orjson.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]})
        return _http_request(f"/v2/models/{family}/infer", "application/json", body)
    if kind == "v2bin":
        return _v2_binary(x, family)
    if kind == "v2bin-f32":
        return _v2_binary(x.astype(np.float32), family)
    raise ValueError(f"unknown body kind {kind!r}: expected one of {list(KINDS)}")


def _lit_label(payload: bytes, header_length: int | None = None) -> int:
    return int(orjson.loads(payload)["label"])


def _answers_label(payload: bytes, header_length: int | None = None) -> int:
    # /v1/predict and the v2 infer route's JSON answers both carry ``answers``
    return int(orjson.loads(payload)["answers"][0]["label"])


def _binary_label(payload: bytes, header_length: int | None = None) -> int:
    """The first ``label`` of a v2 answer with binary outputs (JSON if the server sent JSON)."""
    if header_length is None:
        return _answers_label(payload)
    offset = header_length
    for out in orjson.loads(payload[:header_length])["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if out["name"] == "label":
            if size is None:
                return int(out["data"][0])
            return int.from_bytes(payload[offset : offset + 8], "little", signed=True)
        offset += size or 0
    raise ValueError("the answer has no label output")


def label_of(kind: str) -> LabelOf:
    """How to read the label from a ``kind`` request's answer."""
    if kind == "lit":
        return _lit_label
    if kind.startswith("v2bin"):
        return _binary_label
    return _answers_label


@dataclass
class LoadStats:
    """What one measured window of closed-loop load gave."""

    duration_s: float
    ok: int = 0
    errors: int = 0
    wrong: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    #: CPU seconds the server's process tree spent in the window (None: not metered)
    server_cpu_s: float | None = None
    #: CPU seconds of the server's main thread (its event loop: HTTP, bodies, engine hand-off;
    #: not the models) in the window (None: not metered)
    loop_cpu_s: float | None = None

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        return float(np.percentile(np.asarray(self.latencies_s), q)) * 1000.0

    def _per_request_ms(self, cpu_s: float | None) -> float | None:
        return 1000.0 * cpu_s / self.ok if cpu_s is not None and self.ok else None

    def summary(self) -> dict[str, Any]:
        return {
            "requests_per_s": self.rps,
            "ok": self.ok,
            "errors": self.errors,
            "wrong_labels": self.wrong,
            "error_statuses": dict(self.statuses),
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "server_cpu_ms_per_request": self._per_request_ms(self.server_cpu_s),
            "loop_cpu_ms_per_request": self._per_request_ms(self.loop_cpu_s),
        }


class _Window:
    """The measured window shared by all clients: what counts and until when to send."""

    def __init__(self, start_s: float, end_s: float) -> None:
        self.start_s = start_s
        self.end_s = end_s
        self.stats = LoadStats(duration_s=end_s - start_s)

    def note(self, sent_s: float, done_s: float, status: str | None, correct: bool) -> None:
        # a request counts when it is sent and answered inside the window
        if sent_s < self.start_s or done_s > self.end_s:
            return
        stats = self.stats
        if status is None:
            stats.ok += 1
            stats.wrong += not correct
            stats.latencies_s.append(done_s - sent_s)
        else:
            stats.errors += 1
            stats.statuses[status] = stats.statuses.get(status, 0) + 1


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, int | None]:
    """Status, body, and the ``Inference-Header-Content-Length`` of a binary answer."""
    status = int((await reader.readline()).split()[1])
    length = 0
    header_length: int | None = None
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"inference-header-content-length":
            header_length = int(value)
    return status, await reader.readexactly(length), header_length


async def _client(
    port: int,
    requests: Sequence[bytes],
    labels: npt.NDArray[Any],
    parse: LabelOf,
    first: int,
    step: int,
    window: _Window,
) -> None:
    """One kept-alive connection sending again as soon as its answer came, until the end."""
    i = first
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.perf_counter() < window.end_s:
        sent = time.perf_counter()
        status: str | None = None
        correct = False
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = conn
            writer.write(requests[i])
            code, payload, header_length = await _read_answer(reader)
            if code == 200:
                correct = parse(payload, header_length) == int(labels[i])
            else:
                status = str(code)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as err:
            status = type(err).__name__
            if conn is not None:
                conn[1].close()
            conn = None
            await asyncio.sleep(0.01)  # a refused connection must not spin the loop
        window.note(sent, time.perf_counter(), status, correct)
        i = (i + step) % len(requests)
    if conn is not None:
        conn[1].close()


async def closed_loop(
    port: int,
    requests: Sequence[bytes],
    labels: npt.NDArray[Any],
    parse: LabelOf,
    *,
    clients: int,
    warmup_s: float,
    duration_s: float,
    cpu_s: Callable[[], float] | None = None,
    loop_cpu_s: Callable[[], float] | None = None,
    grace_s: float = 30.0,
) -> LoadStats:
    """``clients`` connections loading the server on ``port`` for ``warmup_s + duration_s``.

    Only requests sent and answered in the last ``duration_s`` count; ``cpu_s`` (the server's
    CPU seconds so far) and ``loop_cpu_s`` (its event loop thread's) are read when that window
    opens and closes. Requests still open
    ``grace_s`` after the end are abandoned.
    """
    if clients < 1 or duration_s <= 0 or warmup_s < 0:
        raise ValueError("clients must be >= 1, duration_s > 0 and warmup_s >= 0")
    now = time.perf_counter()
    window = _Window(now + warmup_s, now + warmup_s + duration_s)
    tasks = [
        asyncio.ensure_future(_client(port, requests, labels, parse, k, clients, window))
        for k in range(clients)
    ]
    await asyncio.sleep(max(0.0, window.start_s - time.perf_counter()))
    cpu0 = cpu_s() if cpu_s is not None else 0.0
    loop0 = loop_cpu_s() if loop_cpu_s is not None else 0.0
    await asyncio.sleep(max(0.0, window.end_s - time.perf_counter()))
    if cpu_s is not None:
        window.stats.server_cpu_s = cpu_s() - cpu0
    if loop_cpu_s is not None:
        window.stats.loop_cpu_s = loop_cpu_s() - loop0
    _, pending = await asyncio.wait(tasks, timeout=window.end_s - time.perf_counter() + grace_s)
    for task in pending:
        task.cancel()
    return window.stats


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server run as a subprocess: started, waited for, metered, paused and stopped.

    Its CPU time is the user + system time of the process and every descendant (LitServe
    answers from worker processes).
    """

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        health: str,
        *,
        log: IO[bytes] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.health = health
        out = log if log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self._ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Poll the health route until it answers 200; raise if the process exits first."""
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before ready")
            try:
                url = f"http://127.0.0.1:{self.port}{self.health}"
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout_s:g} s")
            time.sleep(0.3)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._ps, *self._ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_s(self) -> float:
        """User + system CPU seconds of the whole process tree so far."""
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def loop_cpu_s(self) -> float:
        """User + system CPU seconds of the server's main thread (uvicorn's event loop)."""
        try:
            main = next(t for t in self._ps.threads() if t.id == self._ps.pid)
        except (psutil.NoSuchProcess, StopIteration):
            return 0.0
        return float(main.user_time + main.system_time)

    def _signal(self, sig: int) -> None:
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)

    def pause(self) -> None:
        """Stop the tree (SIGSTOP), so an idle server takes no CPU from the one measured."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGCONT then SIGTERM the server; kill what is left after ``timeout_s``."""
        if self.proc.poll() is not None:
            return
        tree = self._tree()
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for p in tree[1:]:  # workers a killed parent left behind
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


class Metered(Protocol):
    """A server the client can load and whose CPU time can be read."""

    @property
    def port(self) -> int: ...

    def cpu_s(self) -> float: ...


def measure(
    server: Metered,
    requests: Sequence[bytes],
    labels: npt.NDArray[Any],
    kind: str,
    *,
    clients: int,
    warmup_s: float,
    duration_s: float,
) -> dict[str, Any]:
    """One turn of closed-loop load on ``server``: the window's stats and server CPU (and its
    event loop's, where the server can tell: ``ServerProcess.loop_cpu_s``)."""
    stats = asyncio.run(
        closed_loop(
            server.port,
            requests,
            labels,
            label_of(kind),
            clients=clients,
            warmup_s=warmup_s,
            duration_s=duration_s,
            cpu_s=server.cpu_s,
            loop_cpu_s=getattr(server, "loop_cpu_s", None),
        )
    )
    return stats.summary()


def env_with_src() -> dict[str, str]:
    """The environment for child processes, importing hybridserve from this checkout."""
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def dumps(obj: Any) -> str:
    """Pretty JSON for the results file."""
    return json.dumps(obj, indent=2, sort_keys=False)
