"""A tiny two-model generative cascade behind the OpenAI-compatible app, on a free local port.

Imported as ``server.gen_harness``. The models are random-weight GPT-2 / Llama LMs with a
character tokenizer (``models/tiny_lms.py``); nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import uvicorn

from hybridserve.backends import bind_port
from hybridserve.models.generative_family import GenerativeFamily
from hybridserve.models.hf_causal import HFCausalLM
from hybridserve.runtime import EngineConfig
from hybridserve.runtime.genengine import GenerativeEngine
from hybridserve.server.openai_app import create_generative_app
from hybridserve.server.settings import ServerSettings
from hybridserve.tuning.policy import CascadePolicy, identity_calibrator
from models.tiny_lms import save_tiny

FAMILY = "tiny-lms"
#: Above every possible score: the small model's answer never stands.
ALWAYS_ESCALATE = 1.5
#: At or below every score: the small model's answer always stands.
NEVER_ESCALATE = 0.0


def save_family(root: Path) -> Path:
    """The two models' directories and a family YAML under ``root``; returns the YAML."""
    save_tiny(root / "small", "gpt2")
    save_tiny(root / "big", "llama")
    (root / "family.yaml").write_text(
        f"family: {FAMILY}\ntask: generate\nmax_new_tokens: 8\nmodels:\n"
        "  - {name: small, loader: hf-causal-lm, path: small}\n"
        "  - {name: big, loader: hf-causal-lm, path: big}\n"
    )
    return root / "family.yaml"


def load_family(root: Path) -> GenerativeFamily:
    """The two models of ``save_family(root)``, loaded on the CPU."""
    torch.set_num_threads(1)
    return GenerativeFamily(
        FAMILY,
        (HFCausalLM(root / "small", name="small"), HFCausalLM(root / "big", name="big")),
        max_new_tokens=8,
    )


def policy(threshold: float, temperature: float | None = None) -> CascadePolicy:
    """small → big, the small model's answer standing when its score reaches ``threshold``.

    With ``temperature``, the calibrators are ``sequence`` ones with that token temperature and
    identity maps (Platt a=1, b=0), so the score is the aggregate itself.
    """
    cal = identity_calibrator()
    if temperature is not None:
        maps = {
            a: {"method": "platt", "a": 1.0, "b": 0.0}
            for a in ("min", "mean", "prod", "q10", "q25", "q50")
        }
        cal = {
            "kind": "sequence",
            "state": {"temperature": temperature, "method": "platt", "maps": maps},
        }
    return CascadePolicy(
        family=FAMILY,
        chain=("small", "big"),
        thresholds=(threshold,),
        calibrators=(cal, cal),
        confidence="min",
        task="generate",
    )


#: Words the prompts of ``prompts`` are made of.
WORDS = ("in", "the", "beginning", "god", "created", "heaven", "and", "earth", "was", "void")


def prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` prompts of one to five words, the same for the same seed."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) for _ in range(n)]


def median_threshold(family: GenerativeFamily, texts: list[str], max_new_tokens: int = 8) -> float:
    """A threshold (token temperature 1) that half of ``texts``' small-model scores pass, so
    both models answer some: the midpoint of the two middle scores, never a tie."""
    from hybridserve.models.generative import GenerationParams

    params = GenerationParams(max_new_tokens=max_new_tokens)

    async def scores() -> list[float]:
        config = EngineConfig(warmup=False)
        async with GenerativeEngine(policy(0.0, 1.0), family, config, max_batch=8) as engine:
            done = await asyncio.gather(*(engine.complete(p, params) for p in texts))
        return sorted(c.confidence for c in done)

    got = asyncio.run(scores())
    mid = len(got) // 2
    return (got[mid - 1] + got[mid]) / 2


def make_engine(
    family: GenerativeFamily, threshold: float = NEVER_ESCALATE, **config: Any
) -> GenerativeEngine:
    return GenerativeEngine(
        policy(threshold), family, EngineConfig(**config), max_batch=8, max_wait_ms=2.0
    )


@contextmanager
def running_server(engine: GenerativeEngine, **settings: Any) -> Iterator[str]:
    """uvicorn serving the app on a free port in a thread; yields the base URL (``.../v1``)."""
    settings.setdefault("start_in_background", False)
    app = create_generative_app(engine, ServerSettings(**settings))
    sock = bind_port("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
