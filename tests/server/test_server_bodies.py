"""Request bodies at the front door: read timeout, a cap on bytes held across connections,
compressed bodies, and clients that leave mid-body."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from hybridserve.server import ServerMetrics, ServerSettings, create_app
from hybridserve.server.frontdoor import FrontDoor, Message
from runtime.cascade_fixtures import make_inputs
from serve_process import free_port
from server.app_harness import app_client, make_engine

pytestmark = pytest.mark.integration


class StubApp:
    """Echoes the body's length; notes every call."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        self.bodies.append(body)
        payload = json.dumps({"n": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})


def _scope(length: int | None = None, encoding: str | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if encoding is not None:
        headers.append((b"content-encoding", encoding.encode()))
    return {"type": "http", "method": "POST", "path": "/v1/predict", "headers": headers}


class Upload:
    """One client's side of a request: the chunks it sends, then a stall or a disconnect."""

    def __init__(self, *chunks: bytes, then: str = "stall") -> None:
        self.chunks = list(chunks)
        self.then = then
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.chunks:
            chunk = self.chunks.pop(0)
            more = bool(self.chunks) or self.then != "end"
            return {"type": "http.request", "body": chunk, "more_body": more}
        if self.then == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # a stalled client: nothing more, ever
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return int(starts[0]["status"]) if starts else None

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def error(self) -> str:
        body = next(m for m in self.sent if m["type"] == "http.response.body")["body"]
        return str(json.loads(body)["error"])


def _door(**settings: Any) -> tuple[FrontDoor, StubApp, ServerMetrics]:
    app, metrics = StubApp(), ServerMetrics()
    return FrontDoor(app, ServerSettings(**settings), metrics), app, metrics


def test_a_stalled_body_gets_408_and_closes_the_connection() -> None:
    door, app, _ = _door(body_read_timeout_s=0.2)
    upload = Upload(b'{"inputs": [', then="stall")

    async def go() -> float:
        t0 = time.perf_counter()
        await asyncio.wait_for(door(_scope(1000), upload.receive, upload.send), 5)
        return time.perf_counter() - t0

    took = asyncio.run(go())
    assert upload.status == 408
    assert upload.error == "request body not received within 0.2 s; send it faster"
    assert upload.headers["connection"] == "close"
    assert 0.2 <= took < 2
    assert app.bodies == []
    assert door.budget.held == 0


def test_body_bytes_held_across_connections_are_capped_with_503() -> None:
    door, app, _ = _door(max_body_bytes=600, max_inflight_body_bytes=1000, body_read_timeout_s=5)

    async def go() -> None:
        stalled = Upload(b"x" * 500, then="stall")
        holder = asyncio.create_task(door(_scope(), stalled.receive, stalled.send))
        await asyncio.sleep(0.05)
        assert door.budget.held == 500
        declared = Upload(b"y" * 600, then="end")  # refused on its Content-Length
        await door(_scope(600), declared.receive, declared.send)
        streamed = Upload(b"y" * 300, b"y" * 300, then="end")  # refused mid-body
        await door(_scope(), streamed.receive, streamed.send)
        small = Upload(b"z" * 400, then="end")  # still fits
        await door(_scope(400), small.receive, small.send)
        for refused in (declared, streamed):
            assert refused.status == 503
            assert refused.error.startswith("server busy: too many request bodies")
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["connection"] == "close"
        assert small.status == 200
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        assert door.budget.held == 0  # the stalled request gave its bytes back
        again = Upload(b"y" * 600, then="end")
        await door(_scope(600), again.receive, again.send)
        assert again.status == 200

    asyncio.run(go())
    assert app.bodies == [b"z" * 400, b"y" * 600]


def test_a_disconnected_clients_partial_body_is_dropped_unparsed() -> None:
    door, app, metrics = _door()
    # a prefix that is itself valid JSON: parsing it would answer a request nobody sent
    upload = Upload(b'{"inputs": []}', then="disconnect")
    asyncio.run(door(_scope(100), upload.receive, upload.send))
    assert app.bodies == []
    assert upload.sent == []
    assert door.budget.held == 0
    labels = {"route": "/v1/predict", "status": "499"}
    assert metrics.registry.get_sample_value("hybridserve_http_requests_total", labels) == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP"])
def test_compressed_bodies_get_415(encoding: str) -> None:
    body = json.dumps({"inputs": make_inputs(1).tolist()}).encode()

    async def go() -> None:
        async with app_client(make_engine()) as client:
            r = await client.post(
                "/v1/predict",
                content=gzip.compress(body),
                headers={"content-encoding": encoding, "content-type": "application/json"},
            )
            assert r.status_code == 415, r.text
            assert r.json()["error"] == (
                f"Content-Encoding {encoding.lower()!r} is not supported; "
                "send the JSON body uncompressed"
            )
            plain = await client.post(
                "/v1/predict", content=body, headers={"content-encoding": "identity"}
            )
            assert plain.status_code == 200, plain.text

    asyncio.run(go())


# ---------------------------------------------------------------------- over real sockets


@asynccontextmanager
async def _uvicorn(**settings: Any) -> AsyncIterator[tuple[int, ServerMetrics]]:
    settings.setdefault("start_in_background", False)
    port = free_port()
    app = create_app(make_engine(), ServerSettings(**settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        yield port, app.state.metrics
    finally:
        server.should_exit = True
        thread.join(10)


def _stalled_upload(port: int, declared: int, sent: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + b"[" * sent)
    return sock


def _wait_closed(sock: socket.socket, timeout_s: float) -> None:
    """Until the server closes the connection (a reset counts: it closed with bytes unread)."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def test_stalled_uploads_over_real_connections_are_answered_and_closed() -> None:
    """Scaled-down version of 100 stalled 4 MiB uploads: each ends, none holds its bytes."""

    async def go() -> None:
        async with _uvicorn(
            body_read_timeout_s=0.5,
            max_body_bytes=1_000_000,
            max_inflight_body_bytes=1_000_000,
        ) as (port, metrics):
            socks = [_stalled_upload(port, 900_000, 300_000) for _ in range(5)]
            t0 = time.perf_counter()
            await asyncio.gather(*(asyncio.to_thread(_wait_closed, s, 10.0) for s in socks))
            took = time.perf_counter() - t0
            for s in socks:
                s.close()
            assert took < 5  # every connection was closed by the server, none left hanging

            def count(status: int) -> float:
                labels = {"route": "/v1/predict", "status": str(status)}
                value = metrics.registry.get_sample_value("hybridserve_http_requests_total", labels)
                return value or 0.0

            # 5 × 300 KB cannot all be held under 1 MB: some wait and time out, others are shed
            assert count(408) >= 1
            assert count(503) >= 1
            assert count(408) + count(503) == 5

    asyncio.run(go())
