"""ModelledMeter, RaplMeter and SafeMeter: what each reports, and that failures read as NaN."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from hybridserve.energy import (
    DEFAULT_WATTS_PER_CORE,
    EnergyMeter,
    MeterError,
    ModelledMeter,
    RaplMeter,
    SafeMeter,
)
from hybridserve.errors import HybridServeError

pytestmark = pytest.mark.unit


def _busy(cpu_seconds: float) -> float:
    """Spin until this process has used ``cpu_seconds`` of CPU; return the CPU time used."""
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < cpu_seconds:
        x += 1
    return time.process_time() - t0


def test_modelled_meter_charges_cpu_time_of_a_busy_loop() -> None:
    meter = ModelledMeter(watts_per_core=10.0)
    meter.start()
    used = _busy(0.2)
    joules = meter.stop()
    # 0.2 s of CPU at 10 W per core is 2 J; the meter's own calls add microseconds
    assert joules == pytest.approx(10.0 * used, rel=0.05)
    assert joules == pytest.approx(2.0, rel=0.15)
    assert meter.source == "modelled"


def test_modelled_meter_idle_power_and_sleep() -> None:
    meter = ModelledMeter(watts_per_core=10.0, idle_watts=5.0)
    meter.start()
    time.sleep(0.1)  # no CPU: only the idle term counts
    joules = meter.stop()
    assert 5.0 * 0.1 * 0.95 <= joules <= 5.0 * 0.5
    meter = ModelledMeter(watts_per_core=10.0)
    meter.start()
    time.sleep(0.1)
    assert meter.stop() < 10.0 * 0.02  # sleeping uses (almost) no CPU time


def test_modelled_meter_with_scripted_clocks() -> None:
    cpu = iter([1.0, 3.5])
    wall = iter([10.0, 12.0])
    meter = ModelledMeter(4.0, 2.0, cpu_clock=lambda: next(cpu), wall_clock=lambda: next(wall))
    meter.start()
    assert meter.stop() == pytest.approx(4.0 * 2.5 + 2.0 * 2.0)
    assert meter.describe() == {"source": "modelled", **meter.settings()}
    assert meter.settings()["watts_per_core"] == 4.0


def test_modelled_meter_default_and_bad_settings() -> None:
    assert ModelledMeter().watts_per_core == DEFAULT_WATTS_PER_CORE == pytest.approx(4.375)
    with pytest.raises(HybridServeError, match="watts_per_core"):
        ModelledMeter(watts_per_core=-1.0)
    with pytest.raises(HybridServeError):
        ModelledMeter(watts_per_core=math.nan)


def _domain(path: Path, name: str, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    """Two packages; package 0 has core (skipped) and dram (counted) subdomains."""
    root = tmp_path / "powercap"
    pkg0 = _domain(root / "intel-rapl:0", "package-0", 100)
    _domain(pkg0 / "intel-rapl:0:0", "core", 50)
    _domain(pkg0 / "intel-rapl:0:1", "dram", 10)
    _domain(root / "intel-rapl:1", "package-1", 999_000)
    return root


def test_rapl_sums_packages_and_dram_and_undoes_wraparound(powercap: Path) -> None:
    meter = RaplMeter(powercap)
    assert sorted(d.name for d in meter.domains) == ["dram", "package-0", "package-1"]
    meter.start()
    (powercap / "intel-rapl:0" / "energy_uj").write_text("2100\n")  # +2000 µJ
    (powercap / "intel-rapl:0" / "intel-rapl:0:0" / "energy_uj").write_text("9999999\n")  # core
    (powercap / "intel-rapl:0" / "intel-rapl:0:1" / "energy_uj").write_text("510\n")  # +500
    (powercap / "intel-rapl:1" / "energy_uj").write_text("3000\n")  # wrapped: +1000 + 3000
    assert meter.stop() == pytest.approx((2000 + 500 + 4000) / 1e6)
    assert meter.source == "rapl"


def test_rapl_permission_denied_is_unavailable(
    powercap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Path.read_text

    def deny(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", deny)
    assert not RaplMeter.available(powercap)
    with pytest.raises(MeterError, match="Permission denied"):
        RaplMeter(powercap)


def test_rapl_missing_is_unavailable(tmp_path: Path) -> None:
    assert not RaplMeter.available(tmp_path / "nothing")


class _Broken(EnergyMeter):
    def __init__(self, fail_in: str, reading: float = 1.0) -> None:
        self.fail_in = fail_in
        self.reading = reading

    @property
    def source(self) -> str:
        return "rapl"

    def start(self) -> None:
        if self.fail_in == "start":
            raise OSError("counter vanished")

    def stop(self) -> float:
        if self.fail_in == "stop":
            raise OSError("counter vanished")
        return self.reading


@pytest.mark.parametrize("fail_in", ["start", "stop"])
def test_safe_meter_turns_failures_into_nan_from_unavailable(fail_in: str) -> None:
    meter = SafeMeter(_Broken(fail_in))
    assert meter.source == "rapl"
    meter.start()
    joules = meter.stop()
    assert math.isnan(joules)  # never a made-up 0
    assert meter.source == "unavailable"
    assert meter.describe()["failed_source"] == "rapl"
    assert "counter vanished" in meter.describe()["reason"]
    meter.start()  # stays unavailable, still never raises
    assert math.isnan(meter.stop())


def test_safe_meter_passes_good_readings_and_refuses_bad_ones() -> None:
    good = SafeMeter(_Broken("never", reading=2.5))
    good.start()
    assert good.stop() == 2.5
    assert good.source == "rapl"
    bad = SafeMeter(_Broken("never", reading=-1.0))
    bad.start()
    assert math.isnan(bad.stop())
    assert bad.source == "unavailable"
    never_started = SafeMeter(_Broken("never"))
    assert math.isnan(never_started.stop())
