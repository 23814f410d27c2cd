"""Prometheus metrics of one app, in its own registry (two apps in a process never mix figures).

HTTP figures are recorded by the front-door middleware, per-model figures by the engine through the
``EngineObserver`` hook, and energy and queue depth are read from the engine at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hybridserve.runtime.energy import DeviceEnergy
from hybridserve.runtime.observer import EngineObserver

LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
DEPTH_BUCKETS = (0, 1, 4, 16, 64, 256, 1024, 4096, 16384)


class _EngineCollector(Collector):
    """Energy per device and queue depth per chain model, read when Prometheus scrapes."""

    def __init__(
        self,
        energy: Callable[[], list[DeviceEnergy]],
        queues: Callable[[], dict[str, int]],
    ) -> None:
        self._energy = energy
        self._queues = queues

    def collect(self) -> Iterator[Metric]:
        joules = CounterMetricFamily(
            "hybridserve_energy_joules",
            "Energy spent by each device while serving (NaN when its meter cannot measure)",
            labels=["device", "source"],
        )
        for e in self._energy():
            joules.add_metric([e.device, e.source], e.joules)
        yield joules
        depth = GaugeMetricFamily(
            "hybridserve_model_queue_rows",
            "Inputs waiting in each chain model's queue now",
            labels=["model"],
        )
        for model, rows in self._queues().items():
            depth.add_metric([model], rows)
        yield depth


class _DriftCollector(Collector):
    """Drift handling's state (``runtime.livedrift.LiveDrift.state``), read at scrape time."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        st = self._state()
        shadow = st.get("shadow", {})
        for name, doc, value in (
            ("hybridserve_drift_alarm", "Drift alarms raised", st["alarms"]),
            ("hybridserve_drift_retunes", "Policies re-tuned live and swapped in", st["retunes"]),
            ("hybridserve_shadow_checks", "Inputs shadow-checked", shadow.get("checked", 0)),
            (
                "hybridserve_shadow_dropped",
                "Shadow checks dropped because the shadow queue was full",
                shadow.get("dropped", 0),
            ),
            (
                "hybridserve_drift_feedback_labels",
                "True labels received by POST /v1/feedback",
                st["feedback"]["labels"],
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        state = GaugeMetricFamily(
            "hybridserve_drift_state",
            "1 for the drift handler's current state (watch, alarm, guard), else 0",
            labels=["state"],
        )
        for name in ("watch", "alarm", "guard"):
            state.add_metric([name], float(st["state"] == name))
        yield state
        agreement = GaugeMetricFamily(
            "hybridserve_shadow_agreement",
            "Rolling share of shadow checks agreeing with the giant, by answering model",
            labels=["model"],
        )
        for model, seen in st["monitor"]["agreement"].items():
            if seen.get("observed") is not None:
                agreement.add_metric([model], seen["observed"])
        yield agreement
        estimate = st.get("estimated_accuracy")
        yield GaugeMetricFamily(
            "hybridserve_estimated_accuracy",
            "Label-free estimate of served accuracy (NaN before any evidence)",
            value=float("nan") if estimate is None else estimate,
        )


class ServerMetrics(EngineObserver):
    """All metrics of one app; also the engine's observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "hybridserve_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.http_errors = Counter(
            "hybridserve_http_errors",
            "HTTP responses with status >= 400",
            ["route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "hybridserve_http_request_duration_seconds",
            "Time from request to response, end to end, by route",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.answers = Counter(
            "hybridserve_answers",
            "Inputs answered, by the model whose answer stood",
            ["model"],
            registry=r,
        )
        self.batch_size = Histogram(
            "hybridserve_model_batch_size",
            "Inputs per batch, by model",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Histogram(
            "hybridserve_model_queue_depth",
            "Inputs left waiting in a model's queue when it formed a batch",
            ["model"],
            buckets=DEPTH_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            "hybridserve_model_batch_duration_seconds",
            "Time a model's replica spent on one batch (model and routing), by model",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_errors = Counter(
            "hybridserve_model_batch_errors",
            "Batches that raised, by model",
            ["model"],
            registry=r,
        )
        self._per_model: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._collector: _EngineCollector | None = None

    def attach(
        self, energy: Callable[[], list[DeviceEnergy]], queues: Callable[[], dict[str, int]]
    ) -> None:
        """Read energy and queue depth from the engine at scrape time."""
        if self._collector is None:
            self._collector = _EngineCollector(energy, queues)
            self.registry.register(self._collector)

    def attach_drift(self, state: Callable[[], dict[str, Any]]) -> None:
        """Export drift handling's state (``LiveDrift.state``) at scrape time."""
        self.registry.register(_DriftCollector(state))

    def _children(self, model: str) -> tuple[Any, Any, Any, Any]:
        kids = self._per_model.get(model)
        if kids is None:
            kids = (
                self.batch_size.labels(model),
                self.queue_depth.labels(model),
                self.batch_latency.labels(model),
                self.answers.labels(model),
            )
            self._per_model[model] = kids
        return kids

    def on_batch(
        self, model: str, size: int, queue_rows: int, service_s: float, answered: int
    ) -> None:
        size_h, depth_h, latency_h, answers_c = self._children(model)
        size_h.observe(size)
        depth_h.observe(queue_rows)
        latency_h.observe(service_s)
        if answered:
            answers_c.inc(answered)

    def on_answers(self, model: str, answered: int) -> None:
        self._children(model)[3].inc(answered)

    def on_batch_error(self, model: str, size: int, error: BaseException) -> None:
        self.batch_errors.labels(model).inc()

    def observe_http(self, route: str, status: int, seconds: float) -> None:
        code = str(status)
        self.http_requests.labels(route, code).inc()
        if status >= 400:
            self.http_errors.labels(route, code).inc()
        self.http_latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
