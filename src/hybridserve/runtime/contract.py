"""The serving-engine contract: what the HTTP app, the bench and the tests may ask of an engine.

``runtime.Engine`` implements it, whether its replicas are threads in this process or Ray
actors (``backends.ray_replicas``); ``tests/runtime/test_engine_contract.py`` runs one suite
over both. The app is typed against ``ServingEngine`` only, so another engine plugs in by
implementing these members.

Errors are the runtime's (``runtime.errors``): ``InvalidInputError`` for inputs that do not fit
the family (4xx), ``QueueFullError`` and ``EngineClosedError`` for "retry later" (503),
``DeadlineExceededError`` / ``BatchTimeoutError`` for a request or model call past its deadline
(504) and ``BatchFailedError`` when the model raised on the request's own inputs (500).
"""

from __future__ import annotations

from typing import Any, Protocol

from hybridserve.errors import HybridServeError
from hybridserve.models.family import Family
from hybridserve.runtime.answers import Answer
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.energy import DeviceEnergy
from hybridserve.runtime.job import Result
from hybridserve.runtime.observer import EngineObserver
from hybridserve.runtime.position import RoutingPolicy


class ServedPolicy(RoutingPolicy, Protocol):
    """A routing policy that is also data (``hybridserve.tuning.CascadePolicy`` is one)."""

    def to_dict(self) -> dict[str, Any]: ...


class ServingEngine(Protocol):
    """A family served as a cascade behind ``predict`` (see the module docstring)."""

    @property
    def family(self) -> Family:
        """The family served (name, input shape and range, label names)."""
        ...

    @property
    def config(self) -> EngineConfig: ...

    @property
    def chain(self) -> tuple[str, ...]:
        """The chain new requests are routed through (the current policy's)."""
        ...

    @property
    def policy(self) -> ServedPolicy:
        """The policy new requests are routed by; ``policy.to_dict()`` is its JSON form."""
        ...

    @property
    def policy_version(self) -> int:
        """1 for the policy the engine was built with, then one more per ``swap_policy``."""
        ...

    # ------------------------------------------------------------------ health and load
    @property
    def ready(self) -> bool:
        """Started, warmed up, not stopping, and every chain position has a working replica."""
        ...

    @property
    def not_ready_reason(self) -> str | None:
        """Why ``ready`` is False, in one line for the readiness route (None when ready)."""
        ...

    @property
    def overloaded(self) -> bool:
        """A new request would be refused with ``QueueFullError`` (cheap: asked per request)."""
        ...

    @property
    def inflight(self) -> int:
        """``predict`` calls accepted and not yet finished."""
        ...

    def queue_depths(self) -> dict[str, int]:
        """Inputs waiting at each chain model (every model of ``chain``, 0 when idle)."""
        ...

    # ------------------------------------------------------------------ requests
    async def predict_result(self, batch: Any, timeout_s: float | None = None) -> Result:
        """Answers of a batch (N × the family's input shape) as columns."""
        ...

    async def predict(self, batch: Any, timeout_s: float | None = None) -> list[Answer]:
        """One ``Answer`` per input of ``batch`` (``runtime.answers``)."""
        ...

    # ------------------------------------------------------------------ reports
    def energy_snapshot(self) -> list[DeviceEnergy]:
        """Joules per metered device since start (empty where the engine cannot meter)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON for health pages and logs; always has ``family`` and ``state``."""
        ...

    def set_observer(self, observer: EngineObserver) -> None:
        """Report batches to ``observer`` from now on (the server's metrics)."""
        ...

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> ServingEngine:
        """Build and warm up; raises (and the engine is closed) if it cannot serve."""
        ...

    async def stop(self, drain: bool = True) -> None:
        """Refuse new requests; with ``drain`` wait at most ``config.drain_timeout_s`` for the
        accepted ones, then fail what is left with ``EngineClosedError``. Never hangs."""
        ...

    async def __aenter__(self) -> ServingEngine:
        """``start()``."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """``stop()``."""
        ...

    async def swap_policy(self, policy: ServedPolicy) -> int:
        """Route requests accepted from now on by ``policy``; returns its ``policy_version``.

        Atomic per request: a request is routed start to end by the version in force when it
        was accepted, and its ``Result.policy_version`` names it. Raises ``PolicySwapError``
        (nothing changes) for a policy of another family or one routing to a model the engine
        does not serve; each engine documents which chains it can swap to.
        """
        ...


def check_policy(policy: ServedPolicy, family: Family) -> None:
    """Refuse a policy of another family or one routing to models the family lacks."""
    if policy.family != family.name:
        raise HybridServeError(
            f"policy is for family {policy.family!r}, not {family.name!r}; re-run tune"
        )
    missing = [m for m in policy.chain if m not in family.names]
    if missing:
        raise HybridServeError(
            f"policy.chain: models {missing} are not in the family {family.names}"
        )
