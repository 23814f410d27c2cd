"""Why the engine refused or gave up on a request (the server maps each to an HTTP status)."""

from __future__ import annotations

from hybridserve.errors import HybridServeError


class ServingError(Exception):
    """A request the engine could not serve although its input was fine."""


class QueueFullError(ServingError):
    """The entry stage holds as many inputs as it may; retry later (HTTP 503)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(ServingError):
    """The request's deadline passed before every input had an answer (HTTP 504)."""


class EngineClosedError(ServingError):
    """The engine is not started or is shutting down (HTTP 503)."""


class BatchFailedError(ServingError):
    """A model raised on a batch this request was part of (HTTP 500)."""


class InvalidInputError(HybridServeError):
    """The inputs do not fit the family (shape, dtype, range, NaN); the user can fix it (4xx)."""


class BatchTooLargeError(InvalidInputError):
    """More inputs in one request than ``EngineConfig.max_batch_size`` allows."""
