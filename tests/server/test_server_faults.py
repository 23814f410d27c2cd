"""Faults of the engine as the server shows them: a hung model call, an engine that cannot start.

In-process (httpx + ASGI lifespan) for readiness and statuses; ``hybridserve serve`` as a real
process for what only a process shows: it exits, with what code, and how fast.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager

from hybridserve.models import Model, load_family
from hybridserve.runtime import Engine, EngineConfig
from hybridserve.server import ServerSettings, create_app
from hybridserve.server.app import engine_failure, on_engine_failure
from runtime.cascade_fixtures import (
    Gate,
    clean_inputs,
    make_family,
    make_inputs,
    make_policy,
    one_replica_plan,
    tiny_median_policy,
    tiny_models,
)
from serve_process import free_port, serve_command, wait_ready

pytestmark = pytest.mark.integration

#: Test-only loaders: the tiny family's ``small``, hanging on an input holding ``HANG``, or
#: raising on every batch (so the engine's warm-up fails).
FAULTY_MODELS = """
import time

from torch import nn

from tiny_family import small

HANG = 99.0


class _Hangs(nn.Sequential):
    def forward(self, x):
        if bool((x == HANG).any()):
            time.sleep(3600)
        return super().forward(x)


class _Raises(nn.Sequential):
    def forward(self, x):
        raise RuntimeError("the weights are corrupt")


def hangs_small():
    return _Hangs(*small())


def broken_small():
    return _Raises(*small())
"""


def _engine(gate: Gate, config: EngineConfig) -> Engine:
    models: list[Model] = list(tiny_models())
    models[0] = gate.wrap(models[0])
    policy = make_policy(make_family(), make_inputs(100))
    return Engine(policy, one_replica_plan(), make_family(models), config)


def test_a_hung_replica_gives_504_then_readiness_503_until_it_is_replaced() -> None:
    gate = Gate()  # closed: every call of the entry model hangs, the replacement's warm-up too
    config = EngineConfig(warmup=False, energy=False, batch_timeout_s=0.3, max_batch_size=8)
    x = clean_inputs(2)

    async def go() -> None:
        app = create_app(_engine(gate, config), ServerSettings(start_in_background=False))
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://t"
            ) as client,
        ):
            try:
                assert (await client.get("/v2/health/ready")).status_code == 200
                r = await client.post("/v1/predict", json={"inputs": x[:1].tolist()})
                assert r.status_code == 504, r.text
                assert "watchdog" in r.json()["error"]
                ready = await client.get("/v2/health/ready")
                assert ready.status_code == 503
                assert "no working replica of model 'small'" in ready.json()["detail"]
                r = await client.post("/v1/predict", json={"inputs": x[:1].tolist()})
                assert r.status_code == 503 and r.headers["retry-after"] == "1"
                replicas = (await client.get("/v1/policy")).json()["engine"]["positions"][0]
                assert replicas["hung_batches"] == 1
            finally:
                gate.open()
            for _ in range(500):
                if (await client.get("/v2/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.02)
            r = await client.post("/v1/predict", json={"inputs": x.tolist()})
            assert r.status_code == 200, r.text

    asyncio.run(go())


@pytest.mark.parametrize("background", [True, False])
def test_an_engine_that_cannot_start_tells_the_failure_hook_and_readiness(
    background: bool,
) -> None:
    def broken() -> Engine:
        raise RuntimeError("no such device cuda:7")

    told: list[str] = []

    async def go() -> tuple[int, str]:
        app = create_app(broken, ServerSettings(start_in_background=background))
        on_engine_failure(app, told.append)
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://t"
            ) as client,
        ):
            r = await client.get("/v2/health/ready")
            assert engine_failure(app) == told[0]
            return r.status_code, r.json()["detail"]

    status, detail = asyncio.run(go())
    assert told == ["engine could not be built: no such device cuda:7"]
    assert (status, detail) == (503, told[0])


def _faulty_workdir(tmp_path: Path, tiny_family_yaml: Path, loader: str) -> tuple[Path, Path]:
    """A workdir with the tiny family's policy, and a family YAML whose ``small`` is faulty."""
    family = load_family(config=tiny_family_yaml)
    policy = tiny_median_policy(family, family.split("test").x[:40])
    workdir = tmp_path / "wd"
    policy.save(workdir / "policy-ap.json")
    (tmp_path / "faulty_models.py").write_text(FAULTY_MODELS)
    config = yaml.safe_load(tiny_family_yaml.read_text())
    config["models"][0]["loader"] = f"faulty_models:{loader}"
    faulty = tiny_family_yaml.with_name("faulty.yaml")
    faulty.write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir, faulty


def _serve(
    workdir: Path, family_yaml: Path, port: int, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *serve_command(),
            "serve",
            "--workdir",
            str(workdir),
            "--config",
            str(family_yaml),
            "--port",
            str(port),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _env(tmp_path: Path, tiny_family_env: dict[str, str]) -> dict[str, str]:
    return {**tiny_family_env, "PYTHONPATH": f"{tmp_path}:{tiny_family_env['PYTHONPATH']}"}


def test_serve_exits_2_within_seconds_when_the_engine_cannot_start(
    tmp_path: Path, tiny_family_yaml: Path, tiny_family_env: dict[str, str]
) -> None:
    workdir, faulty = _faulty_workdir(tmp_path, tiny_family_yaml, "broken_small")
    proc = _serve(workdir, faulty, free_port(), _env(tmp_path, tiny_family_env))
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last == "error: engine failed to start: the weights are corrupt", err
    assert "Traceback" not in err


def test_sigterm_ends_serve_within_the_drain_timeout_while_a_model_call_hangs(
    tmp_path: Path, tiny_family_yaml: Path, tiny_family_env: dict[str, str]
) -> None:
    workdir, faulty = _faulty_workdir(tmp_path, tiny_family_yaml, "hangs_small")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(workdir, faulty, port, _env(tmp_path, tiny_family_env), "--timeout-s", "3")
    try:
        wait_ready(proc, url)

        async def hang_then_term() -> httpx.Response:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                hung = asyncio.create_task(
                    client.post("/v1/predict", json={"inputs": [[99.0] * 6]})
                )
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                return await hung

        t0 = time.monotonic()
        reply = asyncio.run(hang_then_term())
        assert reply.status_code == 504  # its deadline passed; the model never answered
        proc.communicate(timeout=20)  # the drain timeout is 30 s; the hung thread is abandoned
        assert time.monotonic() - t0 < 20
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
