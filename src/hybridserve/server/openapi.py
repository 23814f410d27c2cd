"""What the OpenAPI document says: each route's error answers, bearer auth only where a key is
required, and request examples that the served family accepts.

Schema-driven clients and fuzzers (schemathesis) take this document at its word: a status a route
can answer but does not list, or an example the server refuses, is a defect of the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI

from hybridserve.models import Family
from hybridserve.server.schemas import ErrorResponse, Readiness
from hybridserve.server.settings import ServerSettings

ERRORS: dict[int, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "malformed JSON"),
        (401, "missing or wrong bearer token"),
        (404, "unknown model"),
        (408, "the request body did not arrive within the read timeout"),
        (413, "request body too large"),
        (415, "compressed request body (send it uncompressed)"),
        (422, "inputs do not fit the family (shape, datatype, range, NaN, batch size)"),
        (500, "a model failed on the batch holding these inputs"),
        (503, "overloaded, busy receiving bodies, or not ready; see Retry-After"),
        (504, "the request's deadline passed"),
    )
}
#: What an inference route can answer besides 200 (401 is added when a key is required).
INFERENCE = (400, 408, 413, 415, 422, 500, 503, 504)
#: Readiness answers 503 with its own body, not an error.
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "not ready (warming up, or failed to start)"}
}

#: A v2 request asking for binary outputs (``parameters.binary_data_output``) is answered with
#: the binary tensor extension's body rather than JSON.
BINARY_REPLY: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answers: JSON, or with binary outputs asked for, the JSON header "
        "(its length in Inference-Header-Content-Length) then the outputs' little-endian bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


#: What ``POST /v1/policy`` answers besides 200: a policy that does not fit has its own 422.
POLICY_SWAP: dict[int | str, dict[str, Any]] = {
    400: ERRORS[400],
    413: ERRORS[413],
    422: {
        "model": ErrorResponse,
        "description": "the policy is invalid for this family or this engine (the error names "
        "the field), or its path is not a policy file in the workdir; nothing changed",
    },
    503: ERRORS[503],
}


def requires_token(settings: ServerSettings) -> bool:
    """Whether requests must carry the bearer token (an empty key requires none)."""
    return settings.api_key is not None and bool(settings.api_key.get_secret_value())


def responses(
    *codes: int, token: bool, extra: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: ``codes`` from ``ERRORS``, 401 when ``token``, ``extra``."""
    out: dict[int | str, dict[str, Any]] = {c: ERRORS[c] for c in sorted({*codes})}
    if token:
        out[401] = ERRORS[401]
    out.update(extra or {})
    return out


def example_input(family: Family) -> Any:
    """One input the family accepts: its shape, every value the low end of its range."""
    low = family.input_range[0] if family.input_range is not None else 0.0
    value: float | int = int(low) if float(low).is_integer() else float(low)
    return np.full(family.input_shape, value).tolist()


#: The request examples' input for a text family.
EXAMPLE_TEXT = "an example text"


def request_examples(family: Family, predict: str, infer: str) -> dict[str, Any]:
    """Request-body examples of the two inference routes, by path."""
    if family.input_kind == "text":
        tensor = {"name": "input", "shape": [1], "datatype": "BYTES", "data": [EXAMPLE_TEXT]}
        return {
            predict: {"inputs": [EXAMPLE_TEXT]},
            infer: {"id": "example-1", "inputs": [tensor]},
        }
    one = example_input(family)
    return {
        predict: {"inputs": [one]},
        infer: {
            "id": "example-1",
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, *family.input_shape],
                    "datatype": "FP32",
                    "data": np.ravel(one).tolist(),
                }
            ],
        },
    }


def _name_the_model(schema: dict[str, Any], name: str) -> None:
    """Give every ``model_name`` path parameter the served family's name as its example."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            for param in operation.get("parameters", ()):
                if param.get("in") == "path" and param.get("name") == "model_name":
                    param["example"] = name


def install_examples(
    app: FastAPI, family: Callable[[], Family | None], predict: str, infer: str
) -> None:
    """Make ``app``'s OpenAPI document carry request examples for the served family.

    The family is known only once the engine is built (at start-up, maybe from a factory), so
    the examples are filled in the first time the document is asked for after that.
    """
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None and app.state.openapi_has_examples:
            return app.openapi_schema
        schema = plain()
        served = family()
        app.state.openapi_has_examples = served is not None
        if served is not None:
            for path, example in request_examples(served, predict, infer).items():
                body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
                body["example"] = example
            _name_the_model(schema, served.name)
        return schema

    app.state.openapi_has_examples = False
    app.openapi = openapi  # type: ignore[method-assign]
