"""Prometheus metrics of one app, in its own registry (two apps in a process never mix figures).

HTTP figures are recorded by the front-door middleware, stage figures by the engine through the
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
    """Energy per device and queue depth per stage, read when Prometheus scrapes."""

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
            "hybridserve_stage_queue_rows",
            "Inputs waiting in each stage's queue now",
            labels=["stage"],
        )
        for stage, rows in self._queues().items():
            depth.add_metric([stage], rows)
        yield depth


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
            "hybridserve_stage_batch_size",
            "Inputs per batch, by stage",
            ["stage"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Histogram(
            "hybridserve_stage_queue_depth",
            "Inputs left waiting in a stage's queue when it formed a batch",
            ["stage"],
            buckets=DEPTH_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "hybridserve_stage_batch_duration_seconds",
            "Time a stage's replica spent on one batch (model and routing), by stage",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_errors = Counter(
            "hybridserve_stage_batch_errors",
            "Batches that raised, by stage",
            ["stage"],
            registry=r,
        )
        self._stage: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._collector: _EngineCollector | None = None

    def attach(
        self, energy: Callable[[], list[DeviceEnergy]], queues: Callable[[], dict[str, int]]
    ) -> None:
        """Read energy and queue depth from the engine at scrape time."""
        if self._collector is None:
            self._collector = _EngineCollector(energy, queues)
            self.registry.register(self._collector)

    def _children(self, stage: str) -> tuple[Any, Any, Any, Any]:
        kids = self._stage.get(stage)
        if kids is None:
            kids = (
                self.batch_size.labels(stage),
                self.queue_depth.labels(stage),
                self.stage_latency.labels(stage),
                self.answers.labels(stage),
            )
            self._stage[stage] = kids
        return kids

    def on_batch(
        self, stage: str, size: int, queue_rows: int, service_s: float, answered: int
    ) -> None:
        size_h, depth_h, latency_h, answers_c = self._children(stage)
        size_h.observe(size)
        depth_h.observe(queue_rows)
        latency_h.observe(service_s)
        if answered:
            answers_c.inc(answered)

    def on_answers(self, stage: str, answered: int) -> None:
        self._children(stage)[3].inc(answered)

    def on_batch_error(self, stage: str, size: int, error: BaseException) -> None:
        self.batch_errors.labels(stage).inc()

    def observe_http(self, route: str, status: int, seconds: float) -> None:
        code = str(status)
        self.http_requests.labels(route, code).inc()
        if status >= 400:
            self.http_errors.labels(route, code).inc()
        self.http_latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
