"""Prices per request on a cluster's device type (what ``tune --cluster`` charges)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridserve.errors import HybridServeError
from hybridserve.planning.costs import load_costs
from hybridserve.planning.inputs import read_cluster
from hybridserve.planning.pricing import request_prices

pytestmark = pytest.mark.unit

CHAIN = ["linear", "mlp", "cnn-small", "cnn", "vgg"]


def test_prices_are_the_fewest_device_seconds_times_dynamic_power() -> None:
    cluster = read_cluster("4x-a5000")
    costs = load_costs(cluster, None, "fashion-mnist", CHAIN)["a5000"]
    prices = request_prices(cluster, "fashion-mnist", CHAIN, batch_sizes=(1, 16, 256))
    assert prices.estimate and prices.device_type == "a5000"
    for name, p in prices.models.items():
        cost = costs.model(name)
        per = {b: cost.utilisation(b) / cost.throughput_rps(b) for b in (1, 16, 256)}
        assert p.batch_size == min(per, key=per.__getitem__)
        assert p.device_s == pytest.approx(per[p.batch_size])
        assert p.energy_j == pytest.approx((230.0 - 25.0) * p.device_s)
        assert p.latency_ms == pytest.approx(cost.latency_ms(p.batch_size))
    # on a GPU the giant is costly per request, the linear model nearly free
    assert prices.models["vgg"].energy_j > 100 * prices.models["linear"].energy_j


def _cluster(tmp_path: Path, devices: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\nnodes:\n  - name: n\n    devices:\n"
        + devices
        + "profiles: {a5000: profile-a5000.yaml, h100: profile-h100.yaml}\n"
    )
    return path


def test_a_cluster_of_two_device_types_is_refused(tmp_path: Path) -> None:
    path = _cluster(
        tmp_path,
        "      - {type: a5000, count: 1, memory_bytes: 23GiB, power_w: 230}\n"
        "      - {type: h100, count: 1, memory_bytes: 79GiB, power_w: 700}\n",
    )
    with pytest.raises(HybridServeError, match="mixes device types"):
        request_prices(read_cluster(path), "fashion-mnist", CHAIN)


def test_no_power_and_no_measured_energy_names_the_missing_field(tmp_path: Path) -> None:
    path = _cluster(tmp_path, "      - {type: a5000, count: 2, memory_bytes: 23GiB}\n")
    with pytest.raises(HybridServeError, match="power_w"):
        request_prices(read_cluster(path), "fashion-mnist", CHAIN)
