"""Drift handling behind the HTTP API: a shift alarms, the guard swaps in the giant alone, a
live re-tune swaps a new policy, every answer matches exactly one version; feedback's route."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from hybridserve.tuning import CascadePolicy
from runtime.cascade_fixtures import NAMES, make_family, make_inputs, simulate
from runtime.drift_fixtures import BASE, drift_engine, shifted
from server.app_harness import app_client

pytestmark = pytest.mark.unit

AUTH = {"Authorization": "Bearer s3cret"}


async def _predict(client: httpx.AsyncClient, x: np.ndarray) -> dict[str, Any]:
    r = await client.post("/v1/predict", json={"inputs": x.tolist()}, headers=AUTH)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _drift(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/v1/policy", headers=AUTH)
    assert r.status_code == 200, r.text
    state: dict[str, Any] = r.json()["drift"]
    return state


def test_a_shift_alarms_guards_retunes_and_every_answer_has_one_version(tmp_path: Path) -> None:
    family = make_family()
    served: list[tuple[np.ndarray, dict[str, Any]]] = []

    async def go() -> None:
        engine = drift_engine(shadow_fraction=0.5, drift_min_pairs=60)
        async with app_client(engine, api_key="s3cret", workdir=tmp_path) as client:
            clean = make_inputs(120, seed=21)
            for i in range(0, 120, 4):  # one at a time: the detectors see a fixed order
                served.append((clean[i : i + 4], await _predict(client, clean[i : i + 4])))
            assert (await _drift(client))["state"] == "watch"
            x = shifted(2000)
            i = 0
            while (await _drift(client))["retunes"] == 0:
                assert i < len(x), "no re-tune after 2,000 shifted inputs"
                served.append((x[i : i + 4], await _predict(client, x[i : i + 4])))
                i += 4
                await asyncio.sleep(0.002)  # idle time: the shadow checks run
            state = await _drift(client)
            assert state["alarms"] == 1 and state["state"] == "watch"
            assert [e["event"] for e in state["events"]] == ["alarm", "guard", "retune"]
            assert state["events"][0]["detector"] in ("signature", "disagreement")
            assert state["events"][1]["version"] == 2 and state["events"][2]["version"] == 3
            for _ in range(5):  # served by the re-tuned policy
                served.append((x[i : i + 4], await _predict(client, x[i : i + 4])))
                i += 4
            metrics = (await client.get("/metrics")).text
            assert "hybridserve_drift_alarm_total 1.0" in metrics
            assert "hybridserve_drift_retunes_total 1.0" in metrics
            assert 'hybridserve_drift_state{state="watch"} 1.0' in metrics
            assert "hybridserve_shadow_dropped_total" in metrics
            assert "hybridserve_estimated_accuracy" in metrics
            assert 'hybridserve_shadow_agreement{model="overall"}' in metrics

    asyncio.run(go())
    guard = CascadePolicy.load(tmp_path / "policy-live-v2.json")
    assert guard.chain == (NAMES[2],)
    retuned = CascadePolicy.load(tmp_path / "policy-live-v3.json")
    assert "retune" in retuned.summary
    policies = {1: BASE, 2: guard, 3: retuned}
    versions = [body["policy_version"] for _, body in served]
    assert versions == sorted(versions) and set(versions) == {1, 2, 3}
    for x, body in served:  # every answer is exactly what its version's policy says
        sim = simulate(policies[body["policy_version"]], family, x)
        assert [a["label"] for a in body["answers"]] == sim.labels.tolist()
        assert [tuple(a["path"]) for a in body["answers"]] == sim.path
    assert len({body["id"] for _, body in served}) == len(served)


def test_feedback_needs_the_token_and_validates_ids_and_labels() -> None:
    async def go() -> None:
        async with app_client(drift_engine(), api_key="s3cret") as client:
            body = await _predict(client, make_inputs(3, seed=2))
            rid = body["id"]
            good = {"feedback": [{"id": rid, "labels": [0, 1, 2]}]}
            assert (await client.post("/v1/feedback", json=good)).status_code == 401
            bad: list[tuple[Any, int, str]] = [
                ({"feedback": [{"id": "r999", "labels": [0]}]}, 404, "unknown request 'r999'"),
                ({"feedback": [{"id": rid, "labels": [0]}]}, 422, "had 3 inputs"),
                ({"feedback": [{"id": rid, "labels": [0, 1, 7]}]}, 422, "7 is not a class"),
                ({"feedback": []}, 422, "feedback"),
                ({"feedback": [{"id": rid}]}, 422, "labels"),
                ({"labels": [1]}, 422, "feedback"),
            ]
            for payload, status, message in bad:
                r = await client.post("/v1/feedback", json=payload, headers=AUTH)
                assert r.status_code == status, (payload, r.text)
                assert message in r.json()["error"], (message, r.text)
            # one bad item refuses the whole body: nothing was recorded
            assert (await _drift(client))["feedback"]["labels"] == 0
            r = await client.post("/v1/feedback", json=good, headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json() == {"labels": 3, "retune_labels": 0}
            feedback = (await _drift(client))["feedback"]
            served = [a["label"] for a in body["answers"]]
            expected = np.mean([s == y for s, y in zip(served, [0, 1, 2], strict=True)])
            assert feedback == {"labels": 3, "served_accuracy": pytest.approx(expected)}

    asyncio.run(go())


def test_feedback_is_refused_when_drift_handling_is_off() -> None:
    from server.app_harness import make_engine

    async def go() -> None:
        async with app_client(make_engine()) as client:
            r = await client.post("/v1/predict", json={"inputs": make_inputs(1).tolist()})
            assert "id" not in r.json()
            assert (await client.get("/v1/policy")).json()["drift"] is None
            r = await client.post("/v1/feedback", json={"feedback": [{"id": "r1", "labels": [0]}]})
            assert r.status_code == 409 and "drift handling is off" in r.json()["error"]

    asyncio.run(go())
