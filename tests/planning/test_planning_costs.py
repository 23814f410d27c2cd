"""Cost tables: the bundled estimates, measured profiles, and how a cluster finds its costs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybridserve.errors import HybridServeError
from hybridserve.planning.costs import load_costs, read_table
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
