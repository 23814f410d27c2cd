"""Cluster YAML, bundled clusters, policy reach fractions and options."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from hybridserve.errors import HybridServeError
from hybridserve.planning.inputs import (
    PlanOptions,
    bundled_clusters,
    make_reach,
    parse_bytes,
    read_cluster,
    read_policy_reach,
)
from planning.planning_fixtures import write_policy

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [(1000, 1000), ("24GiB", 24 * 2**30), ("80 GB", 80 * 10**9), ("1.5KiB", 1536), ("7", 7)],
)
def test_sizes(text: int | str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "-5", "0", "12 parsecs"])
def test_bad_sizes_name_the_field(text: str) -> None:
    with pytest.raises(HybridServeError, match="memory_bytes"):
        parse_bytes(text)


def test_bundled_clusters_expand_to_unique_devices() -> None:
    assert {"local-cpu", "4x-a5000", "64x-h100", "1x-h200"} <= set(bundled_clusters())
    local = read_cluster("local-cpu")
    (cpu,) = local.devices
    assert (cpu.id, cpu.device, cpu.type) == ("local/cpu", "cpu", "cpu")
    assert cpu.memory_bytes == psutil.virtual_memory().total
    a5000 = read_cluster("4x-a5000")
    assert [d.device for d in a5000.devices] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert all(d.memory_bytes == 23 * 2**30 and d.power_w == 230 for d in a5000.devices)
    h100 = read_cluster("64x-h100")
    assert len(h100.devices) == 64 and len({d.id for d in h100.devices}) == 64
    assert h100.nodes == tuple(f"node{k}" for k in range(8))
    assert {d.device for d in h100.devices if d.node == "node3"} == {f"cuda:{i}" for i in range(8)}


def test_cluster_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\nnodes:\n  - name: n\n    devices: [{type: gpu, memory_bytes: 1GB, colour: red}]\n"
    )
    with pytest.raises(HybridServeError, match=r"c.yaml: nodes.0.devices.0.colour: unknown field"):
        read_cluster(path)
    with pytest.raises(HybridServeError, match=r"bundled: .*local-cpu"):
        read_cluster("no-such-cluster")
    two = "[{type: gpu, memory_bytes: 1GB, count: 2, device: 'cuda:0'}]"
    path.write_text(f"name: c\nnodes:\n  - name: n\n    devices: {two}\n")
    with pytest.raises(HybridServeError, match="'device' needs count 1"):
        read_cluster(path)


def test_policy_reach_is_read_from_the_summary(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "policy-ap.json", ["a", "b", "c"], {"a": 1.0, "c": 0.2})
    reach = read_policy_reach(path)
    assert reach.chain == ("a", "b", "c")
    assert dict(reach.fraction) == {"a": 1.0, "b": 0.0, "c": 0.2}


def test_bad_policies_are_user_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "hybridserve/policy", "version": 1, "chain": ["a"]}))
    with pytest.raises(HybridServeError, match=r"p\.json: policy: missing field"):
        read_policy_reach(path)  # parsed by CascadePolicy, which names what is missing
    write_policy(path, ["a", "b"], {})
    body = json.loads(path.read_text())
    del body["summary"]["val"]
    path.write_text(json.dumps(body))
    with pytest.raises(HybridServeError, match=r"p\.json: policy\.summary\.val\.reach_fraction"):
        read_policy_reach(path)
    body["summary"] = {"val": {"reach_fraction": {"a": "most"}}}
    path.write_text(json.dumps(body))
    with pytest.raises(HybridServeError, match=r"reach_fraction\.a: expected a finite number"):
        read_policy_reach(path)
    with pytest.raises(HybridServeError, match=r"must lie in \[0, 1\]"):
        make_reach("f", ("a",), {"a": 1.5})
    with pytest.raises(HybridServeError, match="not in the chain"):
        make_reach("f", ("a",), {"a": 1.0, "zz": 0.5})
    with pytest.raises(HybridServeError, match="no model is reached"):
        make_reach("f", ("a",), {"a": 0.0})


def test_options_sort_batch_sizes_and_refuse_nonsense() -> None:
    assert PlanOptions(batch_sizes=(16, 1, 4, 4)).batch_sizes == (1, 4, 16)
    with pytest.raises(ValueError, match="batch_sizes"):
        PlanOptions(batch_sizes=(0,))
