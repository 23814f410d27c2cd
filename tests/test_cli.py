"""The ``hybridserve`` command end to end: ``calibrate`` and how bad input is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hybridserve.cli import main
from hybridserve.models.family import bundled_config_path

pytestmark = pytest.mark.integration

MODEL_FIELDS = {
    "name",
    "params",
    "macs",
    "weight_bytes",
    "accuracy_val",
    "accuracy_test",
    "temperature",
    "ece_before",
    "ece_after",
    "nll_before",
    "nll_after",
    "calibrator",
}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point in-process; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as ex:
        code = int(ex.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_calibrate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "calibrate" in out


def test_calibrate_writes_report_and_plot_and_reuses_logits(
    tiny_family_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wd = tmp_path / "out"
    args = ["calibrate", "--config", str(tiny_family_yaml), "--workdir", str(wd)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "small" in out and "big" in out and "→" in out
    body = json.loads((wd / "calibration.json").read_text())
    assert body["format"] == "hybridserve/calibration" and body["version"] == 1
    assert body["family"] == "tiny" and body["calibrator"] == "temperature"
    assert [m["name"] for m in body["models"]] == ["small", "big"]
    for m in body["models"]:
        assert set(m) >= MODEL_FIELDS
        assert m["calibrator"]["kind"] == "temperature"
    assert (wd / "reliability.png").read_bytes()[:4] == b"\x89PNG"

    caches = sorted((wd / "logits").glob("*.npz"))
    assert [p.name for p in caches] == ["tiny-test.npz", "tiny-val.npz"]
    mtimes = [p.stat().st_mtime_ns for p in caches]
    code, _, err = run_cli([*args, "--calibrator", "vector"], capsys)
    assert code == 0, err
    assert [p.stat().st_mtime_ns for p in caches] == mtimes
    again = json.loads((wd / "calibration.json").read_text())
    assert again["calibrator"] == "vector"
    assert [m["accuracy_val"] for m in again["models"]] == [
        m["accuracy_val"] for m in body["models"]
    ]


def _unknown_field(path: Path) -> list[str]:
    config = yaml.safe_load(path.read_text())
    config["models"][0]["colour"] = "red"
    path.write_text(yaml.safe_dump(config))
    return ["models.0.colour: unknown field"]


def _missing_weights(path: Path) -> list[str]:
    (path.parent / "big.safetensors").unlink()
    return ["weights file not found", str(path.parent / "big.safetensors")]


def _npz_wrong_shape(path: Path) -> list[str]:
    np.savez(path.parent / "test.npz", x=np.zeros((5, 2, 3)), y=np.zeros(5, dtype=int))
    return ["test.npz", "'x' rows have shape (2, 3)"]


def _missing_config(path: Path) -> list[str]:
    path.unlink()
    return ["family config not found", str(path)]


@pytest.mark.parametrize(
    "breaker", [_unknown_field, _missing_weights, _npz_wrong_shape, _missing_config]
)
def test_bad_family_gives_exit_2_and_one_line(
    tiny_family_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], breaker: object
) -> None:
    needles = breaker(tiny_family_yaml)  # type: ignore[operator]
    args = ["calibrate", "--config", str(tiny_family_yaml), "--workdir", str(tmp_path / "w")]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert_one_line_error(err, *needles)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--calibrator", "platt"], "unknown calibrator 'platt'"),
        (["--family", "fashion-mnist"], "either --family or --config"),
    ],
)
def test_bad_options_give_exit_2(
    tiny_family_yaml: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    args = ["calibrate", "--config", str(tiny_family_yaml), "--workdir", str(tmp_path), *extra]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert_one_line_error(err, needle)
    assert not (tmp_path / "calibration.json").exists()


def test_subprocess_error_has_no_traceback(
    tiny_family_yaml: Path, tmp_path: Path, tiny_family_env: dict[str, str]
) -> None:
    needles = _unknown_field(tiny_family_yaml)
    proc = subprocess.run(
        [sys.executable, "-m", "hybridserve.cli", "calibrate", "--config", str(tiny_family_yaml)],
        cwd=tmp_path,
        env=tiny_family_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, *needles)
    assert not (tmp_path / "hybridserve-out" / "calibration.json").exists()


def _bundled_weights_missing() -> list[str]:
    folder = bundled_config_path("fashion-mnist").parent
    config = yaml.safe_load((folder / "family.yaml").read_text())
    return [m["weights"] for m in config["models"] if not (folder / m["weights"]).is_file()]


@pytest.mark.skipif(bool(_bundled_weights_missing()), reason="bundled weights not trained yet")
def test_calibrate_bundled_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["calibrate", "--workdir", str(tmp_path)], capsys)
    print(out)  # the table, for the record (pytest -s)
    assert code == 0, err
    body = json.loads((tmp_path / "calibration.json").read_text())
    assert [m["name"] for m in body["models"]] == ["linear", "mlp", "cnn-small", "cnn", "vgg"]
    for m in body["models"]:
        assert m["n_val"] >= 5000 and m["n_test"] >= 5000
        assert m["ece_after"] <= 0.02, m
        if m["ece_before"] > 0.02:
            assert m["ece_after"] < m["ece_before"], m
    accuracies = [m["accuracy_test"] for m in body["models"]]
    assert accuracies[-1] == max(accuracies)  # the giant is the most accurate


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--rounds", "0"], "--rounds must be ≥ 1"),
        (["--passes", "0"], "--passes must be ≥ 1"),
        (["--concurrency", "0"], "--concurrency must be ≥ 1"),
        (["--rate", "-1"], "--rate must be positive"),
    ],
)
def test_bench_refuses_bad_load_settings_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    code, _, err = run_cli(["bench", "--workdir", str(tmp_path), *extra], capsys)
    assert code == 2
    assert_one_line_error(err, needle)
    assert not (tmp_path / "report.json").exists()
