"""``hybridserve serve``: the tuned cascade behind an HTTP API until SIGTERM/SIGINT.

A thin shell over ``backends.run.run_serve``: it turns options into ``ServeOptions`` and refuses
nonsense (an empty API key, an unknown log level) with one line and exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr, ValidationError

from hybridserve.cliopts import API_KEY_ENV, ConfigOption, FamilyOption, WorkdirOption
from hybridserve.errors import HybridServeError
from hybridserve.workdir import DEFAULT_WORKDIR

#: Levels ``serve`` takes (uvicorn's and logging's names, lower-case).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def api_key_from(given: str | None) -> SecretStr | None:
    """The bearer token, or None for no auth; an empty or blank one is a mistake, not "no auth".

    Click reads an empty environment variable as unset, so the environment is checked here.
    """
    if given is None and os.environ.get(API_KEY_ENV) is not None:
        given = os.environ[API_KEY_ENV]
    if given is None:
        return None
    if not given.strip():
        raise HybridServeError(
            f"the API key (--api-key or {API_KEY_ENV}) is empty; set a token, or unset it "
            "to serve without auth"
        )
    return SecretStr(given)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command."""

    @app.command("serve")
    def serve(
        workdir: WorkdirOption = DEFAULT_WORKDIR,
        policy: Annotated[
            Path | None, typer.Option(help="policy file (default: WORKDIR/policy-ap.json)")
        ] = None,
        plan: Annotated[
            Path | None,
            typer.Option(help="plan file (default: WORKDIR/plan.json, else one CPU replica each)"),
        ] = None,
        family: FamilyOption = None,
        config: ConfigOption = None,
        backend: Annotated[str, typer.Option(help="local (this process) or ray")] = "local",
        address: Annotated[
            str | None,
            typer.Option(
                help="--backend ray: the Ray cluster (auto, ray://HOST:10001); "
                "default: start a local Ray instance and stop it on exit"
            ),
        ] = None,
        ray_front: Annotated[
            str,
            typer.Option(
                help="--backend ray: where HTTP is served: 'process' (this process; the "
                "fastest on one machine) or 'serve' (Ray Serve's proxies, one per node)"
            ),
        ] = "process",
        host: Annotated[
            str, typer.Option(help="address to bind; 0.0.0.0 exposes the server")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port (0: any free port)")] = 8000,
        api_key: Annotated[
            str | None,
            typer.Option(
                envvar=API_KEY_ENV,
                show_envvar=True,
                show_default=False,
                help="bearer token required on inference and policy routes "
                "(prefer the environment variable: arguments show in `ps`); never empty",
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
            int,
            typer.Option(
                help="inputs each position may hold waiting (≥ the plan's largest batch); "
                "beyond it: 503"
            ),
        ] = 1024,
        timeout_s: Annotated[float, typer.Option(help="per-request deadline; past it: 504")] = 30.0,
        max_batch: Annotated[int, typer.Option(help="most inputs per request")] = 256,
        max_body_bytes: Annotated[
            int, typer.Option(help="largest request body; beyond it: 413")
        ] = 16 * 1024 * 1024,
        log_level: Annotated[str, typer.Option(help=", ".join(LOG_LEVELS))] = "info",
        access_log: Annotated[bool, typer.Option(help="log one line per request")] = False,
        giant_only: Annotated[
            bool,
            typer.Option(
                help="generative families: serve the giant alone (also the fallback when the "
                "workdir holds no policy)"
            ),
        ] = False,
        device: Annotated[
            str, typer.Option(help="generative families: device of every chain model")
        ] = "cpu",
        decode_batch: Annotated[
            int, typer.Option(help="generative families: most prompts one decoding call takes")
        ] = 8,
        iteration_level: Annotated[
            bool,
            typer.Option(
                "--iteration-level/--request-level",
                help="generative families: refill decode batches between steps instead of "
                "between calls (Hugging Face causal LMs; local backend only)",
            ),
        ] = False,
        drift: Annotated[
            bool,
            typer.Option(
                "--drift/--no-drift",
                help="drift handling: shadow checks against the giant, drift detectors, a guard "
                "and live re-tunes (needs the workdir's validation logits); see /v1/policy",
            ),
        ] = False,
        drift_guard: Annotated[
            str, typer.Option(help="--drift: on an alarm, 'giant' (giant alone) or 'none'")
        ] = "giant",
        shadow_fraction: Annotated[
            float,
            typer.Option(help="--drift: share of early answers re-checked by the giant"),
        ] = 0.025,
    ) -> None:
        """Serve the cascade: KServe v2 and /v1/predict, health, /v1/policy and /metrics.

        A generative family (task: generate) is served behind OpenAI-compatible routes instead:
        /v1/completions, /v1/models, health and /metrics.
        """
        import logging

        from hybridserve.backends import ServeOptions
        from hybridserve.backends.run import run_serve
        from hybridserve.runtime.config import EngineConfig
        from hybridserve.server.settings import ServerSettings

        # checked here, not by a click choice, so a typo is one line and exit 2 like every
        # other bad option of this command
        level = log_level.strip().lower()
        if level not in LOG_LEVELS:
            raise HybridServeError(f"--log-level {log_level!r}: expected one of {list(LOG_LEVELS)}")
        if address is not None and backend != "ray":
            raise HybridServeError("--address only applies to --backend ray")
        if ray_front not in ("process", "serve"):
            raise HybridServeError(f"--ray-front {ray_front!r}: expected 'process' or 'serve'")
        if ray_front != "process" and backend != "ray":
            raise HybridServeError("--ray-front only applies to --backend ray")
        key = api_key_from(api_key)
        logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
        try:
            options = ServeOptions(
                workdir=workdir,
                policy=policy,
                plan=plan,
                family=family,
                family_config=config,
                host=host,
                port=port,
                log_level=level,
                access_log=access_log,
                address=address,
                ray_front=ray_front,
                giant_only=giant_only,
                device=device,
                decode_batch=decode_batch,
                iteration_level=iteration_level,
                engine=EngineConfig(
                    queue_size=queue_size,
                    request_timeout_s=timeout_s,
                    max_batch_size=max_batch,
                    tune_gc_at_start=True,
                    drift=drift,
                    drift_guard=drift_guard,  # pydantic checks it
                    shadow_fraction=shadow_fraction,
                ),
                server=ServerSettings(
                    api_key=key,
                    open_health=open_health,
                    max_body_bytes=max_body_bytes,
                    workdir=workdir,  # live policies (POST /v1/policy) are saved there
                ),
            )
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise HybridServeError(f"serve: {where}: {first['msg']}") from None
        run_serve(options, backend)
