"""The OpenAPI document tells the truth: routes, bodies, errors per route, auth, examples."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema_rs
import pytest

from hybridserve.server.schemas import InferRequest, PredictRequest
from server.app_harness import app_client, make_engine

pytestmark = pytest.mark.integration

KEY = "openapi-test-key"
PREDICT = "/v1/predict"
INFER = "/v2/models/{model_name}/infer"
KEYED = ("/v1/predict", "/v2/models/{model_name}/infer", "/v2/models/{model_name}", "/v1/policy")
HEALTH = ("/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}/ready", "/metrics")


def _spec(**settings: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with app_client(make_engine(), **settings) as client:
            r = await client.get("/openapi.json")
            assert r.status_code == 200
            return dict(r.json())

    return asyncio.run(go())


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {path: next(iter(ops.values())) for path, ops in spec["paths"].items()}


def test_openapi_documents_routes_and_bodies() -> None:
    spec = _spec()
    for path in (*KEYED, *HEALTH):
        assert path in spec["paths"], path
    infer = spec["paths"][INFER]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "InferRequest"
    )
    assert {"400", "404", "408", "413", "415", "422", "503", "504"} <= set(infer["responses"])
    schemas = spec["components"]["schemas"]
    assert "UINT8" in json.dumps(schemas["TensorInput"])
    assert set(schemas["AnswerModel"]["properties"]) == {
        "label",
        "label_name",
        "confidence",
        "model",
        "path",
        "latency_ms",
    }


@pytest.mark.parametrize("key", [None, ""], ids=["no-key", "empty-key"])
def test_without_a_key_no_bearer_auth_is_declared(key: str | None) -> None:
    spec = _spec(api_key=key)
    assert "securitySchemes" not in spec.get("components", {})
    for path, op in _operations(spec).items():
        assert "security" not in op, path
        assert "401" not in op["responses"], path


@pytest.mark.parametrize("open_health", [True, False], ids=["open-health", "closed-health"])
def test_with_a_key_bearer_auth_is_declared_where_the_token_is_required(open_health: bool) -> None:
    spec = _spec(api_key=KEY, open_health=open_health)
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    ops = _operations(spec)
    needs_token = KEYED if open_health else (*KEYED, *HEALTH)
    for path in needs_token:
        assert ops[path]["security"] == [{"HTTPBearer": []}], path
        assert "401" in ops[path]["responses"], path
    for path in set(HEALTH) - set(needs_token):
        assert "security" not in ops[path], path
        assert "401" not in ops[path]["responses"], path


def test_model_readiness_documents_its_404_and_answers_it() -> None:
    spec = _spec()
    responses = spec["paths"]["/v2/models/{model_name}/ready"]["get"]["responses"]
    assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorResponse"
    )
    assert responses["503"]["content"]["application/json"]["schema"]["$ref"].endswith("Readiness")

    async def go() -> None:
        async with app_client(make_engine()) as client:
            r = await client.get("/v2/models/gpt/ready")
            assert r.status_code == 404
            assert r.json() == {"error": "unknown model 'gpt'"}

    asyncio.run(go())


def test_request_examples_fit_the_schema_and_the_server_answers_them() -> None:
    async def go() -> None:
        async with app_client(make_engine()) as client:
            spec = (await client.get("/openapi.json")).json()
            for path, model, url in (
                (PREDICT, PredictRequest, "/v1/predict"),
                (INFER, InferRequest, "/v2/models/tiny/infer"),
            ):
                body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
                example = body["example"]
                schema = {**body["schema"], "components": spec["components"]}
                jsonschema_rs.validate(schema, example)  # raises on a mismatch
                model.model_validate(example)
                r = await client.post(url, json=example)
                assert r.status_code == 200, (path, r.text)
                assert len(r.json()["answers"]) == 1
            for path in ("/v2/models/{model_name}", "/v2/models/{model_name}/ready", INFER):
                op = next(iter(spec["paths"][path].values()))
                params = {p["name"]: p for p in op["parameters"]}
                assert params["model_name"]["example"] == "tiny", path

    asyncio.run(go())
    # no field carries an example of its own that would not fit the served family
    assert "examples" not in json.dumps(PredictRequest.model_json_schema())
    assert "examples" not in json.dumps(InferRequest.model_json_schema())
