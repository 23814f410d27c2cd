"""profile_family on a tiny family: every field, energy bookkeeping, meter failure, devices."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hybridserve.data.fashion_mnist import Split
from hybridserve.devices import parse_device, resolve_device
from hybridserve.energy import EnergyMeter, SafeMeter
from hybridserve.errors import HybridServeError
from hybridserve.models import CallableModel, Family, ModelInfo
from hybridserve.profiling import Profile
from hybridserve.profiling.profiler import ProfilerSettings, profile_family

pytestmark = pytest.mark.unit

FAST = ProfilerSettings(
    time_budget_s=0.01, rounds=2, warmup_s=0.0, min_warmup=1, min_repeats=3, max_repeats=4
)


class ScriptedMeter(EnergyMeter):
    """Reports ``joules`` for every interval; counts its intervals."""

    def __init__(self, joules: float = 1.0, fail: bool = False) -> None:
        self.joules = joules
        self.fail = fail
        self.intervals = 0

    @property
    def source(self) -> str:
        return "rapl"

    def start(self) -> None:
        self.intervals += 1

    def stop(self) -> float:
        if self.fail:
            raise OSError("counter gone")
        return self.joules


def test_every_field_for_every_model(tiny_family_yaml: Path) -> None:
    meter = ScriptedMeter(joules=2.0)
    seen: list[tuple[str, int, int, int]] = []
    profile = profile_family(
        "tiny",
        "cpu",
        (16, 1, 4, 4),
        config=tiny_family_yaml,
        serving_batch_size=4,
        settings=FAST,
        meter=meter,
        progress=lambda *a: seen.append(a),
    )
    assert profile.family == "tiny" and profile.names == ("small", "big")
    assert profile.device.type == "cpu" and profile.device.cores >= 1
    assert profile.meter["source"] == "rapl"
    assert "torch.profiler" in profile.memory_method
    assert profile.settings["device"] == "cpu" and profile.settings["batch_sizes"] == [1, 4, 16]
    assert meter.intervals == 2 * 2 * 3  # rounds × models × batch sizes
    assert [a[2:] for a in seen] == [(i, 12) for i in range(1, 13)]
    # round one in order; round two visits the same six points again, shuffled
    assert [a[:2] for a in seen[:6]] == [
        ("small", 1), ("small", 4), ("small", 16), ("big", 1), ("big", 4), ("big", 16),
    ]  # fmt: skip
    assert sorted(a[:2] for a in seen[6:]) == sorted(a[:2] for a in seen[:6])
    for m in profile.models:
        assert m.batch_sizes == (1, 4, 16)
        assert m.params > 0 and m.weight_bytes > 0
        for r in m.rows:
            assert r.repeats == 4  # two blocks of two calls
            assert 0 < r.latency_ms_median <= r.latency_ms_p90
            assert r.throughput_rps == pytest.approx(1000.0 * r.batch_size / r.latency_ms_median)
            assert r.memory_bytes >= m.weight_bytes
            assert 0.0 <= r.utilisation <= 1.0
            # the meter's joules (2 J per block, two blocks) are spread over every request
            assert r.energy_j_per_request == pytest.approx(2 * 2.0 / (r.repeats * r.batch_size))
        assert m.energy_j_per_request() == m.row(4).energy_j_per_request
        assert m.fits.latency_ms.slope >= 0 and m.fits.utilisation.beta >= 0
        assert m.latency_ms(4) > 0
    # memory grows with the batch: activations are measured, not assumed
    big = profile.model("big")
    assert big.row(16).memory_bytes > big.row(1).memory_bytes


def test_a_failing_meter_never_fails_profiling(tiny_family_yaml: Path, tmp_path: Path) -> None:
    profile = profile_family(
        "tiny", config=tiny_family_yaml, batch_sizes=(1, 2), serving_batch_size=2,
        settings=FAST, meter=SafeMeter(ScriptedMeter(fail=True)),
    )  # fmt: skip
    assert profile.energy_source == "unavailable"
    assert profile.meter["failed_source"] == "rapl"
    assert all(math.isnan(r.energy_j_per_request) for m in profile.models for r in m.rows)
    assert all(r.latency_ms_median > 0 for m in profile.models for r in m.rows)
    profile.save(tmp_path / "profile.json")  # NaN is stored as null, not refused
    assert math.isnan(Profile.load(tmp_path / "profile.json").models[0].energy_j_per_request())


def test_modelled_meter_is_the_cpu_default_without_rapl(tiny_family_yaml: Path) -> None:
    if Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
        pytest.skip("this machine has RAPL; the modelled fallback is covered in tests/energy")
    profile = profile_family(
        "tiny", config=tiny_family_yaml, batch_sizes=(1, 8), serving_batch_size=8, settings=FAST
    )
    assert profile.energy_source == "modelled"
    small, big = profile.model("small"), profile.model("big")
    assert small.energy_j_per_request() > 0 and big.energy_j_per_request() > 0


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", "CUDA7"])
def test_bad_device_strings(device: str) -> None:
    with pytest.raises(HybridServeError, match="--device"):
        parse_device(device)


def test_absent_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1").torch_device == "cuda:1"
    assert resolve_device("cuda").torch_device == "cuda:0"
    with pytest.raises(HybridServeError, match=r"cuda:7.*2 CUDA device"):
        resolve_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HybridServeError, match="no CUDA device"):
        resolve_device("cuda:0")


def test_bad_settings_and_batch_sizes(tiny_family_yaml: Path) -> None:
    with pytest.raises(HybridServeError, match="min_repeats"):
        ProfilerSettings(min_repeats=0)
    with pytest.raises(HybridServeError, match="batch-sizes"):
        profile_family("tiny", config=tiny_family_yaml, batch_sizes=(0, 2), settings=FAST)


class _FakeEvent:
    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self) -> None:
        import time

        self.t = time.perf_counter()

    def elapsed_time(self, other: _FakeEvent) -> float:
        return (other.t - self.t) * 1000.0


def _cuda_family() -> Family:
    x = np.zeros((32, 3), dtype=np.float32)
    split = Split("val", x, np.zeros(32, dtype=np.int64), np.arange(32, dtype=np.int64))

    def model(name: str) -> CallableModel:
        return CallableModel(
            name, lambda b: np.zeros((len(b), 2)), info=ModelInfo(10, 10, 40), device="cuda:0"
        )

    return Family("fake", (model("a"), model("b")), ("x", "y"), (3,), data={"val": lambda: split})


def test_cuda_path_with_fakes_at_the_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda and pynvml replaced by fakes: the GPU path runs end to end without a GPU."""
    from energy.fake_nvml import FakeNvml

    calls: list[str] = []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(counter_mj=[250 * i for i in range(100)]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 4096)
    props = SimpleNamespace(name="Fake GPU", multi_processor_count=80, total_memory=2**34)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    profile = profile_family(_cuda_family(), "cuda:0", (1, 2), serving_batch_size=2, settings=FAST)
    assert profile.device.type == "cuda" and profile.device.name == "Fake GPU"
    assert profile.energy_source == "nvml"
    assert profile.memory_method.startswith("torch.cuda.max_memory_allocated")
    assert "NVML" in profile.settings["utilisation_method"]
    assert "sync" in calls
    for m in profile.models:
        for r in m.rows:
            assert r.memory_bytes == 4096
            assert r.utilisation == pytest.approx(0.73)  # the fake NVML utilisation rate
            assert math.isfinite(r.energy_j_per_request) and r.energy_j_per_request > 0
    first = profile.models[0].rows[0]
    # every counter read advances 250 mJ: two blocks of 250 mJ each at b=1
    assert first.energy_j_per_request == pytest.approx(2 * 0.25 / first.repeats)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_real_cuda_device(tiny_family_yaml: Path) -> None:
    profile = profile_family(
        "tiny", "cuda", (1, 8), config=tiny_family_yaml, serving_batch_size=8, settings=FAST
    )
    assert profile.device.type == "cuda"
    assert all(r.memory_bytes > 0 for m in profile.models for r in m.rows)


def test_foreign_cpu_share_counts_only_other_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    from hybridserve.profiling import probes

    clock = {"wall": 100.0, "cpu": 10.0, "busy": 1000.0}
    monkeypatch.setattr(probes.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(probes.time, "process_time", lambda: clock["cpu"])
    monkeypatch.setattr(
        psutil,
        "cpu_times",
        lambda: SimpleNamespace(user=clock["busy"], nice=0.0, system=0.0, idle=5.0, guest=9e9),
    )
    probe = probes.ForeignCpu(cores=2)
    # 10 s of wall on 2 cores; this process used 4 s of CPU, the machine 9 s: 5 s were others'
    clock.update(wall=110.0, cpu=14.0, busy=1009.0)
    assert probe.share() == pytest.approx(5.0 / 20.0)
