"""``GET /v1/policy`` and ``POST /v1/policy``: show the served policy, swap a new one in live.

``POST`` takes a policy as JSON (the body of a ``policy-*.json`` file) or ``{"path": NAME}``
naming a policy file inside the server's workdir (``ServerSettings.workdir``; a path that
resolves outside it, symbolic links included, is refused, so the route reads no other file).
The policy is validated for the served family (``CascadePolicy.from_dict`` and
``check_family``) and swapped into the engine (``swap_policy``: requests already accepted
finish under their version, every later one is routed by the new one), then saved in the
workdir as ``policy-live-v<N>.json``. Any problem is a 422 naming the field, and nothing
changes. Swaps are serialised, so versions and files match one to one.

With drift handling on (``EngineConfig.drift``) ``GET`` also shows its state, and the policies
it swaps in (guard, re-tune) are saved the same way (``install_drift``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, params
from fastapi.responses import JSONResponse, Response

from hybridserve.errors import HybridServeError
from hybridserve.runtime.contract import ServingEngine
from hybridserve.runtime.errors import EngineClosedError
from hybridserve.server.metrics import ServerMetrics
from hybridserve.server.openapi import POLICY_SWAP, responses
from hybridserve.server.schemas import PolicyResponse, PolicySwapped
from hybridserve.server.settings import ServerSettings
from hybridserve.tuning.policy import CascadePolicy

log = logging.getLogger(__name__)


class PolicyRefusedError(HybridServeError):
    """A policy ``POST /v1/policy`` cannot swap in (answered 422; nothing changed)."""


def live_policy_file(workdir: Path, version: int) -> Path:
    """Where a policy swapped in live as ``version`` is saved."""
    return workdir / f"policy-live-v{version}.json"


def policy_from_body(body: dict[str, Any], workdir: Path | None) -> CascadePolicy:
    """The policy a request body gives: inline JSON, or ``{"path"}`` of a file in ``workdir``."""
    if "path" not in body:
        return CascadePolicy.from_dict(body)
    if set(body) != {"path"}:
        raise PolicyRefusedError(f"path: give either a policy or only a path, not {sorted(body)}")
    raw = body["path"]
    if not isinstance(raw, str) or not raw:
        raise PolicyRefusedError("path: expected a file name in the server's workdir")
    if workdir is None:
        raise PolicyRefusedError("path: this server has no workdir; send the policy itself")
    root = workdir.resolve()
    target = (root / raw).resolve()
    if not target.is_relative_to(root) or target.suffix != ".json":
        raise PolicyRefusedError(f"path: {raw!r} is not a .json file inside the server's workdir")
    if not target.is_file():
        raise PolicyRefusedError(f"path: {raw!r}: no such file in the server's workdir")
    return CascadePolicy.load(target)


def install_policy_routes(
    app: FastAPI,
    engine: Callable[[], ServingEngine | None],
    serving: Callable[[], ServingEngine],
    settings: ServerSettings,
    auth: Sequence[params.Depends],
    token: bool,
) -> None:
    """Add the policy routes; ``engine`` is the app's engine if built, ``serving`` the ready one
    (it raises ``EngineClosedError`` otherwise)."""
    lock = asyncio.Lock()

    @app.get(
        "/v1/policy",
        response_model=PolicyResponse,
        responses=responses(503, token=token),
        dependencies=list(auth),
        summary="The served policy, its version and the engine's positions",
    )
    async def policy() -> PolicyResponse:
        eng = engine()
        if eng is None:
            raise EngineClosedError("the engine is not built yet")
        return PolicyResponse(
            family=eng.family.name,
            version=eng.policy_version,
            policy=eng.policy.to_dict(),
            engine=eng.describe(),
            drift=drift.state() if (drift := getattr(eng, "drift", None)) is not None else None,
        )

    @app.post(
        "/v1/policy",
        response_model=PolicySwapped,
        responses=responses(token=token, extra=POLICY_SWAP),
        dependencies=list(auth),
        summary="Swap a policy in live (a policy JSON, or {path} of a file in the workdir)",
    )
    async def swap(body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
        eng = serving()
        async with lock:
            try:
                new = policy_from_body(body, settings.workdir)
                new.check_family(eng.family.names, eng.family.name)
                version = await eng.swap_policy(new)
            except (HybridServeError, OSError, ValueError) as err:
                return JSONResponse({"error": str(err)}, status_code=422)
            saved = None
            if settings.workdir is not None:
                saved = live_policy_file(settings.workdir, version)
                try:
                    await asyncio.to_thread(new.save, saved)
                except OSError as err:  # the swap stands; only the record failed
                    log.error("policy version %d is live but could not be saved: %s", version, err)
                    saved = None
        log.info("policy version %d swapped in (chain %s)", version, list(new.chain))
        answer = PolicySwapped(version=version, chain=list(new.chain), file=saved and str(saved))
        return JSONResponse(answer.model_dump())


def install_drift(engine: ServingEngine, metrics: ServerMetrics, settings: ServerSettings) -> None:
    """With drift handling on: export its metrics and save each policy it swaps in."""
    drift = getattr(engine, "drift", None)
    if drift is None:
        return
    metrics.attach_drift(drift.state)
    workdir = settings.workdir

    def saved(version: int, policy: CascadePolicy, reason: str) -> None:
        if workdir is None:
            return
        path = live_policy_file(workdir, version)
        try:
            policy.save(path)  # small JSON; a swap is rare
        except OSError as err:
            log.error("%s policy version %d is live but not saved: %s", reason, version, err)

    drift.on_swap = saved
