"""The inference routes' own body path: orjson parsing, binary bodies, orjson responses.

FastAPI's generic path (``Request.json``, dependency solving, then validation) was a fifth of the
event loop's CPU per request under load. ``BodyRoute`` keeps the route's declared body model, so
the OpenAPI schema and the 422 messages stay the same, but parses the body itself: orjson first,
the standard library only where orjson refuses what it accepts (``NaN``, integers past 64 bits,
so those keep their old answers), then the model's own validation in pydantic-core. ``.npy`` and
KServe v2 binary bodies skip JSON for the tensor altogether: the endpoint gets a numpy array in
place of the nested list, and ``server/decode.py`` takes either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, cast

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from hybridserve.runtime.errors import InvalidInputError
from hybridserve.server.binary import (
    HEADER_LENGTH,
    NPY,
    OCTET_STREAM,
    MalformedBodyError,
    header_length,
    npy_batch,
    split_binary_inputs,
    tensor_bytes,
)
from hybridserve.server.decode import V2_DTYPES
from hybridserve.server.schemas import InferRequest, PredictRequest


class FastJSONResponse(JSONResponse):
    """A JSON response rendered by orjson (numpy scalars and arrays included)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_json(raw: bytes | memoryview) -> Any:
    """The parsed body; ``RequestValidationError`` as FastAPI reports malformed JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        # what orjson refuses but the standard library reads keeps its previous answer
        return json.loads(bytes(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = {"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error"}
        raise RequestValidationError([{**problem, "ctx": {"error": str(err)}}]) from None


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _v2_binary(request: Request, raw: bytes, model: type[BaseModel]) -> BaseModel:
    """A KServe v2 binary body as the request model, binary tensors as flat arrays."""
    n = header_length(request.headers.get(HEADER_LENGTH), len(raw))
    view = memoryview(raw)
    header = parse_json(view[:n])
    parts = split_binary_inputs(header, view[n:])
    body = _validate(model, header)
    tensors = cast(list[Any], getattr(body, "inputs", []))
    for i, part in parts.items():
        tensor = tensors[i]
        where = f"inputs[{i}]"
        if tensor.datatype not in V2_DTYPES:  # BYTES: text travels in JSON bodies only
            raise InvalidInputError(
                f"{where}.datatype: binary {tensor.datatype} tensors are not taken; send text "
                "as a JSON BYTES tensor"
            )
        dtype = V2_DTYPES[tensor.datatype]
        tensor.data = tensor_bytes(part, tensor.shape, dtype, tensor.datatype, where)
    return body


def decode_body(request: Request, raw: bytes, model: type[BaseModel]) -> BaseModel:
    """The route's body model from a JSON, ``.npy`` or v2 binary body."""
    media = _media_type(request)
    if HEADER_LENGTH in request.headers or media == OCTET_STREAM:
        if model is not InferRequest:
            raise MalformedBodyError(f"{OCTET_STREAM} bodies are taken by the v2 infer route")
        return _v2_binary(request, raw, model)
    if media == NPY:
        if model is not PredictRequest:
            raise MalformedBodyError(f"{NPY} bodies are taken by /v1/predict only")
        # the array stands in for the nested list: server/decode.py's predict_inputs takes both
        return model.model_construct(inputs=cast(Any, npy_batch(raw)))
    if not raw:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    return _validate(model, parse_json(raw))


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class BodyRoute(APIRoute):
    """An APIRoute whose one body parameter is decoded by ``decode_body``.

    The endpoint must take its body as ``body`` and any path parameters as plain strings; its
    other dependencies (the documented bearer scheme) are enforced by the FrontDoor.
    """

    def get_route_handler(self) -> Handler:
        endpoint = self.endpoint
        field = self.body_field
        assert field is not None, "BodyRoute needs a body parameter"
        model = cast(type[BaseModel], field.field_info.annotation)
        assert isinstance(model, type) and issubclass(model, BaseModel)

        async def handler(request: Request) -> Response:
            raw = await request.body()
            body = decode_body(request, raw, model)
            response = await endpoint(**request.path_params, body=body)
            return cast(Response, response)

        return handler
