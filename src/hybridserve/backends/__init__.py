"""Where the app runs: ``local`` (uvicorn in this process, the default) or ``ray`` (Ray Serve).

Every backend module exposes ``serve_options(options: ServeOptions, target: ServeTarget) ->
None``, which serves until stopped; ``hybridserve serve --backend NAME`` builds the options,
resolves and checks the target (``hybridserve.serving``) and calls it (``backends/run.py``).
"""

from __future__ import annotations

import errno
import importlib
import socket
from pathlib import Path
from typing import Literal

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
    ray_front: Literal["process", "serve"] = Field(
        "process", description="Ray backend: HTTP in this process, or Serve's proxies"
    )
    giant_only: bool = Field(False, description="generative families: serve the giant alone")
    device: str = Field("cpu", description="generative families: device of every chain model")
    decode_batch: int = Field(
        8, ge=1, description="generative families: most prompts one decoding call takes"
    )
    iteration_level: bool = Field(
        False,
        description="generative families: iteration-level batching (local backend only)",
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


def bind_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: any free port), or one line saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise HybridServeError(f"--host {host!r}: cannot resolve it ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    # as uvicorn does: a restarted server may rebind while old connections sit in TIME_WAIT
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        why = (
            "another process is listening there" if err.errno == errno.EADDRINUSE else err.strerror
        )
        raise HybridServeError(
            f"cannot listen on {host}:{port}: {why}; pass another --port"
        ) from None
    return sock
