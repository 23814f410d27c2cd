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
import socket
import threading
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from hybridserve.backends import ServeOptions, bind_port
from hybridserve.errors import HybridServeError
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.engine import Engine
from hybridserve.server.app import create_app, engine_failure, on_engine_failure
from hybridserve.serving import ServeTarget, check_here, resolve_target

if TYPE_CHECKING:
    from hybridserve.genserving import GenerativeTarget
    from hybridserve.models.family import Family

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def engine_for(
    target: ServeTarget,
    config: EngineConfig | None = None,
    device: str = "cpu",
    workdir: Path | None = None,
) -> Engine:
    """An (unstarted) engine for a resolved target; loads the family's weights on ``device``.
    With ``config.drift`` its drift monitor is fitted from ``workdir`` (``drift_inputs``)."""
    if config is not None and config.drift:
        if workdir is None:
            raise HybridServeError("--drift: needs the workdir's validation logits (--workdir)")
        family = target.load_family(device)
        monitor, costs = drift_inputs(workdir, target, config, family)
        return Engine(target.policy, target.plan, family, config, monitor=monitor, costs=costs)
    return Engine(target.policy, target.plan, target.load_family(device), config)


def drift_inputs(
    workdir: Path, target: ServeTarget, config: EngineConfig, family: Family
) -> tuple[Any, Any]:
    """The served policy's ``DriftMonitor``, fitted on the workdir's cached validation logits
    (``calibrate`` writes them), and the cost table live re-tunes price chains with. The
    label-free estimate learns from the corrupted validation sets ``bench --drift`` caches in
    the workdir, where there are some for these models; otherwise it is ATC alone."""
    from hybridserve.drift.monitor import DriftMonitor
    from hybridserve.drift.shifted import cached_catalogue
    from hybridserve.tuning.tune import _cached_logits, load_costs
    from hybridserve.workdir import Workdir

    wd = Workdir(workdir)
    names = list(target.policy.chain)
    logits, labels = _cached_logits(wd, target.family_name, names, "val")
    every, _ = _cached_logits(wd, target.family_name, list(family.names), "val")
    shift_sets = [(ls.logits, ls.labels) for ls in cached_catalogue(wd, family)]
    if shift_sets:
        shift_sets.append((every, labels))
    monitor = DriftMonitor(shadow_fraction=config.shadow_fraction).fit(
        target.policy, logits, labels, shift_sets=shift_sets
    )
    costs = load_costs(wd, target.family_name, names, target.config)
    log.info(
        "drift handling on: %.1f %% shadow checks, guard %s, re-tune after %d pairs; "
        "accuracy estimate: %s",
        100 * config.shadow_fraction,
        config.drift_guard,
        config.drift_min_pairs,
        f"window model on {len(shift_sets)} sets" if shift_sets else "ATC (no shifted sets)",
    )
    return monitor, costs


def engine_from_workdir(
    workdir: Path | str,
    policy_path: Path | str | None = None,
    plan_path: Path | str | None = None,
    config: EngineConfig | None = None,
    *,
    family: str | None = None,
    family_config: Path | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
) -> Engine:
    """An (unstarted) engine for a workdir's policy and plan, found and checked as ``serve``
    finds them (``hybridserve.serving``); without a plan, one replica each on ``device``."""
    target = resolve_target(
        workdir,
        policy=None if policy_path is None else Path(policy_path),
        plan=None if plan_path is None else Path(plan_path),
        family=family,
        family_config=family_config,
        device=device,
        batch_size=batch_size,
    )
    check_here(target, queue_size=None if config is None else config.queue_size)
    return engine_for(target, config, device)


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
    sock: socket.socket | None = None,
    log_level: str = "info",
    access_log: bool = False,
    graceful_timeout_s: float | None = 30.0,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (on ``sock`` when given, already bound to
    ``host:port``); return after draining (the CLI then exits 0)."""
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
    server.run(sockets=None if sock is None else [sock])
    failure = engine_failure(app)
    if failure is not None:
        raise HybridServeError(failure)
    if not server.started:
        raise HybridServeError(f"could not serve on {host}:{port} (see the log above)")


class ServerThread:
    """``app`` under uvicorn in a background thread, on a socket bound beforehand.

    For servers whose process has other work on its main thread (the Ray backend waits for
    signals there). uvicorn installs no signal handlers off the main thread; ``stop`` asks it
    to shut down gracefully, which drains the app's engine (its lifespan's shutdown).
    """

    def __init__(self, app: FastAPI, sock: socket.socket, log_level: str = "warning") -> None:
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
        self.app = app
        self.server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [sock]},
            name="hybridserve-http",
            daemon=True,
        )
        on_engine_failure(app, self._engine_failed)

    def _engine_failed(self, _: str) -> None:
        self.server.should_exit = True

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def failure(self) -> str | None:
        """Why the app's engine could not start (None: it did, or has not yet)."""
        return engine_failure(self.app)

    def stop(self, timeout_s: float = 60.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)


def serve_options(options: ServeOptions, target: ServeTarget) -> None:
    """``hybridserve serve --backend local``: bind the port, build the engine, then serve.

    The port is bound before the weights load, so a taken port is reported in a second, and
    kept: nothing can take it while the models load.
    """
    sock = bind_port(options.host, options.port)
    with sock:
        engine = engine_for(target, options.engine, workdir=options.workdir)
        port = int(sock.getsockname()[1])
        log.info(
            "serving %s (chain %s) on http://%s:%d%s",
            target.family_name,
            " → ".join(target.policy.chain),
            options.host,
            port,
            " with bearer-token auth" if options.server.api_key is not None else "",
        )
        _serve_on(create_app(engine, options.server), sock, port, options)


def serve_generative(options: ServeOptions, target: GenerativeTarget) -> None:
    """``hybridserve serve`` of a generative family: OpenAI-compatible routes (port first)."""
    from hybridserve.genserving import generative_engine
    from hybridserve.server.openai_app import create_generative_app

    sock = bind_port(options.host, options.port)
    with sock:
        engine = generative_engine(
            target,
            options.engine,
            device=options.device,
            max_batch=options.decode_batch,
            iteration_level=options.iteration_level,
        )
        port = int(sock.getsockname()[1])
        log.info(
            "serving %s (chain %s, policy %s) on http://%s:%d/v1%s",
            target.family_name,
            " → ".join(engine.chain),
            target.policy_source,
            options.host,
            port,
            " with bearer-token auth" if options.server.api_key is not None else "",
        )
        _serve_on(create_generative_app(engine, options.server), sock, port, options)


def _serve_on(app: FastAPI, sock: socket.socket, port: int, options: ServeOptions) -> None:
    """Run ``app`` under uvicorn on the socket bound before the models were loaded."""
    serve(
        app,
        options.host,
        port,
        sock=sock,
        log_level=options.log_level,
        access_log=options.access_log,
        graceful_timeout_s=options.engine.drain_timeout_s or None,
    )
