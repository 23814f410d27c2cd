"""Binary bodies: KServe v2 binary tensors and ``.npy`` batches, good and malformed."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from hybridserve.models import load_family
from hybridserve.planning import Plan
from hybridserve.runtime import Engine, EngineConfig
from hybridserve.tuning import CascadePolicy, identity_calibrator
from server.app_harness import app_client, make_engine

pytestmark = pytest.mark.integration

INFER = "/v2/models/tiny/infer"


def _run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def v2_binary(
    x: np.ndarray, datatype: str = "FP32", dtype: str = "<f4", name: str = "input"
) -> tuple[bytes, dict[str, str]]:
    """A v2 binary body holding ``x`` and its headers."""
    raw = np.ascontiguousarray(x, dtype=dtype).tobytes()
    tensor = {
        "name": name,
        "shape": list(x.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    head = json.dumps({"id": "b1", "inputs": [tensor]}).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }
    return head + raw, headers


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


NPY = {"content-type": "application/x-npy"}
X = np.arange(2 * 16, dtype=np.float32).reshape(2, 4, 4) / 32


def test_binary_and_npy_bodies_answer_like_json() -> None:
    async def go() -> None:
        async with app_client(make_engine()) as client:
            want = (await client.post("/v1/predict", json={"inputs": X.tolist()})).json()
            body, headers = v2_binary(X)
            r = await client.post(INFER, content=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["id"] == "b1"
            assert [a["label"] for a in r.json()["answers"]] == [
                a["label"] for a in want["answers"]
            ]
            for arr in (X, np.asfortranarray(X)):  # .npy may hold column-major data
                r = await client.post("/v1/predict", content=npy(arr), headers=NPY)
                assert r.status_code == 200, r.text
                assert r.json()["answers"] == [
                    {**a, "latency_ms": b["latency_ms"]}
                    for a, b in zip(want["answers"], r.json()["answers"], strict=True)
                ]

    _run(go())


def _bad_cases() -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    body, headers = v2_binary(X)
    head_len = int(headers["inference-header-content-length"])
    ct = {"content-type": "application/octet-stream"}
    return [
        ("no length header", INFER, body, ct, 400, "Inference-Header-Content-Length"),
        (
            "length not a number",
            INFER,
            body,
            {**ct, "inference-header-content-length": "abc"},
            400,
            "whole number",
        ),
        (
            "length beyond the body",
            INFER,
            body,
            {**ct, "inference-header-content-length": str(len(body) + 10)},
            400,
            "but the body holds",
        ),
        (
            "wrong length (header cut short)",
            INFER,
            body,
            {**ct, "inference-header-content-length": str(head_len - 5)},
            400,
            "malformed JSON",
        ),
        ("truncated data", INFER, body[:-7], headers, 400, "runs past the body"),
        ("extra bytes", INFER, body + b"\0" * 4, headers, 400, "after the declared tensors"),
        ("wrong datatype", INFER, *v2_binary(X, "BYTES"), 422, "datatype"),
        ("BOOL bytes not 0/1", INFER, *v2_binary(X * 64, "BOOL", "u1"), 422, "other than 0 and 1"),
        ("datatype/size mismatch", INFER, *v2_binary(X, "FP64", "<f4"), 422, "takes 256 bytes"),
        (
            "wrong shape",
            INFER,
            *v2_binary(X.reshape(2, 16)),
            422,
            "expected [N, 4, 4]",
        ),
        ("binary to /v1/predict", "/v1/predict", body, headers, 400, "v2 infer route"),
        ("npy not npy", "/v1/predict", b"not an npy file", NPY, 400, "not a readable .npy"),
        ("npy truncated", "/v1/predict", npy(X)[:-10], NPY, 400, "not a readable .npy"),
        ("npy wrong shape", "/v1/predict", npy(X.reshape(2, 16)), NPY, 422, "expected shape"),
        ("npy text", "/v1/predict", npy(np.array(["a", "b"])), NPY, 422, "numeric .npy"),
        ("npy to v2", INFER, npy(X), NPY, 400, "/v1/predict only"),
        (
            "npy header declares a huge array",
            "/v1/predict",
            npy(X).replace(b"(2, 4, 4)", b"(200000000000, 4, 4)"),
            NPY,
            400,
            "declares 12800000000000 bytes",
        ),
    ]


BAD = _bad_cases()


@pytest.mark.parametrize(
    ("case", "path", "body", "headers", "status", "message"), BAD, ids=[c[0] for c in BAD]
)
def test_malformed_binary_bodies_get_4xx_and_the_server_keeps_serving(
    case: str, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    async def go() -> None:
        async with app_client(make_engine()) as client:
            r = await client.post(path, content=body, headers=headers)
            assert r.status_code == status, (case, r.text)
            assert message in r.json()["error"], (case, r.text)
            good, good_headers = v2_binary(X)
            assert (await client.post(INFER, content=good, headers=good_headers)).status_code == 200

    _run(go())


def test_a_binary_body_past_the_size_limit_is_413() -> None:
    async def go() -> None:
        async with app_client(make_engine(), max_body_bytes=200) as client:
            body, headers = v2_binary(X)
            r = await client.post(INFER, content=body, headers=headers)
            assert r.status_code == 413

    _run(go())


def _cnn_small_engine() -> tuple[Engine, np.ndarray]:
    family = load_family("fashion-mnist")
    chain = ("cnn-small",)
    policy = CascadePolicy(
        family=family.name,
        chain=chain,
        thresholds=(),
        calibrators=(identity_calibrator(),),
        mode="manual",
    )
    plan = Plan.default(family.name, chain, batch_size=64)
    engine = Engine(policy, plan, family, EngineConfig(max_batch_size=256))
    return engine, family.split("test").x[:200]


def test_json_binary_and_npy_bodies_agree_on_real_test_images() -> None:
    engine, x = _cnn_small_engine()

    async def go() -> None:
        async with app_client(engine) as client:
            path = "/v2/models/fashion-mnist/infer"
            by_json = await client.post("/v1/predict", json={"inputs": x.tolist()})
            v2_json = {
                "inputs": [
                    {
                        "name": "input",
                        "shape": list(x.shape),
                        "datatype": "UINT8",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
            by_v2_json = await client.post(path, json=v2_json)
            body, headers = v2_binary(x, "UINT8", "u1")
            by_binary = await client.post(path, content=body, headers=headers)
            body32, headers32 = v2_binary(x)
            by_binary32 = await client.post(path, content=body32, headers=headers32)
            by_npy = await client.post("/v1/predict", content=npy(x), headers=NPY)
            answers = []
            for r in (by_json, by_v2_json, by_binary, by_binary32, by_npy):
                assert r.status_code == 200, r.text
                answers.append([(a["label"], a["confidence"]) for a in r.json()["answers"]])
            assert len(answers[0]) == len(x)
            for other in answers[1:]:
                assert [a[0] for a in other] == [a[0] for a in answers[0]]
                assert np.allclose([a[1] for a in other], [a[1] for a in answers[0]])

    _run(go())


def test_json_that_only_the_standard_library_reads_keeps_its_answer() -> None:
    """orjson refuses NaN and integers past 64 bits; those bodies still get their 422s."""
    big = '{"inputs": [[[' + "1" * 30 + ", 0, 0, 0]" + ", [0, 0, 0, 0]" * 3 + "]]}"
    nan = '{"inputs": [[[NaN, 0, 0, 0]' + ", [0, 0, 0, 0]" * 3 + "]]}"

    async def go() -> None:
        async with app_client(make_engine()) as client:
            for body, message in ((big, "outside the family's range"), (nan, "NaN or infinite")):
                r = await client.post("/v1/predict", content=body.encode())
                assert r.status_code == 422, r.text
                assert message in r.json()["error"]

    _run(go())
