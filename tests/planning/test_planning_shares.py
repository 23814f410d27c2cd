"""Time shares for fixed copies: the share LP (``rebalance``) and idle copies (``trim``)."""

from __future__ import annotations

import pytest

from hybridserve.planning.layout import Layout
from hybridserve.planning.shares import rebalance, trim
from planning.planning_fixtures import Spec, instance

pytestmark = pytest.mark.unit

# batch of 4: a takes 2 ms (2000 rps flat out), b 4 ms (1000 rps); both keep a device busy
SPECS = [Spec("a", a=2.0, c=0.0, u=1.0, m0=10), Spec("b", a=4.0, c=0.0, u=1.0, m0=10)]


def _layout(devices: int = 1, reach_b: float = 0.5) -> Layout:
    inst = instance(
        SPECS, [("n0", 100)] * devices, reach={"a": 1.0, "b": reach_b}, batch_sizes=(4,)
    )
    return Layout(inst)


def _config(layout: Layout, model: str) -> int:
    (c,) = layout.inst.configs_of(model)
    return c.index


def test_rebalance_divides_a_device_by_the_traffic_each_model_gets() -> None:
    layout = _layout()
    layout.add(_config(layout, "a"), (0,), 1.0)  # a alone fills the device: λ = 0 for b
    layout.add(_config(layout, "b"), (0,), 0.0)
    assert layout.lam() == 0.0
    rebalance(layout)
    lam = 1.0 / (1.0 / 2000 + 0.5 / 1000)  # one device-second per second
    assert layout.lam() == pytest.approx(lam, rel=1e-6)
    shares = {layout.inst.configs[r.config].model: r.share for r in layout.replicas}
    assert shares["a"] == pytest.approx(lam / 2000, rel=1e-6)
    assert shares["b"] == pytest.approx(0.5 * lam / 1000, rel=1e-6)
    assert layout.feasible()


def test_rebalance_leaves_models_off_the_bottleneck_just_their_traffic() -> None:
    layout = _layout(devices=2)
    layout.add(_config(layout, "a"), (0,), 1.0)
    layout.add(_config(layout, "b"), (1,), 1.0)  # b capped at 1000 rps: λ = 2000 with b at 0.5
    rebalance(layout)
    assert layout.lam() == pytest.approx(2000.0, rel=1e-6)
    share = {layout.inst.configs[r.config].model: r.share for r in layout.replicas}
    assert share["a"] == pytest.approx(1.0) and share["b"] == pytest.approx(1.0)
    rebalance(layout, target_rps=1000.0)  # the energy objective: just what the target needs
    assert layout.lam() >= 1000.0
    assert share["a"] * 0.5 == pytest.approx(
        next(r.share for r in layout.replicas if layout.inst.configs[r.config].model == "a"),
        rel=1e-5,
    )


def test_trim_merges_copies_whose_shares_fit_in_fewer_and_drops_idle_ones() -> None:
    layout = _layout(devices=2)
    a, b = _config(layout, "a"), _config(layout, "b")
    for share in (0.3, 0.3, 0.2):
        layout.add(a, (0,), share)
    layout.add(b, (1,), 0.5)
    layout.add(b, (1,), 0.0)
    capacity = layout.capacity()
    trim(layout)
    assert layout.capacity() == pytest.approx(capacity)
    kept = sorted((layout.inst.configs[r.config].model, r.share) for r in layout.replicas)
    assert kept == [("a", pytest.approx(0.8)), ("b", 0.5)]
    assert layout.free_mem[0] == pytest.approx(90.0)  # two copies' memory given back
