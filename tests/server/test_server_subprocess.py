"""`hybridserve serve` as a real process on 127.0.0.1: answers, auth, SIGTERM drains, exit 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from hybridserve.models import load_family
from runtime.cascade_fixtures import simulate, tiny_median_policy
from serve_process import free_port, serve_command, wait_ready

pytestmark = pytest.mark.integration

KEY = "subprocess-secret-token"


def test_serve_subprocess_answers_like_the_simulation_and_drains_on_sigterm(
    tmp_path: Path, tiny_family_yaml: Path, tiny_family_env: dict[str, str]
) -> None:
    family = load_family(config=tiny_family_yaml)
    x = family.split("test").x[:40]
    policy = tiny_median_policy(family, x)
    workdir = tmp_path / "wd"
    policy.save(workdir / "policy-ap.json")
    sim = simulate(policy, family, x)
    assert set(sim.model) == {"small", "big"}

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**tiny_family_env, "HYBRIDSERVE_API_KEY": KEY}
    proc = subprocess.Popen(
        [
            *serve_command(),
            "serve",
            "--workdir",
            str(workdir),
            "--config",
            str(tiny_family_yaml),
            "--port",
            str(port),
            "--closed-health",
            "--access-log",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        wait_ready(proc, url, headers=auth)  # closed health: readiness needs the token too
        assert httpx.get(f"{url}/v2/health/ready").status_code == 401
        assert httpx.post(f"{url}/v1/predict", json={"inputs": x[:1].tolist()}).status_code == 401

        async def load() -> list[httpx.Response | Exception]:
            async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client:

                async def one(i: int) -> httpx.Response:
                    return await client.post("/v1/predict", json={"inputs": [x[i].tolist()]})

                first = await one(0)
                assert first.status_code == 200
                tasks = [asyncio.create_task(one(i)) for i in range(1, len(x))]
                await asyncio.sleep(0.01)
                proc.send_signal(signal.SIGTERM)  # while requests are in flight
                return [first, *await asyncio.gather(*tasks, return_exceptions=True)]

        replies = asyncio.run(load())
        served = 0
        for i, reply in enumerate(replies):
            if isinstance(reply, Exception):  # refused after shutdown began: never accepted
                assert isinstance(reply, httpx.TransportError), reply
                continue
            assert reply.status_code == 200, reply.text
            answer = reply.json()["answers"][0]
            assert (answer["model"], answer["label"]) == (sim.model[i], sim.labels[i])
            assert tuple(answer["path"]) == sim.path[i]
            served += 1
        assert served >= 1
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert KEY not in out
        assert "POST /v1/predict" in out  # the access log was on, and still no token
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_refuses_a_missing_policy_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hybridserve.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--workdir", str(tmp_path / "empty"), "--port", str(free_port())])
    assert exit_info.value.code == 2
    assert "policy-ap.json: not found" in capsys.readouterr().err
