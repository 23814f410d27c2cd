"""The serving runtime: the cascade as asyncio positions, dynamically batched on planned devices."""

from hybridserve.runtime.answers import Answer, answer_dicts, answers
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.contract import ServedPolicy, ServingEngine
from hybridserve.runtime.energy import DeviceEnergy, EnergyAccount
from hybridserve.runtime.engine import Engine, ServingPlan
from hybridserve.runtime.errors import (
    BatchFailedError,
    BatchTimeoutError,
    BatchTooLargeError,
    DeadlineExceededError,
    EngineClosedError,
    InvalidInputError,
    PolicySwapError,
    QueueFullError,
    ServingError,
)
from hybridserve.runtime.job import Result
from hybridserve.runtime.observer import EngineObserver, NullObserver
from hybridserve.runtime.position import RoutingPolicy

__all__ = [
    "Answer",
    "BatchFailedError",
    "BatchTimeoutError",
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
    "PolicySwapError",
    "QueueFullError",
    "Result",
    "RoutingPolicy",
    "ServedPolicy",
    "ServingEngine",
    "ServingError",
    "ServingPlan",
    "answer_dicts",
    "answers",
]
