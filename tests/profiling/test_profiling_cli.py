"""``hybridserve profile`` and ``run_profile``: exit codes, profile.json, reuse and --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridserve.cli import main
from hybridserve.errors import HybridServeError
from hybridserve.profiling.cli import parse_batch_sizes, profile_table
from hybridserve.profiling.profiler import ProfilerSettings
from hybridserve.profiling.run import run_profile
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.unit

FAST = ProfilerSettings(
    time_budget_s=0.01, rounds=1, warmup_s=0.0, min_warmup=1, min_repeats=2, max_repeats=3
)


@pytest.mark.parametrize(
    "args",
    [
        ["--device", "cuda:7"],
        ["--device", "tpu"],
        ["--batch-sizes", "1,two"],
        ["--batch-sizes", "0,4"],
        ["--family", "fashion-mnist", "--config", "x.yaml"],
        ["--config", "does-not-exist.yaml"],
    ],
)
def test_user_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes("8, 1,2,2") == (1, 2, 8)
    with pytest.raises(HybridServeError, match="--batch-sizes"):
        parse_batch_sizes("")


def test_command_writes_profile_json(
    tiny_family_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "wd"
    main([
        "profile", "--config", str(tiny_family_yaml), "--batch-sizes", "1,4",
        "--serving-batch-size", "4", "--time-budget-s", "0.01", "--meter", "modelled",
        "--workdir", str(workdir),
    ])  # fmt: skip
    body = json.loads((workdir / "profile.json").read_text())
    assert body["format"] == "hybridserve/profile"
    assert body["meter"]["source"] == "modelled"
    assert [m["name"] for m in body["models"]] == ["small", "big"]
    assert all(m["energy_j_per_request"] > 0 for m in body["models"])
    out = capsys.readouterr().out
    assert "small" in out and "big" in out and "modelled" in out


def test_run_profile_reuses_unless_forced_or_different(
    tiny_family_yaml: Path, tmp_path: Path
) -> None:
    wd = Workdir(tmp_path / "wd")
    points: list[tuple[str, int, int, int]] = []

    def run(**kw: object) -> object:
        return run_profile(
            "tiny", wd, config=tiny_family_yaml, settings=FAST, serving_batch_size=2,
            progress=lambda *a: points.append(a), **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    first = run(batch_sizes=(1, 2))
    assert len(points) == 4 and wd.profile.is_file()
    again = run(batch_sizes=(2, 1))
    assert len(points) == 4  # reused: nothing measured
    assert again == first
    run(batch_sizes=(1, 2), force=True)
    assert len(points) == 8
    run(batch_sizes=(1, 2, 4))  # other batch sizes: a different question, measured again
    assert len(points) == 14


def test_table_lists_every_model(tiny_family_yaml: Path, tmp_path: Path) -> None:
    from rich.console import Console

    profile = run_profile(
        "tiny", tmp_path, config=tiny_family_yaml, batch_sizes=(1, 2), serving_batch_size=3,
        settings=FAST, progress=lambda *a: None,
    )  # fmt: skip
    console = Console(width=200, record=True)
    console.print(profile_table(profile))
    text = console.export_text()
    assert "small" in text and "big" in text and "b=3" in text
