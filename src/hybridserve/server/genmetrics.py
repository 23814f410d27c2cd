"""Prometheus metrics of a generative app: the classifier server's, plus tokens and reach."""

from __future__ import annotations

from prometheus_client import Counter

from hybridserve.runtime.genengine import GenerativeObserver
from hybridserve.server.metrics import ServerMetrics


class GenerativeMetrics(ServerMetrics, GenerativeObserver):
    """``ServerMetrics`` with tokens generated and requests reached, per chain model."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = Counter(
            "hybridserve_generated_tokens",
            "Tokens generated, by model (answers that stood and those passed on)",
            ["model"],
            registry=self.registry,
        )
        self.reach = Counter(
            "hybridserve_model_reach",
            "Requests queued at each chain model (entered there or escalated to it)",
            ["model"],
            registry=self.registry,
        )

    def on_tokens(self, model: str, tokens: int) -> None:
        self.tokens.labels(model).inc(tokens)

    def on_reach(self, model: str, requests: int) -> None:
        self.reach.labels(model).inc(requests)
