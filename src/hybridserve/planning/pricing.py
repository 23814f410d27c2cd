"""What one request costs at each model on a cluster's device type, for pricing a policy.

The tuner picks the cheapest thresholds by each model's cost per request. Which cascade is
cheapest depends on the hardware: on a CPU the linear model costs a small fraction of the giant,
on a GPU its batch is nearly all fixed overhead, so a policy tuned on one is not the best on the
other.
``request_prices`` gives, per model, the cost the planner itself would charge: device-seconds
per request at the batch size where they are fewest (utilisation ÷ throughput, the share of a
device one request keeps busy), and energy as those device-seconds times the device's dynamic
power (``power_w − idle_power_w``, the planner's power model), or the profile's measured
energy per request where the cluster gives no power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybridserve.errors import HybridServeError
from hybridserve.planning.costs import load_costs
from hybridserve.planning.inputs import Cluster, PlanOptions


@dataclass(frozen=True)
class RequestPrice:
    """One model's cost per request on a device type, at its cheapest batch size."""

    model: str
    batch_size: int
    device_s: float
    energy_j: float
    #: Median latency of that batch (the time a request spends at the model).
    latency_ms: float


@dataclass(frozen=True)
class Prices:
    """Per-model prices on one device type of a cluster, and how they were derived."""

    cluster: str
    device_type: str
    source: str
    estimate: bool
    basis: str
    models: dict[str, RequestPrice]


def request_prices(
    cluster: Cluster,
    family: str,
    models: Sequence[str],
    profile_path: Path | None = None,
    batch_sizes: Sequence[int] = PlanOptions().batch_sizes,
) -> Prices:
    """Prices of ``models`` on the (single) device type of ``cluster``.

    ``profile_path``: the workdir's ``profile.json``, for clusters whose costs are measured
    there (``local-cpu``).
    """
    if len(cluster.types) != 1:
        raise HybridServeError(
            f"cluster {cluster.name!r} mixes device types {list(cluster.types)}: a policy is "
            "priced on one; pass a cluster of one device type"
        )
    (device_type,) = cluster.types
    costs = load_costs(cluster, profile_path, family, models)[device_type]
    device = next(d for d in cluster.devices if d.type == device_type)
    dynamic_w = None
    if device.power_w is not None:
        dynamic_w = float(device.power_w) - float(device.idle_power_w or 0.0)
    prices: dict[str, RequestPrice] = {}
    for name in models:
        cost = costs.model(name)
        b = min(batch_sizes, key=lambda s: cost.utilisation(s) / cost.throughput_rps(s))
        device_s = cost.utilisation(b) / cost.throughput_rps(b)
        if dynamic_w is not None:
            energy = dynamic_w * device_s
        else:
            energy = cost.energy_j_per_request(b)
            if not math.isfinite(energy):
                raise HybridServeError(
                    f"cluster {cluster.name!r}: devices of type {device_type!r} give no power_w "
                    f"and {costs.source} measured no energy for {name!r} at batch {b}: add "
                    "power_w to the cluster to price requests"
                )
        prices[name] = RequestPrice(name, int(b), device_s, energy, cost.latency_ms(b))
    basis = (
        f"device-seconds per request × {dynamic_w:g} W dynamic power"
        if dynamic_w is not None
        else "measured energy per request"
    )
    return Prices(cluster.name, device_type, costs.source, costs.estimate, basis, prices)
