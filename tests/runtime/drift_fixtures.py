"""A tiny cascade with drift handling on, and the inputs that make it drift.

Imported as ``runtime.drift_fixtures`` (the tests folder is on ``sys.path``, see conftest).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from hybridserve.drift.monitor import DriftMonitor
from hybridserve.models import Model
from hybridserve.runtime import Engine, EngineConfig
from hybridserve.tuning import CascadePolicy
from hybridserve.tuning.costs import CostTable, ModelCost
from runtime.cascade_fixtures import (
    NAMES,
    make_family,
    make_inputs,
    make_policy,
    one_replica_plan,
    tiny_models,
)

BASE = make_policy(make_family(), make_inputs(100))
COSTS = CostTable(
    "given",
    None,
    {NAMES[0]: ModelCost(1.0, 1.0), NAMES[1]: ModelCost(3.0, 1.0), NAMES[2]: ModelCost(20.0, 1.0)},
)


def fitted_monitor(policy: CascadePolicy = BASE) -> DriftMonitor:
    """The monitor of ``policy`` fitted on 2,000 clean inputs (a short horizon: fast)."""
    x = make_inputs(2000, seed=5)
    logits = {m.name: m.predict_logits(x) for m in tiny_models()}
    return DriftMonitor(horizon=2000).fit(policy, logits)


def shifted(n: int, seed: int = 9) -> npt.NDArray[np.uint8]:
    """Dark inputs: the small model grows unsure (its signature test alarms at its first look)."""
    return (make_inputs(n, seed) // 4).astype(np.uint8)


def drift_engine(
    policy: CascadePolicy = BASE,
    wrap: Callable[[list[Model]], None] | None = None,
    costs: CostTable | None = COSTS,
    **config: object,
) -> Engine:
    """The tiny cascade serving ``policy`` with drift handling on (``config`` overrides)."""
    models: list[Model] = list(tiny_models())
    if wrap is not None:
        wrap(models)
    settings: dict[str, object] = {
        "max_batch_size": 8,
        "energy": False,
        "queue_size": 4096,
        "drift": True,
        **config,
    }
    return Engine(
        policy,
        one_replica_plan(batch_size=8, max_wait_ms=2.0),
        make_family(models),
        EngineConfig(**settings),  # type: ignore[arg-type]
        monitor=fitted_monitor(policy),
        costs=costs,
    )
