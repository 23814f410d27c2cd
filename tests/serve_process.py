"""Helpers for tests that start ``hybridserve serve`` as a real process on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command() -> list[str]:
    """The installed console script, else the module."""
    exe = shutil.which("hybridserve")
    return [exe] if exe else [sys.executable, "-m", "hybridserve.cli"]


def wait_ready(
    proc: subprocess.Popen[str] | subprocess.Popen[bytes],
    url: str,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> None:
    """Poll ``/v2/health/ready`` until it answers 200; fail if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, "server exited early"
        try:
            r = httpx.get(f"{url}/v2/health/ready", headers=headers, timeout=1.0)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.2)
