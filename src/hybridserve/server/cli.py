"""``hybridserve serve``: the tuned cascade behind an HTTP API until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr, ValidationError

from hybridserve.errors import HybridServeError
from hybridserve.workdir import DEFAULT_WORKDIR


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command."""

    @app.command("serve")
    def serve(
        workdir: Annotated[Path, typer.Option(help="pipeline working directory")] = DEFAULT_WORKDIR,
        policy: Annotated[
            Path | None, typer.Option(help="policy file (default: WORKDIR/policy-ap.json)")
        ] = None,
        plan: Annotated[
            Path | None,
            typer.Option(help="plan file (default: WORKDIR/plan.json, else one CPU replica each)"),
        ] = None,
        family: Annotated[
            str | None, typer.Option(help="bundled family (default: the policy's)")
        ] = None,
        config: Annotated[Path | None, typer.Option(help="your family's YAML file")] = None,
        backend: Annotated[str, typer.Option(help="local (this process) or ray")] = "local",
        address: Annotated[
            str | None,
            typer.Option(
                help="--backend ray: the Ray cluster (auto, ray://HOST:10001); "
                "default: start a local Ray instance and stop it on exit"
            ),
        ] = None,
        host: Annotated[
            str, typer.Option(help="address to bind; 0.0.0.0 exposes the server")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port (0: any free port)")] = 8000,
        api_key: Annotated[
            str | None,
            typer.Option(
                envvar="HYBRIDSERVE_API_KEY",
                show_envvar=True,
                show_default=False,
                help="bearer token required on inference and policy routes "
                "(prefer the environment variable: arguments show in `ps`)",
            ),
        ] = None,
        open_health: Annotated[
            bool,
            typer.Option(
                "--open-health/--closed-health",
                help="whether health and metrics routes answer without the token",
            ),
        ] = True,
        queue_size: Annotated[
            int, typer.Option(help="inputs each stage may hold waiting; beyond it: 503")
        ] = 1024,
        timeout_s: Annotated[float, typer.Option(help="per-request deadline; past it: 504")] = 30.0,
        max_batch: Annotated[int, typer.Option(help="most inputs per request")] = 256,
        max_body_bytes: Annotated[
            int, typer.Option(help="largest request body; beyond it: 413")
        ] = 16 * 1024 * 1024,
        log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
        access_log: Annotated[bool, typer.Option(help="log one line per request")] = False,
    ) -> None:
        """Serve the cascade: KServe v2 and /v1/predict, health, /v1/policy and /metrics."""
        from hybridserve.backends import ServeOptions, get_backend
        from hybridserve.runtime.config import EngineConfig
        from hybridserve.server.settings import ServerSettings

        logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
        if address is not None and backend != "ray":
            raise HybridServeError("--address only applies to --backend ray")
        try:
            options = ServeOptions(
                workdir=workdir,
                policy=policy,
                plan=plan,
                family=family,
                family_config=config,
                host=host,
                port=port,
                log_level=log_level,
                access_log=access_log,
                address=address,
                engine=EngineConfig(
                    queue_size=queue_size,
                    request_timeout_s=timeout_s,
                    max_batch_size=max_batch,
                    tune_gc_at_start=True,
                ),
                server=ServerSettings(
                    api_key=SecretStr(api_key) if api_key else None,
                    open_health=open_health,
                    max_body_bytes=max_body_bytes,
                ),
            )
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise HybridServeError(f"serve: {where}: {first['msg']}") from None
        module = get_backend(backend)
        module.serve_options(options)  # type: ignore[attr-defined]
