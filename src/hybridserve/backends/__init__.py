"""Where the app runs: ``local`` (uvicorn in this process, the default) or ``ray`` (Ray Serve).

Every backend module exposes ``serve_options(options: ServeOptions) -> None``, which serves
until stopped; ``hybridserve serve --backend NAME`` builds the options and calls it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from hybridserve.errors import HybridServeError
from hybridserve.runtime.config import EngineConfig
from hybridserve.server.settings import ServerSettings

BACKENDS = {"local": "hybridserve.backends.local", "ray": "hybridserve.backends.ray_backend"}


class ServeOptions(BaseModel):
    """Everything ``hybridserve serve`` was told, for any backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workdir: Path
    policy: Path | None = None
    plan: Path | None = None
    family: str | None = None
    family_config: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"
    access_log: bool = False
    engine: EngineConfig = EngineConfig()
    server: ServerSettings = ServerSettings()
    address: str | None = Field(
        None,
        description="Ray cluster address ('auto', 'ray://head:10001'); None starts a local Ray",
    )


def get_backend(name: str) -> object:
    """The backend module called ``name``; unknown or uninstalled backends are user errors."""
    module = BACKENDS.get(name)
    if module is None:
        raise HybridServeError(f"--backend {name!r}: expected one of {sorted(BACKENDS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        hint = " (pip install 'hybridserve[ray]')" if name == "ray" else ""
        raise HybridServeError(f"--backend {name!r} is not available: {err}{hint}") from err
