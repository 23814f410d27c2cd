"""Why the engine refused or gave up on a request (the server maps each to an HTTP status)."""

from __future__ import annotations

from hybridserve.errors import HybridServeError


class ServingError(Exception):
    """A request the engine could not serve although its input was fine."""


class QueueFullError(ServingError):
    """The entry position holds as many inputs as it may; retry later (HTTP 503)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(ServingError):
    """The request's deadline passed before every input had an answer (HTTP 504)."""


class EngineClosedError(ServingError):
    """The engine is not started or is shutting down (HTTP 503)."""


class ModelUnavailableError(EngineClosedError):
    """No replica of a model could take a batch (remote replicas died or restart); HTTP 503.
    The batch's requests fail whole: their inputs are not at fault, so nothing is isolated."""


class BatchTimeoutError(DeadlineExceededError):
    """A model call outlived the batch watchdog (a hung replica); HTTP 504, retry later."""


class BatchFailedError(ServingError):
    """A model raised on this request's inputs (HTTP 500); other requests of the batch are
    retried apart, so only the requests whose inputs make the model raise get it."""


class PolicySwapError(HybridServeError):
    """The engine cannot serve this policy in place (another family, or a chain it cannot swap)."""


class InvalidInputError(HybridServeError):
    """The inputs do not fit the family (shape, dtype, range, NaN); the user can fix it (4xx)."""


class BatchTooLargeError(InvalidInputError):
    """More inputs in one request than ``EngineConfig.max_batch_size`` allows."""


class UnknownRequestError(HybridServeError):
    """Feedback for a request id the engine does not know, or no longer remembers (HTTP 404)."""
