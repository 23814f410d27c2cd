"""The ASGI layer in front of every route: bearer-token check, body size limit, HTTP metrics.

It runs before FastAPI reads or parses anything, so a request without the token never has its
body read, and an oversized body is refused without buffering more than the limit. The token
is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hybridserve.server.metrics import ServerMetrics
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
_INFERENCE = frozenset({"/v1/predict", "/v2/models/{model}/infer"})


def route_label(path: str) -> str:
    for pattern, label in _ROUTES:
        if pattern.match(path):
            return label
    return "other"


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


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
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.overloaded = overloaded
        self.retry_after = str(settings.retry_after_s)
        self.limit = settings.max_body_bytes
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        self._key = key.encode() if key else None
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
                    {"error": "missing or invalid bearer token (send 'Authorization: Bearer KEY')"},
                    {"www-authenticate": "Bearer"},
                )
                return
            if route in _INFERENCE and self.overloaded():
                # shed load before reading or parsing the body: a refusal must cost little,
                # or an overload spends the CPU that accepted requests need
                await send_json(
                    send_noting_status,
                    503,
                    {"error": "server overloaded: the entry queue is full; retry later"},
                    {"retry-after": self.retry_after},
                )
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive)
                if body is None:
                    await send_json(
                        send_noting_status,
                        413,
                        {"error": f"request body larger than the limit of {self.limit} bytes"},
                    )
                    return
                receive = _replay(body, receive)
                scope = _as_json(scope)
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.observe_http(route, status[0], time.perf_counter() - t0)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or ``None`` once it is known to exceed the limit."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.limit:
                        return None
                except ValueError:
                    pass
                break
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnected: the app sees an empty body and the client is gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)


def _as_json(scope: Scope) -> Scope:
    """Every body this API takes is JSON: parse it as such whatever Content-Type says.

    (``curl -d`` sends form encoding; without this the client would get a confusing error.)
    """
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
