"""The engine's metrics hook: the server plugs Prometheus in; the engine knows nothing of it."""

from __future__ import annotations

from abc import ABC


class EngineObserver(ABC):  # noqa: B024 - every hook is optional, so none is abstract
    """Told about every batch; hooks run on the event loop, so they must be cheap."""

    def on_batch(  # noqa: B027
        self, model: str, size: int, queue_rows: int, service_s: float, answered: int
    ) -> None:
        """A batch of ``size`` inputs left ``model``; ``answered`` of them were answered there."""

    def on_answers(self, model: str, answered: int) -> None:  # noqa: B027
        """``answered`` inputs were answered at ``model`` by a batch already reported."""

    def on_batch_error(self, model: str, size: int, error: BaseException) -> None:  # noqa: B027
        """A batch of ``size`` inputs failed at ``model``; all its requests failed with it."""


class NullObserver(EngineObserver):
    """Observes nothing."""
