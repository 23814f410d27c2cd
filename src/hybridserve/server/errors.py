"""One mapping from what went wrong to the HTTP answer, for the FastAPI handlers and the raw
binary routes alike: a status, a one-line message and any extra headers.

400 malformed body, 404 unknown model or route, 422 inputs that do not fit the family, 503
overloaded or not ready (with Retry-After), 504 deadline passed, 500 a model failed (or a bug).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from hybridserve.errors import HybridServeError
from hybridserve.runtime.errors import (
    BatchFailedError,
    DeadlineExceededError,
    EngineClosedError,
    InvalidInputError,
    QueueFullError,
    ServingError,
)

log = logging.getLogger("hybridserve.server.app")


class ErrorReply(NamedTuple):
    """What a request that failed is answered: status, message, extra headers."""

    status: int
    message: str
    headers: dict[str, str] | None = None

    def body(self) -> bytes:
        return orjson.dumps({"error": self.message})


def validation_message(err: RequestValidationError) -> tuple[int, str]:
    """400 for a body that is not JSON, else 422 naming up to three fields and their problems."""
    problems = []
    for e in err.errors():
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx", {}).get("error", "")
            return 400, f"malformed JSON: {ctx}".rstrip(": ")
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        msg = "unknown field" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        problems.append(f"{where}: {msg}")
    if not problems:
        return 400, "malformed request body"
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return 422, "; ".join(problems[:3]) + more


def error_reply(err: Exception, retry_after_s: int | float) -> ErrorReply:
    """The answer to a request that raised ``err`` (an unexpected error is logged as a bug)."""
    if isinstance(err, RequestValidationError):
        return ErrorReply(*validation_message(err))
    if isinstance(err, HTTPException):
        return ErrorReply(err.status_code, str(err.detail), getattr(err, "headers", None))
    if isinstance(err, HybridServeError):
        return ErrorReply(422 if isinstance(err, InvalidInputError) else 400, str(err))
    if isinstance(err, (QueueFullError, EngineClosedError)):
        return ErrorReply(503, str(err), {"Retry-After": str(retry_after_s)})
    if isinstance(err, DeadlineExceededError):
        return ErrorReply(504, str(err))
    if isinstance(err, BatchFailedError):
        return ErrorReply(500, str(err))
    if isinstance(err, ServingError):
        return ErrorReply(500, f"serving failed: {err}")
    log.error("unhandled error", exc_info=err)
    return ErrorReply(500, f"internal error ({type(err).__name__})")
