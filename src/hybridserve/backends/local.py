"""The default backend: the app under uvicorn in this process, engine threads on local devices.

SIGTERM or SIGINT: uvicorn stops accepting connections and waits for requests in flight, then
the app's shutdown drains the engine; the process then exits 0 (uvicorn would otherwise re-raise
the signal after a graceful stop, which reads as a crash to supervisors). An engine that cannot
be built or started stops the server at once, and ``serve`` raises with the reason (the CLI
prints it on one line and exits 2) instead of serving 503s.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from hybridserve.backends import ServeOptions
from hybridserve.errors import HybridServeError
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.engine import Engine
from hybridserve.server.app import create_app, engine_failure, on_engine_failure
from hybridserve.workdir import Workdir

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def engine_from_workdir(
    workdir: Path | str,
    policy_path: Path | str | None = None,
    plan_path: Path | str | None = None,
    config: EngineConfig | None = None,
    *,
    family: str | None = None,
    family_config: Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
) -> Engine:
    """An (unstarted) engine for a workdir's policy and plan.

    Defaults: ``WORKDIR/policy-ap.json``; ``WORKDIR/plan.json`` if it exists, else one replica of
    each chain model on ``device`` (``Plan.default``). The family is the policy's (bundled) one
    unless ``family``/``family_config`` say otherwise.
    """
    from hybridserve.models.family import load_family
    from hybridserve.planning.plan import Plan
    from hybridserve.tuning.policy import CascadePolicy

    wd = Workdir(Path(workdir))
    policy_file = Path(policy_path) if policy_path is not None else wd.policy("ap")
    if policy_path is None and not policy_file.is_file():
        raise HybridServeError(
            f"{policy_file}: not found; run `hybridserve tune --workdir {wd.root}` or pass --policy"
        )
    policy = CascadePolicy.load(policy_file)
    fam = load_family(family or policy.family, family_config, device=device)
    policy.check_family(fam.names, fam.name)
    if plan_path is not None:
        plan = Plan.load(Path(plan_path))
    elif wd.plan.is_file():
        plan = Plan.load(wd.plan)
    else:
        plan = Plan.default(fam.name, policy.chain, device=device, batch_size=batch_size)
    missing = [m for m in policy.chain if not plan.replicas(m)]
    if missing:
        raise HybridServeError(
            f"plan places no replica of {missing}, which the policy routes to; "
            "re-run `hybridserve plan` for this policy"
        )
    return Engine(policy, plan, fam, config)


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the shutdown signal after a graceful stop."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    access_log: bool = False,
    graceful_timeout_s: float | None = 30.0,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT; return after draining (the CLI then exits 0)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,  # request lines only; never headers, so never the token
        lifespan="on",
        timeout_graceful_shutdown=int(graceful_timeout_s) if graceful_timeout_s else None,
    )
    server = _Server(config)

    def engine_failed(_: str) -> None:
        server.should_exit = True

    on_engine_failure(app, engine_failed)
    server.run()
    failure = engine_failure(app)
    if failure is not None:
        raise HybridServeError(failure)
    if not server.started:
        raise HybridServeError(f"could not serve on {host}:{port} (see the log above)")


def serve_options(options: ServeOptions) -> None:
    """``hybridserve serve --backend local``: build the engine now (errors exit 2), then serve."""
    engine = engine_from_workdir(
        options.workdir,
        options.policy,
        options.plan,
        options.engine,
        family=options.family,
        family_config=options.family_config,
    )
    log.info(
        "serving %s (chain %s) on http://%s:%d%s",
        engine.family.name,
        " → ".join(engine.chain),
        options.host,
        options.port,
        " with bearer-token auth" if options.server.api_key is not None else "",
    )
    serve(
        create_app(engine, options.server),
        options.host,
        options.port,
        log_level=options.log_level,
        access_log=options.access_log,
        graceful_timeout_s=options.engine.drain_timeout_s or None,
    )
