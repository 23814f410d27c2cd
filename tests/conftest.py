"""Shared fixtures. Keep this small: helpers that one package uses belong in its own tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
#: Holds ``tiny_family.py``; family YAMLs in tests name its loaders as ``tiny_family:small``.
TINY_FAMILY_DIR = TESTS_DIR / "models"


@pytest.fixture
def tiny_family_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A two-model family (``small`` over-confident by T=4, ``big`` calibrated), written to disk.

    Returns the ``family.yaml`` path; its loaders are importable while the test runs.
    """
    monkeypatch.syspath_prepend(str(TINY_FAMILY_DIR))
    from tiny_family import write_tiny_family

    return write_tiny_family(tmp_path / "tiny")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub access: offline mode set, and any socket connection fails the test."""
    import socket

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def tiny_family_env() -> dict[str, str]:
    """Environment for a subprocess that must import ``tiny_family`` (and hybridserve)."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TINY_FAMILY_DIR), env.get("PYTHONPATH", "")) if p
    )
    return env


if str(TESTS_DIR) not in sys.path:  # pragma: no cover - pytest's rootdir conftest normally adds it
    sys.path.insert(0, str(TESTS_DIR))
