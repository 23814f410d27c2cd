"""The ASGI layer in front of every route: bearer-token check, body limits, HTTP metrics.

It runs before FastAPI reads or parses anything, so a request without the token never has its
body read, and an oversized body is refused without buffering more than the limit. Bodies are
also bounded in time (a stalled upload gets 408) and together (the bytes held across all
connections are capped: past the cap, 503), a compressed body is refused (415) rather than
parsed as JSON, and a body whose client went away is dropped unparsed. The token is compared
in constant time and never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from hybridserve.server.metrics import ServerMetrics
from hybridserve.server.openapi import requires_token
from hybridserve.server.settings import ServerSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Route templates for metric labels (a label per path would let clients blow up the registry).
_ROUTES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), label)
    for pattern, label in (
        (r"^/v1/predict$", "/v1/predict"),
        (r"^/v1/policy$", "/v1/policy"),
        (r"^/v1/feedback$", "/v1/feedback"),
        (r"^/v1/completions$", "/v1/completions"),
        (r"^/v1/chat/completions$", "/v1/chat/completions"),
        (r"^/v1/models(/[^/]+)?$", "/v1/models"),
        (r"^/v2/models/[^/]+/infer$", "/v2/models/{model}/infer"),
        (r"^/v2/models/[^/]+/ready$", "/v2/models/{model}/ready"),
        (r"^/v2/models/[^/]+$", "/v2/models/{model}"),
        (r"^/v2/health/live$", "/v2/health/live"),
        (r"^/v2/health/ready$", "/v2/health/ready"),
        (r"^/v2$", "/v2"),
        (r"^/metrics$", "/metrics"),
        (r"^/(docs|redoc|openapi\.json)$", "/docs"),
    )
)
_HEALTH = frozenset(
    {"/v2/health/live", "/v2/health/ready", "/v2/models/{model}/ready", "/metrics", "/v2"}
)
_OPEN = frozenset({"/docs"})
_INFERENCE = frozenset(
    {"/v1/predict", "/v2/models/{model}/infer", "/v1/completions", "/v1/chat/completions"}
)
#: ``error_body(status, message)``: the JSON body of a refusal (the OpenAI routes' app gives its
#: own shape); the default is this API's ``{"error": message}``.
ErrorBody = Callable[[int, str], dict[str, Any]]


def plain_error(status: int, message: str) -> dict[str, Any]:
    return {"error": message}


def route_label(path: str) -> str:
    for pattern, label in _ROUTES:
        if pattern.match(path):
            return label
    return "other"


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value)
    return None


def _bearer(scope: Scope) -> bytes | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


@dataclass(frozen=True)
class Refusal:
    """A request answered at the door: status, one-line reason, extra headers."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


#: The client went away before its body was complete (nginx's convention, for the metrics).
CLIENT_GONE = 499


class BodyBudget:
    """Request-body bytes held at once across all connections, against a cap.

    The app runs on one event loop, so plain counters are enough.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held = 0

    def fits(self, n: int) -> bool:
        return self.held + n <= self.cap

    def take(self, n: int) -> bool:
        if not self.fits(n):
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


class Lease:
    """The bytes one request holds against a ``BodyBudget``, given back in one call."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, n: int) -> bool:
        if not self.budget.take(n):
            return False
        self.held += n
        return True

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class FrontDoor:
    """Wraps the FastAPI app: auth, body limit, request/error counters and latency per route."""

    def __init__(
        self,
        app: ASGIApp,
        settings: ServerSettings,
        metrics: ServerMetrics,
        overloaded: Callable[[], bool] = lambda: False,
        error_body: ErrorBody = plain_error,
    ) -> None:
        self.app = app
        self.error_body = error_body
        self.metrics = metrics
        self.overloaded = overloaded
        self.retry_after = str(settings.retry_after_s)
        self.limit = settings.max_body_bytes
        self.read_timeout_s = settings.body_read_timeout_s
        self.budget = BodyBudget(max(settings.max_inflight_body_bytes, self.limit))
        key = settings.api_key if requires_token(settings) else None
        self._key = key.get_secret_value().encode() if key is not None else None
        self._open = _OPEN | (_HEALTH if settings.open_health else frozenset())

    def _authorized(self, scope: Scope, route: str) -> bool:
        if self._key is None or route in self._open:
            return True
        token = _bearer(scope)
        return token is not None and hmac.compare_digest(token, self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_label(scope["path"])
        t0 = time.perf_counter()
        status = [500]

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            if not self._authorized(scope, route):
                await send_json(
                    send_noting_status,
                    401,
                    self.error_body(
                        401, "missing or invalid bearer token (send 'Authorization: Bearer KEY')"
                    ),
                    {"www-authenticate": "Bearer"},
                )
                return
            if route in _INFERENCE and self.overloaded():
                # shed load before reading or parsing the body: a refusal must cost little,
                # or an overload spends the CPU that accepted requests need
                await send_json(
                    send_noting_status,
                    503,
                    self.error_body(503, "server overloaded: the entry queue is full; retry later"),
                    {"retry-after": self.retry_after},
                )
                return
            lease = Lease(self.budget)  # the body bytes this request holds
            try:
                if scope["method"] in ("POST", "PUT", "PATCH"):
                    body = await self._read_body(scope, receive, lease)
                    if body is None:
                        status[0] = CLIENT_GONE  # nobody to answer; the partial body is dropped
                        return
                    if isinstance(body, Refusal):
                        # the rest of the body is never read, so the connection cannot be reused
                        headers = {**body.headers, "connection": "close"}
                        await send_json(
                            send_noting_status,
                            body.status,
                            self.error_body(body.status, body.message),
                            headers,
                        )
                        return
                    receive = _replay(body, receive)
                    scope = _as_json(scope)
                await self.app(scope, receive, send_noting_status)
            finally:
                lease.release()
        finally:
            self.metrics.observe_http(route, status[0], time.perf_counter() - t0)

    def _refuse_early(self, scope: Scope) -> Refusal | None:
        """What the headers alone say against reading the body."""
        encoding = (_header(scope, b"content-encoding") or b"").strip().lower()
        if encoding not in (b"", b"identity"):
            return Refusal(
                415,
                f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; "
                "send the JSON body uncompressed",
            )
        declared = _header(scope, b"content-length")
        try:
            length = int(declared) if declared is not None else None
        except ValueError:
            length = None
        if length is not None and length > self.limit:
            return self._too_large()
        if length is not None and not self.budget.fits(length):
            return self._busy()
        return None

    def _too_large(self) -> Refusal:
        return Refusal(413, f"request body larger than the limit of {self.limit} bytes")

    def _busy(self) -> Refusal:
        return Refusal(
            503,
            "server busy: too many request bodies are being received at once; retry later",
            {"retry-after": self.retry_after},
        )

    async def _read_body(
        self, scope: Scope, receive: Receive, lease: Lease
    ) -> bytes | Refusal | None:
        """The whole body, a refusal, or ``None`` if the client disconnected first."""
        early = self._refuse_early(scope)
        if early is not None:
            return early
        try:
            return await asyncio.wait_for(self._receive_body(receive, lease), self.read_timeout_s)
        except asyncio.TimeoutError:
            return Refusal(
                408, f"request body not received within {self.read_timeout_s:g} s; send it faster"
            )

    async def _receive_body(self, receive: Receive, lease: Lease) -> bytes | Refusal | None:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return self._too_large()
            if not lease.take(len(chunk)):
                return self._busy()
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


#: Bodies the inference routes read as bytes (``server/binary.py``), not JSON.
_BINARY_TYPES = (b"application/octet-stream", b"application/x-npy")


def _as_json(scope: Scope) -> Scope:
    """Every other body this API takes is JSON: parse it as such whatever Content-Type says.

    (``curl -d`` sends form encoding; without this the client would get a confusing error.)
    """
    media = (_header(scope, b"content-type") or b"").partition(b";")[0].strip().lower()
    if media in _BINARY_TYPES:
        return scope
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    return {**scope, "headers": headers}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
