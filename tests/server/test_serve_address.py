"""``hybridserve serve --address`` reaches the Ray backend's options and nothing else."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hybridserve.backends import ServeOptions
from hybridserve.cli import app

pytestmark = pytest.mark.unit


def test_address_without_the_ray_backend_is_refused() -> None:
    result = CliRunner().invoke(app, ["serve", "--address", "auto"])
    assert result.exit_code != 0
    assert "--address only applies to --backend ray" in str(result.exception)


def test_address_is_carried_in_the_serve_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    options = ServeOptions(workdir=tmp_path, address="ray://head:10001")
    assert options.address == "ray://head:10001"
    assert ServeOptions(workdir=tmp_path).address is None
