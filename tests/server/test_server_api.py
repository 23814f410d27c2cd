"""The HTTP API in-process (httpx + ASGI lifespan): answers, bad inputs, auth, overload, metrics."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from hybridserve.models import Model
from hybridserve.runtime import EngineConfig
from runtime.cascade_fixtures import (
    POISON,
    Gate,
    clean_inputs,
    counting,
    failing,
    make_family,
    make_inputs,
    make_policy,
    simulate,
)
from server.app_harness import POLICY_X
from server.app_harness import app_client as _client
from server.app_harness import make_engine as _engine

pytestmark = pytest.mark.integration

KEY = "correct-horse-battery-staple"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _check(answers: list[dict[str, Any]], x: np.ndarray) -> None:
    sim = simulate(make_policy(make_family(), POLICY_X), make_family(), x)
    assert len(answers) == len(x)
    for r, a in enumerate(answers):
        assert (a["model"], a["label"], tuple(a["path"])) == (
            sim.model[r],
            sim.labels[r],
            sim.path[r],
        )
        assert a["confidence"] == pytest.approx(sim.confidence[r], rel=1e-5)
        assert a["label_name"] == ("ant", "bee", "cat")[a["label"]]
        assert a["latency_ms"] >= 0


async def _good(client: httpx.AsyncClient, **kw: Any) -> None:
    x = make_inputs(3, seed=9)
    r = await client.post("/v1/predict", json={"inputs": x.tolist()}, **kw)
    assert r.status_code == 200, r.text
    _check(r.json()["answers"], x)


def _png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------------- answers


def test_v1_predict_matches_the_simulation_for_lists_and_pngs() -> None:
    x = make_inputs(60, seed=4)

    async def go() -> None:
        async with _client(_engine()) as client:
            singles = await asyncio.gather(
                *(client.post("/v1/predict", json={"inputs": [x[i].tolist()]}) for i in range(40))
            )
            assert all(r.status_code == 200 for r in singles)
            _check([r.json()["answers"][0] for r in singles], x[:40])
            mixed = [_png(x[40]), x[41].tolist(), "data:image/png;base64," + _png(x[42])]
            r = await client.post("/v1/predict", json={"inputs": mixed})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "tiny"
            _check(r.json()["answers"], x[40:43])

    _run(go())


@pytest.mark.parametrize("datatype", ["UINT8", "INT64", "FP32", "FP64"])
def test_v2_infer_matches_the_simulation(datatype: str) -> None:
    x = make_inputs(8, seed=6)

    async def go() -> None:
        async with _client(_engine()) as client:
            data: Any = x.ravel().tolist() if datatype != "FP32" else x.tolist()  # flat or nested
            body = {
                "id": "req-1",
                "inputs": [
                    {"name": "input", "shape": [8, 4, 4], "datatype": datatype, "data": data}
                ],
            }
            r = await client.post("/v2/models/tiny/infer", json=body)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["model_name"] == "tiny" and out["id"] == "req-1"
            _check(out["answers"], x)
            tensors = {t["name"]: t for t in out["outputs"]}
            assert tensors["label"]["shape"] == [8] and tensors["label"]["datatype"] == "INT64"
            assert tensors["label"]["data"] == [a["label"] for a in out["answers"]]
            assert tensors["model"]["data"] == [a["model"] for a in out["answers"]]
            meta = (await client.get("/v2/models/tiny")).json()
            assert meta["inputs"][0]["shape"] == [-1, 4, 4]

    _run(go())


# ---------------------------------------------------------------------- bad inputs

NAN_BODY = '{"inputs": [[[NaN, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]}'
INF_V2 = (
    '{"inputs": [{"name": "x", "shape": [1, 4, 4], "datatype": "FP32", "data": '
    "[Infinity" + ", 0" * 15 + "]}]}"
)


def _v2(shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}


BAD: list[tuple[str, str, Any, int, str]] = [
    ("malformed JSON", "/v1/predict", b'{"inputs": [[1, 2', 400, "malformed JSON"),
    ("not an object", "/v1/predict", b"[1, 2, 3]", 422, "valid dictionary"),
    ("unknown field", "/v1/predict", {"inputs": [], "extra": 1}, 422, "extra: unknown field"),
    ("empty batch", "/v1/predict", {"inputs": []}, 422, "empty batch"),
    ("wrong shape", "/v1/predict", {"inputs": [[[0] * 5] * 4]}, 422, r"expected shape \(N, 4, 4\)"),
    (
        "ragged lists",
        "/v1/predict",
        {"inputs": [[[0] * 4] * 3 + [[0] * 3]]},
        422,
        "unequal lengths",
    ),
    ("text values", "/v1/predict", {"inputs": [[["a"] * 4] * 4]}, 422, "expected numbers"),
    ("NaN", "/v1/predict", NAN_BODY.encode(), 422, "NaN or infinite"),
    ("out of range", "/v1/predict", {"inputs": [[[256] * 4] * 4]}, 422, r"outside .*\[0, 255\]"),
    ("batch over limit", "/v1/predict", {"inputs": [[[0] * 4] * 4] * 9}, 422, "limit of 8"),
    ("bad base64", "/v1/predict", {"inputs": ["@@@"]}, 422, r"inputs\[0\]: not valid base64"),
    ("not a PNG", "/v1/predict", {"inputs": [base64.b64encode(b"GIF89a").decode()]}, 422, "PNG"),
    ("PNG wrong size", "/v1/predict", {"inputs": [_png(np.zeros((5, 4)))]}, 422, "4×5 pixels"),
    ("unknown model", "/v2/models/gpt/infer", _v2([1, 4, 4], "UINT8", [0] * 16), 404, "'gpt'"),
    (
        "unknown datatype",
        "/v2/models/tiny/infer",
        _v2([1, 4, 4], "STRING", [0] * 16),
        422,
        "datatype",
    ),
    (
        "floats in UINT8",
        "/v2/models/tiny/infer",
        _v2([1, 4, 4], "UINT8", [0.5] * 16),
        422,
        "non-integer",
    ),
    (
        "out of UINT8 range",
        "/v2/models/tiny/infer",
        _v2([1, 4, 4], "UINT8", [300] * 16),
        422,
        r"UINT8 range \[0, 255\]",
    ),
    (
        "shape and data disagree",
        "/v2/models/tiny/infer",
        _v2([2, 4, 4], "FP32", [0] * 16),
        422,
        "holds 32 values, but data has 16",
    ),
    ("wrong tensor shape", "/v2/models/tiny/infer", _v2([1, 16], "FP32", [0] * 16), 422, "shape"),
    ("infinite value", "/v2/models/tiny/infer", INF_V2.encode(), 422, "NaN or infinite"),
    (
        "two tensors",
        "/v2/models/tiny/infer",
        {"inputs": _v2([1, 4, 4], "FP32", [0] * 16)["inputs"] * 2},
        422,
        "exactly one input tensor",
    ),
    ("empty v2 batch", "/v2/models/tiny/infer", _v2([0, 4, 4], "FP32", []), 422, "empty batch"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_input_gets_a_4xx_naming_the_problem_then_serving_goes_on(
    path: str, body: Any, status: int, message: str
) -> None:
    async def go() -> None:
        async with _client(_engine()) as client:
            if isinstance(body, bytes):
                r = await client.post(path, content=body)
            else:
                r = await client.post(path, json=body)
            assert r.status_code == status, r.text
            assert r.headers["content-type"].startswith("application/json")
            error = r.json()["error"]
            assert isinstance(error, str)
            assert re.search(message, error), error
            await _good(client)

    _run(go())


def test_body_over_the_size_limit_is_413() -> None:
    async def go() -> None:
        async with _client(_engine(), max_body_bytes=2000) as client:
            r = await client.post("/v1/predict", json={"inputs": [[[255] * 4] * 4] * 60})
            assert r.status_code == 413
            assert "larger than the limit of 2000 bytes" in r.json()["error"]
            await _good(client)

    _run(go())


# ---------------------------------------------------------------------- access


def test_inference_and_policy_need_the_token_and_no_inference_runs_without_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def wrap(models: list[Model]) -> None:
        models[0] = counting(models[0], calls)

    caplog.set_level(logging.DEBUG)
    x = make_inputs(1)

    async def go() -> None:
        async with _client(_engine(wrap), api_key=KEY, open_health=True) as client:
            warm = len(calls)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                r = await client.post("/v1/predict", json={"inputs": x.tolist()}, headers=headers)
                assert r.status_code == 401, headers
                assert r.headers["www-authenticate"] == "Bearer"
                assert "bearer token" in r.json()["error"]
                body = _v2([1, 4, 4], "UINT8", x.ravel().tolist())
                r = await client.post("/v2/models/tiny/infer", json=body, headers=headers)
                assert r.status_code == 401
                assert (await client.get("/v1/policy", headers=headers)).status_code == 401
            assert len(calls) == warm  # no model ran
            assert (await client.get("/v2/health/ready")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
            auth = {"Authorization": f"Bearer {KEY}"}
            await _good(client, headers=auth)
            assert len(calls) > warm
            policy = await client.get("/v1/policy", headers=auth)
            assert policy.status_code == 200
            assert policy.json()["policy"]["chain"] == ["small", "medium", "giant"]

    _run(go())
    assert KEY not in caplog.text


def test_closed_health_needs_the_token_too() -> None:
    async def go() -> None:
        async with _client(_engine(), api_key=KEY, open_health=False) as client:
            for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
                assert (await client.get(path)).status_code == 401, path
                ok = await client.get(path, headers={"Authorization": f"Bearer {KEY}"})
                assert ok.status_code == 200, path

    _run(go())


# ---------------------------------------------------------------------- failures and overload


def test_only_the_request_that_makes_the_model_raise_gets_500_and_serving_goes_on() -> None:
    def wrap(models: list[Model]) -> None:
        models[0] = failing(models[0])

    x = clean_inputs(4)
    x[0, 0, 0] = POISON

    async def go() -> None:
        # four requests share one batch of four (long wait)
        async with _client(_engine(wrap, batch_size=4, max_wait_ms=500)) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/predict", json={"inputs": [x[i].tolist()]}) for i in range(4))
            )
            assert [r.status_code for r in replies] == [500, 200, 200, 200]
            assert "poisoned batch" in replies[0].json()["error"]
            _check([r.json()["answers"][0] for r in replies[1:]], x[1:])
            await _good(client)

    _run(go())


def test_full_queue_answers_503_with_retry_after_and_accepted_requests_finish() -> None:
    gate = Gate()

    def wrap(models: list[Model]) -> None:
        models[0] = gate.wrap(models[0])

    x = clean_inputs(6)
    config = EngineConfig(queue_size=2, warmup=False, max_batch_size=8)

    async def go() -> None:
        async with _client(_engine(wrap, config, batch_size=1, max_wait_ms=0)) as client:
            first = asyncio.create_task(
                client.post("/v1/predict", json={"inputs": [x[0].tolist()]})
            )
            while gate.calls == 0:
                await asyncio.sleep(0.005)
            queued = [
                asyncio.create_task(client.post("/v1/predict", json={"inputs": [x[i].tolist()]}))
                for i in (1, 2)
            ]
            await asyncio.sleep(0.05)
            r = await client.post("/v1/predict", json={"inputs": [x[3].tolist()]})
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert "queue is full" in r.json()["error"]
            # refused at the door, before the body is even parsed
            r = await client.post("/v1/predict", content=b"{not json")
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            gate.open()
            replies = [await t for t in (first, *queued)]
            assert [r.status_code for r in replies] == [200] * 3
            _check([r.json()["answers"][0] for r in replies], x[:3])

    _run(go())


def test_past_the_deadline_is_504() -> None:
    gate = Gate()

    def wrap(models: list[Model]) -> None:
        models[0] = gate.wrap(models[0])

    config = EngineConfig(request_timeout_s=0.1, warmup=False, max_batch_size=8)

    async def go() -> None:
        async with _client(_engine(wrap, config)) as client:
            r = await client.post("/v1/predict", json={"inputs": make_inputs(1).tolist()})
            assert r.status_code == 504
            assert "deadline" in r.json()["error"]
            gate.open()
            await _good(client)

    _run(go())


def test_ready_only_once_every_replica_is_warm() -> None:
    gate = Gate()

    def wrap(models: list[Model]) -> None:
        models[2] = gate.wrap(models[2])  # the giant's warm-up blocks

    async def go() -> None:
        async with _client(_engine(wrap), start_in_background=True) as client:
            assert (await client.get("/v2/health/live")).status_code == 200
            r = await client.get("/v2/health/ready")
            assert r.status_code == 503 and r.json()["detail"] == "warming up"
            r = await client.post("/v1/predict", json={"inputs": make_inputs(1).tolist()})
            assert r.status_code == 503 and "warming up" in r.json()["error"]
            gate.open()
            for _ in range(400):
                if (await client.get("/v2/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            assert (await client.get("/v2/health/ready")).json() == {"ready": True, "detail": None}
            await _good(client)

    _run(go())


# ---------------------------------------------------------------------- metrics and docs


def _sample(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_count_requests_answers_batches_and_energy() -> None:
    x = make_inputs(30, seed=8)
    sim = simulate(make_policy(make_family(), POLICY_X), make_family(), x)

    async def go() -> str:
        async with _client(_engine()) as client:
            for i in range(0, 30, 3):
                assert (
                    await client.post("/v1/predict", json={"inputs": x[i : i + 3].tolist()})
                ).status_code == 200
            await client.post("/v1/predict", json={"inputs": []})
            return (await client.get("/metrics")).text

    text = _run(go())
    route = "/v1/predict"
    assert _sample(text, "hybridserve_http_requests_total", route=route, status="200") == 10
    assert _sample(text, "hybridserve_http_errors_total", route=route, status="422") == 1
    assert _sample(text, "hybridserve_http_request_duration_seconds_count", route=route) == 11
    for model in ("small", "medium", "giant"):
        # warm-up batches are not answers; served inputs are
        assert _sample(text, "hybridserve_answers_total", model=model) == sim.model.count(model)
        assert _sample(text, "hybridserve_model_batch_size_count", model=model) >= 1
        assert _sample(text, "hybridserve_model_queue_depth_count", model=model) >= 1
        assert _sample(text, "hybridserve_model_batch_duration_seconds_count", model=model) >= 1
    reached_small = _sample(text, "hybridserve_model_batch_size_sum", model="small")
    assert reached_small == 30
    assert _sample(text, "hybridserve_energy_joules_total", device="cpu") >= 0
    assert 'source="' in text.split("hybridserve_energy_joules_total{", 1)[1]
