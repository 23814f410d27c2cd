"""An in-process app around the tiny three-model cascade, for the server tests.

Imported as ``server.app_harness`` (the tests folder is on ``sys.path``, see conftest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from hybridserve.models import Model
from hybridserve.runtime import Engine, EngineConfig
from hybridserve.server import ServerSettings, create_app
from runtime.cascade_fixtures import (
    make_family,
    make_inputs,
    make_policy,
    one_replica_plan,
    tiny_models,
)

POLICY_X = make_inputs(100)


def make_engine(
    wrap: Callable[[list[Model]], None] | None = None,
    config: EngineConfig | None = None,
    batch_size: int = 8,
    max_wait_ms: float = 2.0,
) -> Engine:
    """The tiny cascade (4×4 inputs, at most 8 inputs a request unless ``config`` says)."""
    models: list[Model] = list(tiny_models())
    if wrap is not None:
        wrap(models)
    policy = make_policy(make_family(), POLICY_X)
    plan = one_replica_plan(batch_size=batch_size, max_wait_ms=max_wait_ms)
    return Engine(policy, plan, make_family(models), config or EngineConfig(max_batch_size=8))


@asynccontextmanager
async def app_client(engine: Engine, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on ``create_app(engine, ServerSettings(**settings))``, started."""
    settings.setdefault("start_in_background", False)
    app = create_app(engine, ServerSettings(**settings))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as client,
    ):
        yield client
