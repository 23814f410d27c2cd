"""``POST /v1/policy``: live swaps under load, refusals that change nothing, auth, files."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from hybridserve.runtime import Engine, EngineConfig
from hybridserve.server import ServerSettings, create_app
from hybridserve.tuning import CascadePolicy
from runtime.cascade_fixtures import (
    NAMES,
    make_family,
    make_inputs,
    make_policy,
    one_replica_plan,
    tiny_models,
)
from serve_process import free_port
from server.app_harness import app_client

pytestmark = pytest.mark.unit

BASE = make_policy(make_family(), make_inputs(100))
#: answers everything at the first model
FIRST = dataclasses.replace(BASE, thresholds=(0.0, 0.0), skips=())
#: sends everything to the giant
GIANT = dataclasses.replace(
    BASE, chain=(NAMES[2],), thresholds=(), calibrators=(BASE.calibrators[2],), skips=()
)
AUTH = {"Authorization": "Bearer s3cret"}
X = make_inputs(64, seed=11).tolist()


def _engine(policy: CascadePolicy = FIRST) -> Engine:
    plan = one_replica_plan(batch_size=8, max_wait_ms=2.0)
    config = EngineConfig(max_batch_size=8, energy=False, queue_size=4096)
    return Engine(policy, plan, make_family(list(tiny_models())), config)


def _path_of_version(version: int) -> list[str]:
    """Odd versions are FIRST (version 1 and every other swap), even ones GIANT."""
    return [NAMES[0]] if version % 2 else [NAMES[2]]


async def _version(client: httpx.AsyncClient) -> int:
    got = await client.get("/v1/policy", headers=AUTH)
    assert got.status_code == 200, got.text
    version: int = got.json()["version"]
    return version


async def _swap_under_load(
    client: httpx.AsyncClient, workdir: Path, clients: int, per_client: int, swaps: int = 10
) -> None:
    """``clients`` concurrent clients send ``per_client`` requests each while the policy is
    swapped ``swaps`` times between FIRST and GIANT: every request must be answered, all of
    its answers by the one version it names, and each version saved."""
    answered: list[tuple[int, list[list[str]]]] = []
    failures: list[str] = []
    every = clients * per_client // (swaps + 1)

    async def client_loop(k: int) -> None:
        for i in range(per_client):
            n = 1 + (k + i) % 2
            start = (k * 7 + i) % (len(X) - n)
            r = await client.post(
                "/v1/predict", json={"inputs": X[start : start + n]}, headers=AUTH
            )
            if r.status_code != 200:
                failures.append(f"{r.status_code}: {r.text}")
                continue
            body = r.json()
            answered.append((body["policy_version"], [a["path"] for a in body["answers"]]))

    tasks = [asyncio.create_task(client_loop(k)) for k in range(clients)]
    versions = []
    for s in range(swaps):
        while len(answered) + len(failures) < (s + 1) * every:  # spread over the run
            await asyncio.sleep(0.005)
        policy = GIANT if s % 2 == 0 else FIRST
        r = await client.post("/v1/policy", json=policy.to_dict(), headers=AUTH)
        assert r.status_code == 200, r.text
        versions.append(r.json()["version"])
    await asyncio.gather(*tasks)
    assert versions == list(range(2, 2 + swaps))
    assert await _version(client) == 1 + swaps

    assert failures == []
    assert len(answered) == clients * per_client  # nothing lost
    seen = set()
    for version, paths in answered:
        seen.add(version)
        assert all(p == _path_of_version(version) for p in paths), (version, paths)
    assert len(seen) >= swaps // 2, f"the swaps came while requests were served: {sorted(seen)}"
    for v in range(2, 2 + swaps):
        saved = CascadePolicy.load(workdir / f"policy-live-v{v}.json")
        assert saved.chain == (GIANT if v % 2 == 0 else FIRST).chain


def test_ten_swaps_under_concurrent_load_lose_nothing_and_mix_no_versions(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        async with app_client(_engine(), api_key="s3cret", workdir=tmp_path) as client:
            await _swap_under_load(client, tmp_path, clients=32, per_client=63)  # 2,016

    asyncio.run(go())


def test_ten_swaps_over_ten_thousand_requests_lose_nothing_and_mix_no_versions(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        async with app_client(_engine(), api_key="s3cret", workdir=tmp_path) as client:
            await _swap_under_load(client, tmp_path, clients=40, per_client=250)  # 10,000

    asyncio.run(go())


def test_ten_swaps_over_real_http_lose_nothing(tmp_path: Path) -> None:
    settings = ServerSettings(api_key="s3cret", workdir=tmp_path, start_in_background=False)
    port = free_port()
    app = create_app(_engine(), settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    async def go() -> None:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as c:
            await _swap_under_load(c, tmp_path, clients=16, per_client=40)

    try:
        asyncio.run(go())
    finally:
        server.should_exit = True
        thread.join(10)


def _bad_bodies(tmp_path: Path) -> list[tuple[Any, str]]:
    outside = tmp_path.parent / "outside.json"
    GIANT.save(outside)
    wrong_thresholds = {**GIANT.to_dict(), "chain": list(NAMES)}
    return [
        ({}, "missing field"),
        ({**GIANT.to_dict(), "surprise": 1}, "unknown field"),
        (wrong_thresholds, "policy.thresholds"),
        ({**GIANT.to_dict(), "family": "other"}, "family 'other'"),
        ({**GIANT.to_dict(), "chain": ["nope"]}, "policy.chain"),
        ({"path": "../outside.json"}, "inside the server's workdir"),
        ({"path": str(outside)}, "inside the server's workdir"),
        ({"path": "missing.json"}, "no such file"),
        ({"path": "policy-b.json", "chain": []}, "either a policy or only a path"),
        ([1, 2], "body"),
    ]


def test_a_bad_policy_is_refused_with_422_and_the_old_version_keeps_serving(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        async with app_client(_engine(), api_key="s3cret", workdir=tmp_path) as client:
            for body, field in _bad_bodies(tmp_path):
                r = await client.post("/v1/policy", json=body, headers=AUTH)
                assert r.status_code == 422, (body, r.text)
                assert field in r.json()["error"], (field, r.text)
            r = await client.post(
                "/v1/policy",
                content=b"{not json",
                headers={**AUTH, "Content-Type": "application/json"},
            )
            assert r.status_code == 400
            assert await _version(client) == 1
            r = await client.post("/v1/predict", json={"inputs": X[:4]}, headers=AUTH)
            assert r.json()["policy_version"] == 1
            assert all(a["path"] == [NAMES[0]] for a in r.json()["answers"])
            assert not list(tmp_path.glob("policy-live-*"))

    asyncio.run(go())


def test_a_policy_file_in_the_workdir_swaps_in_and_is_saved_as_the_live_version(
    tmp_path: Path,
) -> None:
    GIANT.save(tmp_path / "policy-b.json")

    async def go() -> None:
        async with app_client(_engine(), api_key="s3cret", workdir=tmp_path) as client:
            r = await client.post("/v1/policy", json={"path": "policy-b.json"}, headers=AUTH)
            assert r.status_code == 200, r.text
            saved = tmp_path / "policy-live-v2.json"
            assert r.json() == {"version": 2, "chain": [NAMES[2]], "file": str(saved)}
            assert CascadePolicy.load(saved) == GIANT
            infer = {
                "inputs": [{"name": "input", "shape": [2, 4, 4], "datatype": "FP32", "data": X[:2]}]
            }
            r = await client.post("/v2/models/tiny/infer", json=infer, headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()["policy_version"] == 2
            assert {a["model"] for a in r.json()["answers"]} == {NAMES[2]}

    asyncio.run(go())


def test_the_policy_routes_require_the_token() -> None:
    async def go() -> None:
        async with app_client(_engine(), api_key="s3cret") as client:
            r = await client.post("/v1/policy", json=GIANT.to_dict())
            assert r.status_code == 401
            r = await client.post(
                "/v1/policy", json=GIANT.to_dict(), headers={"Authorization": "Bearer wrong"}
            )
            assert r.status_code == 401
            assert (await client.get("/v1/policy")).status_code == 401
            assert await _version(client) == 1
            # without a workdir the swap still works and saves nothing
            r = await client.post("/v1/policy", json=GIANT.to_dict(), headers=AUTH)
            assert r.status_code == 200 and r.json()["file"] is None

    asyncio.run(go())
