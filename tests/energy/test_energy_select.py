"""select_meter: the order of preference per device, explicit choices and bad device strings."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from hybridserve.energy import select_meter
from hybridserve.errors import HybridServeError

pytestmark = pytest.mark.unit


def _powercap(root: Path) -> Path:
    pkg = root / "intel-rapl:0"
    pkg.mkdir(parents=True)
    (pkg / "name").write_text("package-0\n")
    (pkg / "energy_uj").write_text("5\n")
    (pkg / "max_energy_range_uj").write_text("100\n")
    return root


def test_cpu_prefers_rapl_when_readable(tmp_path: Path) -> None:
    meter = select_meter("cpu", rapl_root=_powercap(tmp_path / "pc"))
    assert meter.source == "rapl"


def test_cpu_falls_back_to_modelled_without_rapl(tmp_path: Path) -> None:
    meter = select_meter("cpu", rapl_root=tmp_path / "absent")
    assert meter.source == "modelled"
    meter.start()
    assert meter.stop() >= 0.0
    assert meter.describe()["watts_per_core"] > 0


def test_cuda_prefers_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    from energy.fake_nvml import FakeNvml

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(counter_mj=[0]))
    assert select_meter("cuda:0").source == "nvml"


def test_prefer_overrides_the_order(tmp_path: Path) -> None:
    rapl = _powercap(tmp_path / "pc")
    assert select_meter("cpu", "modelled", rapl_root=rapl).source == "modelled"
    assert select_meter("cpu", "auto", rapl_root=rapl).source == "rapl"
    off = select_meter("cpu", "unavailable")
    off.start()
    assert off.source == "unavailable" and math.isnan(off.stop())


def test_prefer_an_unusable_or_unknown_source_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(HybridServeError, match="rapl"):
        select_meter("cpu", "rapl", rapl_root=tmp_path / "absent")
    with pytest.raises(HybridServeError, match="expected one of"):
        select_meter("cpu", "wattmeter")


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:1", "gpu0", ""])
def test_bad_device_string(device: str) -> None:
    with pytest.raises(HybridServeError, match="device"):
        select_meter(device)
