"""The HTTP API: KServe v2 and ``/v1/predict`` over the runtime, Prometheus metrics, bearer auth."""

from hybridserve.server.app import create_app
from hybridserve.server.metrics import ServerMetrics
from hybridserve.server.settings import ServerSettings

__all__ = ["ServerMetrics", "ServerSettings", "create_app"]
