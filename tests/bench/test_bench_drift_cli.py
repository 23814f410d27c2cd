"""``hybridserve bench --drift``: a workdir it cannot use is one line and exit 2.

The drift run itself (`bench/drift.py`) replays the `drift/` loop tested in tests/drift; it needs
a calibrated and profiled workdir of the bundled family, too slow to build here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hybridserve.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--drift needs .*calibration.json: run calibrate and profile first"),
        (["--drift-images", "10"], r"--drift-images must be in \[500, 5000\], got 10"),
    ],
)
def test_bench_drift_refuses_what_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["bench", "--drift", "--workdir", str(tmp_path), *extra])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
