"""The serving runtime: the cascade as asyncio stages with dynamic batching on planned devices."""

from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.energy import DeviceEnergy, EnergyAccount
from hybridserve.runtime.engine import Answer, Engine, ServingPlan
from hybridserve.runtime.errors import (
    BatchFailedError,
    BatchTooLargeError,
    DeadlineExceededError,
    EngineClosedError,
    InvalidInputError,
    QueueFullError,
    ServingError,
)
from hybridserve.runtime.job import Result
from hybridserve.runtime.observer import EngineObserver, NullObserver
from hybridserve.runtime.stage import RoutingPolicy

__all__ = [
    "Answer",
    "BatchFailedError",
    "BatchTooLargeError",
    "DeadlineExceededError",
    "DeviceEnergy",
    "EnergyAccount",
    "Engine",
    "EngineClosedError",
    "EngineConfig",
    "EngineObserver",
    "InvalidInputError",
    "NullObserver",
    "QueueFullError",
    "Result",
    "RoutingPolicy",
    "ServingError",
    "ServingPlan",
]
