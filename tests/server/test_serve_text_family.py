"""A text family (two tiny random-weight BERTs) served over HTTP, in process, offline.

The family is found as ``serve`` finds it (``engine_from_workdir`` with ``--config``); its answers
over ``/v1/predict`` and KServe v2 ``BYTES`` tensors equal the cascade computed offline with
plain numpy (``runtime.cascade_fixtures.simulate``), and bad inputs get 4xx answers naming the
problem. The socket layer refuses connections, so any hub download fails the test.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from hybridserve.backends.local import engine_from_workdir
from hybridserve.models import Family, load_family
from hybridserve.runtime import Engine, EngineConfig
from hybridserve.server.schemas import InferRequest, PredictRequest
from hybridserve.tuning import CascadePolicy
from models.tiny_classifiers import random_texts, write_text_family
from runtime.cascade_fixtures import _softmax, simulate, temperature
from server.app_harness import app_client, make_engine

pytestmark = pytest.mark.integration

MAX_CHARS = 200
INFER = "/v2/models/tiny-bert/infer"


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """No hub access while the models are built and served: any socket connection fails."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use attempted: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def text_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return write_text_family(tmp_path_factory.mktemp("bert"), n=24)


@pytest.fixture(scope="module")
def family(text_yaml: Path) -> Family:
    return load_family(config=text_yaml)


@pytest.fixture(scope="module")
def texts() -> np.ndarray:
    return random_texts(12, 7)


@pytest.fixture(scope="module")
def workdir(
    tmp_path_factory: pytest.TempPathFactory, family: Family, texts: np.ndarray
) -> tuple[Path, CascadePolicy]:
    """A workdir holding a ``small → giant`` policy under which ``small`` answers half of
    ``texts`` (threshold halfway between two confidences, so padding cannot flip one)."""
    conf = np.sort(_softmax(family.model("small").predict_logits(texts) / 2.0).max(axis=1))
    half = len(conf) // 2
    policy = CascadePolicy(
        family="tiny-bert",
        chain=("small", "giant"),
        thresholds=(float(conf[half - 1] + conf[half]) / 2,),
        calibrators=(temperature(2.0), temperature(1.0)),
        mode="manual",
    )
    root = tmp_path_factory.mktemp("wd")
    policy.save(root / "policy-ap.json")
    return root, policy


def _engine(workdir: tuple[Path, CascadePolicy], text_yaml: Path) -> Engine:
    config = EngineConfig(max_text_chars=MAX_CHARS, max_batch_size=16)
    return engine_from_workdir(workdir[0], config=config, family_config=text_yaml, batch_size=4)


def test_text_family_answers_over_http_equal_the_offline_cascade(
    workdir: tuple[Path, CascadePolicy], text_yaml: Path, family: Family, texts: np.ndarray
) -> None:
    sim = simulate(workdir[1], family, texts)
    assert set(sim.model) == {"small", "giant"}  # both models answer some texts
    engine = _engine(workdir, text_yaml)

    async def ask() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        async with engine, app_client(engine) as client:
            r = await client.post("/v1/predict", json={"inputs": texts.tolist()})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "tiny-bert"
            tensor = {"name": "t", "shape": [len(texts)], "datatype": "BYTES"}
            v2 = await client.post(INFER, json={"inputs": [{**tensor, "data": texts.tolist()}]})
            assert v2.status_code == 200, v2.text
            meta = await client.get("/v2/models/tiny-bert")
            return r.json()["answers"], v2.json(), meta.json()

    answers, v2, meta = asyncio.run(ask())
    assert [a["label"] for a in answers] == sim.labels.tolist()
    assert [a["model"] for a in answers] == sim.model
    assert [tuple(a["path"]) for a in answers] == sim.path
    np.testing.assert_allclose([a["confidence"] for a in answers], sim.confidence, atol=1e-4)
    assert [a["label_name"] for a in answers] == [("neg", "neu", "pos")[i] for i in sim.labels]
    assert all(a["latency_ms"] >= 0 for a in answers)
    assert [a["label"] for a in v2["answers"]] == sim.labels.tolist()
    outputs = {o["name"]: o["data"] for o in v2["outputs"]}
    assert outputs["model"] == sim.model
    assert meta["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1]}]


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def test_bad_inputs_to_a_text_family_are_4xx_naming_the_problem(
    workdir: tuple[Path, CascadePolicy], text_yaml: Path
) -> None:
    def v2(tensor: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": [{"name": "t", **tensor}]}

    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/v1/predict", {"inputs": ["the cat", ""]}, 422, r"inputs[1]: empty text"),
        ("/v1/predict", {"inputs": ["  "]}, 422, r"inputs[0]: empty text"),
        ("/v1/predict", {"inputs": ["a" * (MAX_CHARS + 1)]}, 422, "limit of 200"),
        ("/v1/predict", {"inputs": [[1.0, 2.0]]}, 422, "takes text"),
        ("/v1/predict", {"inputs": []}, 422, "empty batch"),
        ("/v1/predict", {"inputs": ["cat"] * 17}, 422, "limit of 16"),
        (INFER, v2({"shape": [1, 2], "datatype": "FP32", "data": [1, 2]}), 422, "BYTES"),
        (INFER, v2({"shape": [2, 3], "datatype": "BYTES", "data": ["a"] * 6}), 422, "[N]"),
        (INFER, v2({"shape": [2], "datatype": "BYTES", "data": ["a"]}), 422, "data has 1"),
        (INFER, v2({"shape": [1], "datatype": "BYTES", "data": [""]}), 422, "empty text"),
    ]
    engine = _engine(workdir, text_yaml)

    async def go() -> None:
        async with engine, app_client(engine) as client:
            for url, body, status, message in cases:
                r = await client.post(url, json=body)
                assert r.status_code == status, (body, r.text)
                assert message in r.json()["error"], (body, r.text)
            r = await client.post(
                "/v1/predict",
                content=_npy(np.zeros((2, 3), np.float32)),
                headers={"content-type": "application/x-npy"},
            )
            assert r.status_code == 422 and "takes text" in r.json()["error"], r.text
            # the server still answers good texts after the refusals
            r = await client.post("/v1/predict", json={"inputs": ["the cat sat"]})
            assert r.status_code == 200, r.text

    asyncio.run(go())


def _bytes_body(elements: bytes, shape: list[int], datatype: str = "BYTES") -> tuple[bytes, Any]:
    """A v2 binary body with one tensor of ``elements`` (already in the binary layout)."""
    tensor = {
        "name": "t",
        "shape": shape,
        "datatype": datatype,
        "parameters": {"binary_data_size": len(elements)},
    }
    head = json.dumps({"inputs": [tensor]}).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }
    return head + elements, headers


def _elements(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def test_texts_over_binary_bytes_tensors_answer_like_json_and_bad_ones_are_422(
    workdir: tuple[Path, CascadePolicy], text_yaml: Path, texts: np.ndarray
) -> None:
    items = [t.encode() for t in texts.tolist()]
    one = _elements([b"the cat"])
    bad: list[tuple[bytes, list[int], str, str]] = [
        (_elements(items[:2])[:-3], [2], "BYTES", "declares"),
        (_elements(items[:2]) + b"\0", [2], "BYTES", "bytes left after"),
        (_elements(items[:2]), [3], "BYTES", "has no 4-byte length"),
        (one, [1000], "BYTES", "takes at least 4000 bytes"),
        (_elements([b"\xff\xfe"]), [1], "BYTES", "not UTF-8"),
        (_elements([b"  "]), [1], "BYTES", "empty text"),
        (_elements(items[:2]), [2, 1, 1], "BYTES", "[N]"),
        (np.zeros(2, "<f4").tobytes(), [2], "FP32", "BYTES"),
    ]
    engine = _engine(workdir, text_yaml)

    async def go() -> None:
        async with engine, app_client(engine) as client:
            tensor = {"name": "t", "shape": [len(items)], "datatype": "BYTES"}
            want = await client.post(INFER, json={"inputs": [{**tensor, "data": texts.tolist()}]})
            body, headers = _bytes_body(_elements(items), [len(items)])
            r = await client.post(INFER, content=body, headers=headers)
            assert r.status_code == 200, r.text
            assert [a["label"] for a in r.json()["answers"]] == [
                a["label"] for a in want.json()["answers"]
            ]
            body, headers = _bytes_body(_elements(items), [len(items), 1])  # [N, 1] too
            assert (await client.post(INFER, content=body, headers=headers)).status_code == 200
            for elements, shape, datatype, message in bad:
                body, headers = _bytes_body(elements, shape, datatype)
                r = await client.post(INFER, content=body, headers=headers)
                assert r.status_code == 422, (message, r.text)
                assert message in r.json()["error"], (message, r.text)

    asyncio.run(go())


def test_openapi_examples_of_a_text_family_are_texts_the_server_answers(
    workdir: tuple[Path, CascadePolicy], text_yaml: Path
) -> None:
    engine = _engine(workdir, text_yaml)

    async def go() -> None:
        async with engine, app_client(engine) as client:
            spec = (await client.get("/openapi.json")).json()
            for path, model, url in (
                ("/v1/predict", PredictRequest, "/v1/predict"),
                ("/v2/models/{model_name}/infer", InferRequest, INFER),
            ):
                body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
                example = body["example"]
                assert "an example text" in json.dumps(example)
                schema = {**body["schema"], "components": spec["components"]}
                jsonschema_rs.validate(schema, example)  # raises on a mismatch
                model.model_validate(example)
                r = await client.post(url, json=example)
                assert r.status_code == 200, (path, r.text)
                assert len(r.json()["answers"]) == 1

    asyncio.run(go())


def test_text_sent_to_an_image_family_is_422_naming_the_problem() -> None:
    async def go() -> None:
        engine = make_engine()
        async with engine, app_client(engine) as client:
            r = await client.post("/v1/predict", json={"inputs": ["the cat sat"]})
            assert r.status_code == 422
            assert "not text" in r.json()["error"]
            tensor = {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["the cat"]}
            r = await client.post("/v2/models/tiny/infer", json={"inputs": [tensor]})
            assert r.status_code == 422
            assert "takes numbers, not BYTES" in r.json()["error"]
            meta = (await client.get("/v2/models/tiny")).json()
            assert meta["inputs"][0]["datatype"] == "FP32"

    asyncio.run(go())
