"""The inference routes' own JSON body path: orjson parsing, pydantic-core validation.

FastAPI's generic path (``Request.json``, dependency solving, then validation) was a fifth of the
event loop's CPU per request under load. ``BodyRoute`` keeps the route's declared body model, so
the OpenAPI schema and the 422 messages stay the same, but parses the body itself: orjson first,
the standard library only where orjson refuses what it accepts (``NaN``, integers past 64 bits,
so those keep their old answers), then the model's own validation in pydantic-core. Binary
bodies (``.npy``, KServe v2 binary tensors) never get here: ``server/binroute.py`` answers them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

M = TypeVar("M", bound=BaseModel)


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


def validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``; ``RequestValidationError`` naming the fields, as FastAPI's."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def decode_body(raw: bytes, model: type[BaseModel]) -> BaseModel:
    """The route's body model from a JSON body."""
    if not raw:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    return validate(model, parse_json(raw))


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
            body = decode_body(raw, model)
            response = await endpoint(**request.path_params, body=body)
            return cast(Response, response)

        return handler
