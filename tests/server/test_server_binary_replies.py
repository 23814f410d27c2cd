"""Binary bodies answered by the raw route: binary outputs (the v2 binary extension's replies),
the same refusals and gates as JSON bodies, and zero-copy inputs the models still get writable."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from hybridserve.runtime.inputs import check_batch
from hybridserve.server import binary
from hybridserve.server.replies import read_binary_reply
from server.app_harness import app_client, make_engine

pytestmark = pytest.mark.integration

INFER = "/v2/models/tiny/infer"
X = np.arange(3 * 16, dtype=np.float32).reshape(3, 4, 4) / 48


def _run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def v2_body(
    x: np.ndarray, datatype: str = "FP32", dtype: str = "<f4", **request: Any
) -> tuple[bytes, dict[str, str]]:
    raw = np.ascontiguousarray(x, dtype=dtype).tobytes()
    tensor = {
        "name": "input",
        "shape": list(x.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    head = json.dumps({"id": "r1", "inputs": [tensor], **request}).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }
    return head + raw, headers


def _outputs(reply: dict[str, Any]) -> dict[str, Any]:
    return {o["name"]: o["data"] for o in reply["outputs"]}


def test_binary_outputs_carry_the_json_answers_values() -> None:
    async def go() -> None:
        async with app_client(make_engine()) as client:
            body, headers = v2_body(X)
            plain = await client.post(INFER, content=body, headers=headers)
            assert plain.status_code == 200 and plain.headers["content-type"] == (
                "application/json"
            )
            want = _outputs(plain.json())
            assert set(want) == {"label", "label_name", "confidence", "model"}

            body, headers = v2_body(X, parameters={"binary_data_output": True})
            r = await client.post(INFER, content=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/octet-stream"
            n = int(r.headers["inference-header-content-length"])
            head, values = read_binary_reply(r.content, n)
            assert head["id"] == "r1" and head["model_name"] == "tiny"
            assert "answers" not in head  # a binary reply keeps to the v2 outputs
            assert all("data" not in o for o in head["outputs"])
            sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
            assert n + sum(sizes) == len(r.content)
            assert values["label"] == want["label"]
            assert values["label_name"] == want["label_name"]
            assert values["model"] == want["model"]
            assert np.allclose(values["confidence"], want["confidence"])

            # one output asked back as JSON, a JSON request asking for binary outputs
            request = {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "confidence", "parameters": {"binary_data": False}}],
            }
            body, headers = v2_body(X, **request)
            r = await client.post(INFER, content=body, headers=headers)
            head, values = read_binary_reply(
                r.content, int(r.headers["inference-header-content-length"])
            )
            confidence = next(o for o in head["outputs"] if o["name"] == "confidence")
            assert "parameters" not in confidence and np.allclose(
                confidence["data"], want["confidence"]
            )
            assert values["label"] == want["label"]
            tensor = {"name": "input", "shape": [3, 4, 4], "datatype": "FP32"}
            only_labels = {
                "inputs": [{**tensor, "data": X.ravel().tolist()}],
                "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
            }
            r = await client.post(INFER, json=only_labels)
            assert r.headers["content-type"] == "application/octet-stream", r.text
            head, values = read_binary_reply(
                r.content, int(r.headers["inference-header-content-length"])
            )
            assert values["label"] == want["label"]
            name = next(o for o in head["outputs"] if o["name"] == "label_name")
            assert name["data"] == want["label_name"]  # not asked for in binary: JSON data

    _run(go())


@pytest.mark.parametrize(
    "request_part",
    [
        {"parameters": {"binary_data_output": "yes"}},
        {"outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
    ],
)
def test_a_binary_output_flag_that_is_not_a_boolean_is_422(request_part: dict[str, Any]) -> None:
    async def go() -> None:
        async with app_client(make_engine()) as client:
            body, headers = v2_body(X, **request_part)
            r = await client.post(INFER, content=body, headers=headers)
            assert r.status_code == 422, r.text
            assert "expected true or false" in r.json()["error"]
            tensor = {"name": "input", "shape": [3, 4, 4], "datatype": "FP32"}
            as_json = {"inputs": [{**tensor, "data": X.ravel().tolist()}], **request_part}
            r = await client.post(INFER, json=as_json)
            assert r.status_code == 422 and "expected true or false" in r.json()["error"]

    _run(go())


def test_binary_bodies_pass_the_same_gates_as_json() -> None:
    """Token, unknown model, a batch past the limit: the raw route answers like FastAPI's."""

    async def go() -> None:
        async with app_client(make_engine(), api_key="secret") as client:
            body, headers = v2_body(X)
            r = await client.post(INFER, content=body, headers=headers)
            assert r.status_code == 401
            auth = {**headers, "authorization": "Bearer secret"}
            assert (await client.post(INFER, content=body, headers=auth)).status_code == 200
            r = await client.post("/v2/models/other/infer", content=body, headers=auth)
            assert r.status_code == 404 and "unknown model 'other'" in r.json()["error"]
            big, big_headers = v2_body(np.zeros((9, 4, 4), np.float32))
            r = await client.post(
                INFER, content=big, headers={**big_headers, "authorization": "Bearer secret"}
            )
            assert r.status_code == 422 and "limit of 8" in r.json()["error"]
            buf = io.BytesIO()
            np.save(buf, np.zeros((9, 4, 4), np.float32))
            npy = {"content-type": "application/x-npy", "authorization": "Bearer secret"}
            r = await client.post("/v1/predict", content=buf.getvalue(), headers=npy)
            assert r.status_code == 422 and "limit of 8" in r.json()["error"]
            token = {"authorization": "Bearer secret"}
            metrics = (await client.get("/metrics", headers=token)).text
            route = 'route="/v2/models/{model}/infer"'
            for status in (200, 401, 404, 422):  # the FrontDoor counts the raw route's answers
                assert f'requests_total{{{route},status="{status}"}}' in metrics, status

    _run(go())


def test_binary_values_outside_the_family_range_or_nan_are_422() -> None:
    async def go() -> None:
        async with app_client(make_engine()) as client:
            for x, message in ((X + np.nan, "NaN or infinite"), (X * 1e6, "outside")):
                body, headers = v2_body(x)
                r = await client.post(INFER, content=body, headers=headers)
                assert r.status_code == 422 and message in r.json()["error"], r.text
            body, headers = v2_body(X, "FP64", "<f8")
            assert (await client.post(INFER, content=body, headers=headers)).status_code == 200
            body, headers = v2_body(np.full((1, 4, 4), 1e300), "FP64", "<f8")
            r = await client.post(INFER, content=body, headers=headers)
            assert r.status_code == 422 and "too large" in r.json()["error"], r.text

    _run(go())


def test_zero_copy_inputs_reach_the_models_as_writable_float32() -> None:
    raw = np.ascontiguousarray(X).tobytes()
    view = binary.tensor_bytes(memoryview(raw), [3, 4, 4], np.dtype(np.float32), "FP32", "in")
    assert not view.flags.writeable  # a view of the body: nothing was copied
    checked = check_batch(view.reshape(3, 4, 4), (4, 4), None, 8)
    assert checked.flags.writeable and checked.dtype == np.float32
    assert np.array_equal(checked, X)


def test_npy_headers_are_parsed_once_and_still_checked_against_the_data() -> None:
    buf = io.BytesIO()
    np.save(buf, X)
    raw = buf.getvalue()
    first = binary.npy_batch(raw)
    assert any(key == raw[: len(key)] for key in binary._NPY_HEADERS)
    again = binary.npy_batch(raw)  # from the cache
    assert np.array_equal(first, again) and np.array_equal(again, X)
    with pytest.raises(binary.MalformedBodyError, match="declares 192 bytes"):
        binary.npy_batch(raw[:-4])
