"""NvmlMeter against a fake pynvml: counter deltas, power sampling fallback, device mapping."""

from __future__ import annotations

import math
import sys
import time

import pytest

from energy.fake_nvml import FakeNvml
from hybridserve.energy import MeterError, NvmlMeter, SafeMeter, select_meter

pytestmark = pytest.mark.unit


def test_counter_delta_in_joules() -> None:
    fake = FakeNvml(counter_mj=[1_000_000, 1_000_000, 1_002_500])  # probe, start, stop
    meter = NvmlMeter(0, nvml=fake)
    assert meter.method == "total_energy_counter"
    meter.start()
    assert meter.stop() == pytest.approx(2.5)
    assert meter.source == "nvml"
    assert meter.settings()["gpu"] == "Fake GPU"


def test_counter_that_has_not_ticked_charges_power_times_time() -> None:
    fake = FakeNvml(counter_mj=[500, 500, 500], power_mw=100_000.0)  # 100 W
    meter = NvmlMeter(0, nvml=fake)
    meter.start()
    time.sleep(0.02)
    joules = meter.stop()
    assert joules > 0.0  # never a silent 0
    assert joules == pytest.approx(100.0 * 0.02, rel=0.9)


def test_power_sampling_fallback_without_counter() -> None:
    fake = FakeNvml(counter_mj=None, power_mw=200_000.0)  # 200 W, pre-Volta
    meter = NvmlMeter(0, nvml=fake, sample_interval_s=0.005)
    assert meter.method == "power_sampling"
    t0 = time.perf_counter()
    meter.start()
    time.sleep(0.1)
    joules = meter.stop()
    wall = time.perf_counter() - t0
    # constant power: the integral is 200 W × the sampled span, which lies within the wall time
    assert 200.0 * 0.09 <= joules <= 200.0 * wall + 1e-9
    assert meter.settings()["method"] == "power_sampling"


def test_visible_devices_map_to_physical_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    fake = FakeNvml(counter_mj=[0])
    NvmlMeter(0, nvml=fake)
    assert ("handle", 1) in fake.calls
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    fake = FakeNvml(counter_mj=[0])
    NvmlMeter(0, nvml=fake)
    assert ("uuid", "GPU-abc") in fake.calls


def test_init_failure_is_a_meter_error() -> None:
    with pytest.raises(MeterError, match="Driver Not Loaded"):
        NvmlMeter(0, nvml=FakeNvml(init_fails=True))
    with pytest.raises(MeterError):
        NvmlMeter(5, nvml=FakeNvml(devices=2))


def test_utilisation_reads_nvml_rates() -> None:
    meter = NvmlMeter(0, nvml=FakeNvml(counter_mj=[0], utilisation_pct=40))
    assert meter.utilisation() == pytest.approx(0.40)


def test_select_meter_uses_nvml_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml(counter_mj=[0, 0, 3000])
    monkeypatch.setitem(sys.modules, "pynvml", fake)  # the boundary: the imported module
    meter = select_meter("cuda:1")
    assert isinstance(meter, SafeMeter)
    assert meter.source == "nvml"
    assert ("handle", 1) in fake.calls
    meter.start()
    assert meter.stop() == pytest.approx(3.0)


def test_select_meter_cuda_without_nvml_is_unavailable_not_modelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(init_fails=True))
    meter = select_meter("cuda")
    assert meter.source == "unavailable"
    meter.start()
    assert math.isnan(meter.stop())
    assert "Driver Not Loaded" in meter.describe()["reason"]
