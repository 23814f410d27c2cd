"""A generative server under load and shutdown: nothing accepted is lost.

2,000 completions from 64 concurrent clients (the official ``openai`` client) are each answered
or explicitly refused (503/504); ``hybridserve serve`` of a generative family, as a real
process, finishes the generations in flight when SIGTERM arrives and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from hybridserve.models.generative_family import GenerativeFamily
from serve_process import free_port, serve_command, wait_ready
from server.gen_harness import FAMILY, load_family, make_engine, running_server, save_family

pytestmark = pytest.mark.integration

REQUESTS = 2000
CLIENTS = 64


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen-load")
    save_family(root)
    return root


@pytest.fixture(scope="module")
def family(family_dir: Path) -> GenerativeFamily:
    return load_family(family_dir)


def test_2000_completions_from_64_clients_are_all_answered_or_refused(
    family: GenerativeFamily,
) -> None:
    # half the prompts escalate to the big model; a small queue makes refusals possible
    engine = make_engine(family, 0.3, queue_size=48)

    async def run(url: str) -> list[object]:
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        limit = asyncio.Semaphore(CLIENTS)

        async def one(i: int) -> object:
            async with limit:
                try:
                    r = await client.completions.create(
                        model=FAMILY, prompt=f"and {'ab'[i % 2]}", max_tokens=1 + i % 4
                    )
                except openai.APIStatusError as err:
                    return err.status_code
            extra = r.choices[0].model_extra or {}
            return extra["hybridserve"]["model"]

        return list(await asyncio.gather(*(one(i) for i in range(REQUESTS))))

    with running_server(engine) as url:
        outcomes = asyncio.run(run(url))
    answered = sum(o in ("small", "big") for o in outcomes)
    refused = sum(o in (503, 504) for o in outcomes)
    assert answered + refused == REQUESTS, {o for o in outcomes if o not in ("small", "big")}
    # how many are refused depends on the machine's speed (a refused client asks again at
    # once); that each one is answered or refused, and some answered, does not
    assert answered >= CLIENTS
    assert engine.inflight == 0


def test_sigterm_finishes_generations_in_flight_and_exits_0(
    tmp_path: Path, family_dir: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            *serve_command(),
            "serve",
            "--config",
            str(family_dir / "family.yaml"),
            "--workdir",
            str(tmp_path / "wd"),
            "--giant-only",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(proc, url)

        signalled = [0.0]

        async def load() -> list[tuple[httpx.Response, float] | BaseException]:
            async with httpx.AsyncClient(base_url=f"{url}/v1", timeout=60) as client:

                async def one(i: int) -> tuple[httpx.Response, float]:
                    body = {"model": FAMILY, "prompt": f"and {i}", "max_tokens": 8}
                    reply = await client.post("/completions", json=body)
                    return reply, time.monotonic()

                first, _ = await one(0)
                assert first.status_code == 200, first.text
                tasks = [asyncio.create_task(one(i)) for i in range(1, 64)]
                await asyncio.sleep(0.02)
                signalled[0] = time.monotonic()
                proc.send_signal(signal.SIGTERM)  # while generations are in flight
                return list(await asyncio.gather(*tasks, return_exceptions=True))

        replies = asyncio.run(load())
        after_signal = 0
        for reply in replies:
            if isinstance(reply, BaseException):  # refused once shutdown began: never accepted
                assert isinstance(reply, httpx.TransportError), reply
                continue
            response, done_at = reply
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["finish_reason"] in ("length", "stop")
            after_signal += done_at > signalled[0]
        # generations in flight when the signal came were finished, not dropped
        assert after_signal >= 1
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
