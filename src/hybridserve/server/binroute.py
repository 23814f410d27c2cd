"""The binary inference bodies' own ASGI route: KServe v2 binary tensors and ``.npy`` batches.

A binary body is bytes with a fixed layout, so it needs none of FastAPI's generic machinery
(routing, dependency solving, request objects, the exception middleware, response classes), which
was most of the event loop's work per request under load once parsing was cheap. ``BinaryRoutes``
sits inside the ``FrontDoor`` (token, body limits and metrics still apply; the body arrives read
in full) and answers ``POST /v2/models/{name}/infer`` bodies that are ``application/octet-stream``
or carry ``Inference-Header-Content-Length``, and ``POST /v1/predict`` bodies that are
``application/x-npy``, itself; everything else goes on to the FastAPI app.

The checks are the same as for JSON bodies: the v2 JSON header is validated by the request model
(pydantic-core), each tensor's bytes against its shape and datatype, the batch against the family
(``server/replies.py``, shared with the JSON routes); errors are the app's ``{"error": ...}``
answers with the same statuses (``server/errors.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hybridserve.runtime.contract import ServingEngine
from hybridserve.server.binary import (
    HEADER_LENGTH,
    NPY,
    OCTET_STREAM,
    MalformedBodyError,
    bytes_elements,
    header_length,
    npy_batch,
    split_binary_inputs,
    tensor_bytes,
)
from hybridserve.server.decode import V2_DTYPES
from hybridserve.server.errors import error_reply
from hybridserve.server.fastroute import parse_json, validate
from hybridserve.server.frontdoor import ASGIApp, Receive, Scope, Send
from hybridserve.server.replies import Reply, infer, predict_reply
from hybridserve.server.schemas import InferRequest

#: ``engine_for(model_name)``: the serving engine (``None``: the one served, for /v1/predict);
#: raises what the app answers (404 for another model, 503 when not ready).
EngineFor = Callable[[str | None], ServingEngine]

_INFER = re.compile(r"^/v2/models/([^/]+)/infer$")
_PREDICT = "/v1/predict"
_LENGTH_HEADER = HEADER_LENGTH.encode()
_BINARY_MEDIA = {OCTET_STREAM.encode(): OCTET_STREAM, NPY.encode(): NPY}


def _binary_media(scope: Scope) -> str | None:
    """The binary media type of a request (``OCTET_STREAM`` also when the length header is
    there, as the v2 route has always read it), or ``None`` for anything else."""
    media: str | None = None
    for name, value in scope.get("headers", ()):
        if name == _LENGTH_HEADER:
            return OCTET_STREAM
        if name == b"content-type":
            media = _BINARY_MEDIA.get(bytes(value).partition(b";")[0].strip().lower())
    return media


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value).decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body (the FrontDoor hands it over in one message); ``None``: client gone."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def v2_request(raw: bytes, length: str | None, text: bool) -> InferRequest:
    """A v2 binary body as the request model, each binary tensor's values decoded.

    Only the values the family can take are decoded (numbers for a tensor family, ``BYTES``
    for a text family); any other tensor keeps an empty placeholder, which the family's check
    then refuses by its datatype.
    """
    n = header_length(length, len(raw))
    view = memoryview(raw)
    header = parse_json(view[:n])
    parts = split_binary_inputs(header, view[n:])
    body = validate(InferRequest, header)
    for i, part in parts.items():
        tensor = body.inputs[i]
        where = f"inputs[{i}]"
        if tensor.datatype == "BYTES":
            if text:
                tensor.data = bytes_elements(part, tensor.shape, where)
        elif not text:
            dtype = V2_DTYPES[tensor.datatype]
            tensor.data = tensor_bytes(  # type: ignore[assignment]
                part, tensor.shape, dtype, tensor.datatype, where
            )
    return body


class BinaryRoutes:
    """Answers the binary inference bodies; passes every other request on to ``app``."""

    def __init__(self, app: ASGIApp, engine_for: EngineFor, retry_after_s: float) -> None:
        self.app = app
        self.engine_for = engine_for
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        media = _binary_media(scope)
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        infer_to = _INFER.match(path)
        if media is None or (infer_to is None and path != _PREDICT):
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        if raw is None:
            return  # the client went away: nobody to answer
        try:
            if infer_to is not None:
                reply = await self._infer(scope, raw, media, infer_to.group(1))
            else:
                reply = await self._predict(raw, media)
        except Exception as err:
            error = error_reply(err, self.retry_after_s)
            await _send(send, error.status, Reply(error.body(), "application/json", error.headers))
            return
        await _send(send, 200, reply)

    async def _infer(self, scope: Scope, raw: bytes, media: str, model: str) -> Reply:
        if media != OCTET_STREAM:
            raise MalformedBodyError(f"{NPY} bodies are taken by /v1/predict only")
        eng = self.engine_for(model)
        text = eng.family.input_kind == "text"
        body = v2_request(raw, _header(scope, _LENGTH_HEADER), text)
        return await infer(eng, body)

    async def _predict(self, raw: bytes, media: str) -> Reply:
        if media != NPY:
            raise MalformedBodyError(f"{OCTET_STREAM} bodies are taken by the v2 infer route")
        eng = self.engine_for(None)
        return await predict_reply(eng, npy_batch(raw))


async def _send(send: Send, status: int, reply: Reply) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", reply.media_type.encode()),
        (b"content-length", str(len(reply.body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in (reply.headers or {}).items()]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": reply.body})
