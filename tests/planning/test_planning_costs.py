"""Cost tables: the bundled estimates, measured profiles, and how a cluster finds its costs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from hybridserve.errors import HybridServeError
from hybridserve.planning.costs import ModelCost, load_costs, read_table
from hybridserve.planning.estimate import A5000, H100, bundled_shapes, estimate_table
from hybridserve.planning.inputs import bundled_dir, read_cluster
from planning.planning_fixtures import cpu_profile

pytestmark = pytest.mark.unit

BUNDLED = ["linear", "mlp", "cnn-small", "cnn", "vgg"]


@pytest.mark.parametrize("spec", [A5000, H100])
def test_bundled_tables_are_marked_estimates_and_are_up_to_date(spec: object) -> None:
    path = bundled_dir() / f"profile-{spec.device_type}.yaml"  # type: ignore[attr-defined]
    table = read_table(path)
    assert table.estimate is True and "No GPU measurement was made" in table.method
    assert [m.name for m in table.models] == BUNDLED
    fresh = estimate_table("fashion-mnist", bundled_shapes(), spec)  # type: ignore[arg-type]
    assert fresh.model_dump(mode="json") == yaml.safe_load(path.read_text())


def test_estimated_costs_grow_with_model_and_batch() -> None:
    costs = read_table(bundled_dir() / "profile-a5000.yaml").to_costs("a5000")
    vgg, linear = costs.model("vgg"), costs.model("linear")
    assert vgg.latency_ms(64) > vgg.latency_ms(1) > linear.latency_ms(1)
    assert vgg.memory_bytes(64) > vgg.memory_bytes(1) >= vgg.weight_bytes
    assert 0 < linear.utilisation(64) < vgg.utilisation(64) < 1
    assert vgg.throughput_rps(64) > vgg.throughput_rps(1)


def test_a_measured_profile_serves_its_device_type(tmp_path: Path) -> None:
    profile = cpu_profile(BUNDLED, family="fashion-mnist")
    profile.save(tmp_path / "profile.json")
    costs = load_costs(
        read_cluster("local-cpu"), tmp_path / "profile.json", "fashion-mnist", BUNDLED
    )
    vgg = costs["cpu"].model("vgg")
    assert costs["cpu"].estimate is False
    assert vgg.latency_ms(4) == pytest.approx(5 * (1 + 0.4))
    assert vgg.utilisation(1_000_000) == pytest.approx(0.5, rel=1e-4)  # the fitted u_max
    assert vgg.p90_ratio > 1.0
    assert vgg.energy_j_per_request(4) == pytest.approx(0.01 * 5 / 4, rel=1e-6)  # measured row


def test_measured_rows_beat_the_fits_at_the_batch_sizes_they_measured() -> None:
    profile = cpu_profile(["vgg"], family="fashion-mnist")
    (m,) = profile.models
    slow = replace(m.rows[-1], latency_ms_median=40.0, utilisation=0.9, memory_bytes=5000)
    cost = ModelCost.from_profile(replace(m, rows=(*m.rows[:-1], slow)))
    b = slow.batch_size  # 16: the fit says 1 + 1.6 ms, the row 40 ms (a CPU's cache, say)
    assert cost.latency_ms(b) == 40.0 and cost.throughput_rps(b) == pytest.approx(400.0)
    assert cost.utilisation(b) == 0.9 and cost.memory_bytes(b) == 5000
    assert cost.latency_ms(8) == pytest.approx(1.0 + 0.8)  # not measured: the fit


def test_missing_or_mismatched_profiles_are_user_errors(tmp_path: Path) -> None:
    local = read_cluster("local-cpu")
    with pytest.raises(HybridServeError, match="hybridserve profile"):
        load_costs(local, tmp_path / "profile.json", "fashion-mnist", BUNDLED)
    cpu_profile(BUNDLED, family="other").save(tmp_path / "profile.json")
    with pytest.raises(HybridServeError, match="family 'other'"):
        load_costs(local, tmp_path / "profile.json", "fashion-mnist", BUNDLED)
    cpu_profile(["linear"], family="fashion-mnist").save(tmp_path / "profile.json")
    with pytest.raises(HybridServeError, match="no costs for model 'mlp'"):
        load_costs(local, tmp_path / "profile.json", "fashion-mnist", BUNDLED)


def test_a_json_table_is_a_measured_profile_and_the_h200_one_is_bundled() -> None:
    cluster = read_cluster("1x-h200")
    costs = load_costs(cluster, None, "fashion-mnist", BUNDLED)["h200"]
    assert costs.estimate is False and costs.source.endswith("profile-h200.json")
    vgg, linear = costs.model("vgg"), costs.model("linear")
    # measured rows, not fits: the H200's batch of 64 on the giant took 1.23 ms
    assert vgg.latency_ms(64) == pytest.approx(1.232, abs=0.01)
    assert vgg.latency_ms(64) > linear.latency_ms(64)
    assert 0 < vgg.utilisation(64) < 0.5  # launch-bound: NVML saw the GPU mostly idle


def test_a_json_table_of_another_family_is_refused(tmp_path: Path) -> None:
    profile = cpu_profile(BUNDLED, family="other")
    profile.save(tmp_path / "p.json")
    (tmp_path / "c.yaml").write_text(
        "name: c\nnodes:\n  - name: n\n    devices:\n      - {type: x, memory_bytes: 1GiB}\n"
        "profiles: {x: p.json}\n"
    )
    with pytest.raises(HybridServeError, match="family 'other'"):
        load_costs(read_cluster(str(tmp_path / "c.yaml")), None, "fashion-mnist", BUNDLED)
