"""bench_http's machinery: the lean client against a real server, and what it reports."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
import pytest
import uvicorn

from hybridserve.bench.httpload import (
    LoadStats,
    free_port,
    label_of,
    make_request,
    measure,
)
from hybridserve.server import ServerSettings, create_app
from runtime.cascade_fixtures import FAMILY, make_inputs
from server.app_harness import make_engine

pytestmark = pytest.mark.integration

FIELDS = {
    "requests_per_s",
    "ok",
    "errors",
    "wrong_labels",
    "error_statuses",
    "p50_ms",
    "p99_ms",
    "server_cpu_ms_per_request",
    "loop_cpu_ms_per_request",
}


class InProcess:
    """The tiny cascade under uvicorn in a thread; its CPU is this process's."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._me = psutil.Process()

    def cpu_s(self) -> float:
        t = self._me.cpu_times()
        return float(t.user + t.system)


@contextmanager
def tiny_server() -> Iterator[InProcess]:
    port = free_port()
    app = create_app(make_engine(), ServerSettings(start_in_background=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.02)
        assert server.started
        yield InProcess(port)
    finally:
        server.should_exit = True
        thread.join(10)


def _labels(port: int, x: np.ndarray) -> np.ndarray:
    """What the server answers for each input, asked one by one over plain httpx."""
    url = f"http://127.0.0.1:{port}/v1/predict"
    return np.array(
        [httpx.post(url, json={"inputs": [xi.tolist()]}).json()["answers"][0]["label"] for xi in x]
    )


@pytest.mark.parametrize("kind", ["json", "v2json", "v2bin", "v2bin-f32", "npy"])
def test_client_loads_a_real_server_and_checks_every_answer(kind: str) -> None:
    x = make_inputs(12)
    with tiny_server() as server:
        labels = _labels(server.port, x)
        requests = [make_request(kind, x[i : i + 1], FAMILY) for i in range(len(x))]
        out = measure(server, requests, labels, kind, clients=4, warmup_s=0.2, duration_s=0.8)
    assert out.keys() >= FIELDS
    assert out["errors"] == 0 and out["error_statuses"] == {}
    assert out["ok"] > 0
    # the binary bodies reach the same answers as the JSON asked above
    assert out["wrong_labels"] == 0
    assert out["p50_ms"] <= out["p99_ms"]
    assert out["server_cpu_ms_per_request"] > 0


def test_wrong_labels_are_counted_apart_from_errors() -> None:
    x = make_inputs(6)
    with tiny_server() as server:
        labels = _labels(server.port, x)
        requests = [make_request("json", x[i : i + 1], FAMILY) for i in range(len(x))]
        out = measure(
            server, requests, (labels + 1) % 3, "json", clients=2, warmup_s=0.1, duration_s=0.5
        )
    assert out["errors"] == 0
    assert out["wrong_labels"] == out["ok"] > 0


def test_refusals_count_as_errors_by_status() -> None:
    x = make_inputs(4)
    with tiny_server() as server:
        # a 4x4 model sent 2x2 inputs: every request is answered 422
        requests = [make_request("json", x[i : i + 1, :2, :2], FAMILY) for i in range(len(x))]
        out = measure(
            server, requests, np.zeros(4), "json", clients=2, warmup_s=0.1, duration_s=0.5
        )
    assert out["ok"] == 0
    assert out["errors"] > 0
    assert set(out["error_statuses"]) == {"422"}
    assert out["p50_ms"] is None and out["server_cpu_ms_per_request"] is None


def test_a_dead_port_is_errors_not_a_crash() -> None:
    class Nobody:
        port = free_port()

        def cpu_s(self) -> float:
            return 0.0

    x = make_inputs(2)
    requests = [make_request("npy", x[i : i + 1], FAMILY) for i in range(2)]
    out = measure(Nobody(), requests, np.zeros(2), "npy", clients=2, warmup_s=0.0, duration_s=0.3)
    assert out["ok"] == 0
    assert out["errors"] > 0
    assert "ConnectionRefusedError" in out["error_statuses"]


def test_label_readers_and_request_framing() -> None:
    x = np.zeros((1, 2, 2), dtype=np.uint8)
    head, _, body = make_request("v2bin", x, "fam").partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v2/models/fam/infer HTTP/1.1")
    assert f"Content-Length: {len(body)}".encode() in head
    assert make_request("lit", x).startswith(b"POST /predict ")
    assert label_of("lit")(b'{"label": 3}') == 3
    assert label_of("json")(b'{"answers": [{"label": 2}]}') == 2
    # a v2 binary request carries the images' own datatype and asks for binary outputs
    length = int(head.split(b"Inference-Header-Content-Length: ")[1].split(b"\r\n")[0])
    header = orjson.loads(body[:length])
    assert len(body) == length + x.size  # one byte a pixel
    assert header["inputs"][0]["datatype"] == "UINT8"
    assert header["parameters"] == {"binary_data_output": True}
    assert b'"datatype":"FP32"' in make_request("v2bin-f32", x, "fam")
    outputs = [
        {"name": "label", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}},
        {"name": "model", "datatype": "BYTES", "shape": [1], "data": ["m"]},
    ]
    reply_head = orjson.dumps({"outputs": outputs})
    reply = reply_head + (7).to_bytes(8, "little", signed=True)
    assert label_of("v2bin")(reply, len(reply_head)) == 7
    assert label_of("v2bin")(b'{"answers": [{"label": 4}]}') == 4  # a JSON answer
    with pytest.raises(ValueError, match="unknown body kind"):
        make_request("xml", x)


def test_stats_summary_without_answers() -> None:
    stats: dict[str, Any] = LoadStats(duration_s=1.0).summary()
    assert stats["requests_per_s"] == 0.0
    assert stats["p99_ms"] is None


def _bench_module() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_http.py"
    spec = importlib.util.spec_from_file_location("bench_http", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_takes_medians_over_rounds_and_ratios_against_litserve() -> None:
    bench = _bench_module()

    def row(system: str, kind: str, rps: float, errors: int = 0) -> dict[str, Any]:
        return {
            "system": system,
            "kind": kind,
            "requests_per_s": rps,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "server_cpu_ms_per_request": None,
            "errors": errors,
            "wrong_labels": 0,
            "ok": int(rps),
        }

    rows = [
        row("litserve", "lit", 100.0),
        row("giant-only", "json", 150.0, errors=1),
        row("litserve", "lit", 200.0),
        row("giant-only", "json", 250.0),
        row("litserve", "lit", 150.0),
        row("giant-only", "json", 300.0),
    ]
    table = bench.aggregate(rows)
    assert [(r["system"], r["kind"]) for r in table] == [
        ("litserve", "lit"),
        ("giant-only", "json"),
    ]
    assert table[0]["requests_per_s"] == 150.0 and table[1]["requests_per_s"] == 250.0
    assert table[1]["errors"] == 1 and table[1]["rounds"] == 3
    assert table[1]["server_cpu_ms_per_request"] is None
    assert bench.ratios(table) == {"giant-only/json vs litserve": 250.0 / 150.0}
    assert bench.ratios(table[1:]) == {}  # no LitServe row, no ratio


def test_formats_are_compared_with_json_inside_each_round() -> None:
    bench = _bench_module()

    def row(r: int, kind: str, rps: float, cpu: float) -> dict[str, Any]:
        return {
            "round": r,
            "system": "cascade-ap",
            "kind": kind,
            "requests_per_s": rps,
            "server_cpu_ms_per_request": cpu,
            "loop_cpu_ms_per_request": None,
        }

    # the machine was twice as fast in round 1: the per-round ratios do not see it
    rows = [row(0, "json", 100.0, 1.0), row(0, "npy", 120.0, 0.8)]
    rows += [row(1, "json", 200.0, 0.5), row(1, "npy", 240.0, 0.4), row(1, "v2bin", 300.0, 0.3)]
    rows.append({**row(0, "lit", 50.0, 2.0), "system": "litserve"})
    assert [bench.in_turn(["json", "v2bin", "npy"], r)[0] for r in range(4)] == [
        "json",
        "v2bin",
        "npy",
        "json",
    ]
    out = bench.against_json(rows)
    assert set(out) == {"cascade-ap/npy vs json", "cascade-ap/v2bin vs json"}
    assert out["cascade-ap/npy vs json"] == pytest.approx(
        {"requests_per_s": 1.2, "server_cpu_ms_per_request": 0.8}
    )
    assert out["cascade-ap/v2bin vs json"]["requests_per_s"] == pytest.approx(1.5)
