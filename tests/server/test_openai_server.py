"""The OpenAI-compatible server of a generative cascade, driven by the official ``openai`` client.

Two tiny random-weight LMs (``small`` → ``big``) on a free local port; thresholds chosen so an
answer must stand at ``small`` (θ = 0) or must escalate to ``big`` (θ above any score).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from hybridserve.models.generative import GenerationParams
from hybridserve.models.generative_family import GenerativeFamily
from server.gen_harness import (
    ALWAYS_ESCALATE,
    FAMILY,
    NEVER_ESCALATE,
    load_family,
    make_engine,
    running_server,
    save_family,
)

pytestmark = pytest.mark.integration

PROMPT = "in the beginning"


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> GenerativeFamily:
    root = tmp_path_factory.mktemp("lms")
    save_family(root)
    return load_family(root)


@pytest.fixture
def standing(family: GenerativeFamily) -> Iterator[openai.OpenAI]:
    """A client of a server whose first model's answers always stand."""
    with running_server(make_engine(family, NEVER_ESCALATE)) as url:
        yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def test_completion_stands_at_the_first_model(
    standing: openai.OpenAI, family: GenerativeFamily
) -> None:
    r = standing.completions.create(model=FAMILY, prompt=PROMPT, max_tokens=5)
    assert r.object == "text_completion" and r.model == FAMILY and r.id.startswith("cmpl-")
    [c] = r.choices
    want = family.model("small").generate([PROMPT], GenerationParams(max_new_tokens=5))[0]
    assert c.text == want.text and c.index == 0
    assert c.finish_reason == ("length" if want.finish_reason == "length" else "stop")
    ext = c.model_extra["hybridserve"]  # type: ignore[index]
    assert ext["model"] == "small" and ext["path"] == ["small"]
    assert 0.0 <= ext["confidence"] <= 1.0
    assert r.usage is not None and r.usage.prompt_tokens == want.prompt_tokens
    assert r.usage.completion_tokens == len(want.token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_escalates_to_the_giant(family: GenerativeFamily) -> None:
    with running_server(make_engine(family, ALWAYS_ESCALATE)) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        r = client.completions.create(model=FAMILY, prompt=[PROMPT, "and"], max_tokens=4)
        metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    want = family.model("big").generate([PROMPT, "and"], GenerationParams(max_new_tokens=4))
    assert [c.text for c in r.choices] == [g.text for g in want]
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert c.model_extra["hybridserve"]["path"] == ["small", "big"]  # type: ignore[index]
        assert c.model_extra["hybridserve"]["model"] == "big"  # type: ignore[index]
    assert 'hybridserve_model_reach_total{model="big"} 2.0' in metrics
    assert 'hybridserve_generated_tokens_total{model="small"}' in metrics


def test_streamed_completion_matches_the_plain_one(standing: openai.OpenAI) -> None:
    plain = standing.completions.create(model=FAMILY, prompt=[PROMPT, "and"], max_tokens=6)
    chunks = list(
        standing.completions.create(model=FAMILY, prompt=[PROMPT, "and"], max_tokens=6, stream=True)
    )
    texts = {i: "" for i in range(2)}
    for chunk in chunks:
        assert chunk.object == "text_completion" and chunk.id == chunks[0].id
        for c in chunk.choices:
            texts[c.index] += c.text
    assert [texts[0], texts[1]] == [c.text for c in plain.choices]
    assert {c.finish_reason for ch in chunks for c in ch.choices} <= {"stop", "length"}


def test_stream_is_server_sent_events_ending_in_done(standing: openai.OpenAI) -> None:
    url = str(standing.base_url).rstrip("/") + "/completions"
    body = {"model": FAMILY, "prompt": PROMPT, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", url, json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["choices"][0]["hybridserve"]["model"] == "small"


def test_stop_strings_cut_the_text(standing: openai.OpenAI) -> None:
    prompts = [PROMPT, "and", "the earth was without form", "a"]
    r = standing.completions.create(model=FAMILY, prompt=prompts, max_tokens=8)
    # a prompt whose completion is long enough to cut inside
    prompt, free = next((p, c) for p, c in zip(prompts, r.choices, strict=True) if len(c.text) > 2)
    stop = free.text[2]  # a character the model generates third
    cut = standing.completions.create(model=FAMILY, prompt=prompt, max_tokens=8, stop=[stop])
    assert cut.choices[0].text == free.text[: free.text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_logprobs_in_the_legacy_shape(standing: openai.OpenAI) -> None:
    r = standing.completions.create(model=FAMILY, prompt=PROMPT, max_tokens=5, logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert "".join(lp.tokens) == c.text
    assert lp.text_offset is not None and lp.text_offset[0] == len(PROMPT)
    assert lp.top_logprobs is not None and len(lp.top_logprobs) == len(lp.tokens)
    for tok, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 2 and logprob <= 0.0
        assert max(top.values()) == pytest.approx(logprob)  # greedy: the most likely token
        assert top.get(tok) == pytest.approx(logprob)


def test_seeded_sampling_repeats(standing: openai.OpenAI) -> None:
    def once() -> str:
        r = standing.completions.create(
            model=FAMILY, prompt=PROMPT, max_tokens=8, temperature=1.5, top_p=0.9, seed=7
        )
        return r.choices[0].text

    assert once() == once()


def test_bad_requests_get_openai_error_bodies(standing: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        standing.completions.create(model=FAMILY, prompt=PROMPT, n=2)
    assert err.value.status_code == 400 and err.value.body["param"] == "n"  # type: ignore[index]
    assert err.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        standing.completions.create(model=FAMILY, prompt=PROMPT, temperature=-1)
    assert err.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        standing.completions.create(model=FAMILY, prompt=PROMPT, logprobs=9)
    with pytest.raises(openai.NotFoundError) as missing:
        standing.completions.create(model="gpt-4", prompt=PROMPT)
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        standing.chat.completions.create(model=FAMILY, messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.BadRequestError, match="tokens"):
        standing.completions.create(model=FAMILY, prompt="a" * 100)  # past the 64-token context
    assert [m.id for m in standing.models.list()] == [FAMILY]


def test_api_key_is_required_when_set(family: GenerativeFamily) -> None:
    with running_server(make_engine(family), api_key="sekret") as url:
        wrong = openai.OpenAI(base_url=url, api_key="guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            wrong.completions.create(model=FAMILY, prompt=PROMPT, max_tokens=2)
        assert err.value.body["type"] == "authentication_error"  # type: ignore[index]
        right = openai.OpenAI(base_url=url, api_key="sekret", max_retries=0)
        assert right.completions.create(model=FAMILY, prompt=PROMPT, max_tokens=2).choices
        assert httpx.get(url.removesuffix("/v1") + "/v2/health/ready").json()["ready"] is True


def test_200_concurrent_requests_are_all_answered_or_refused(family: GenerativeFamily) -> None:
    engine = make_engine(family, 0.3, queue_size=64)

    async def run(url: str) -> list[object]:
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)

        async def one(i: int) -> object:
            try:
                r = await client.completions.create(
                    model=FAMILY, prompt=f"and {'ab'[i % 2]}", max_tokens=1 + i % 4
                )
                return r.choices[0].model_extra["hybridserve"]["model"]  # type: ignore[index]
            except openai.APIStatusError as err:
                return err.status_code

        return list(await asyncio.gather(*(one(i) for i in range(200))))

    with running_server(engine) as url:
        outcomes = asyncio.run(run(url))
    answered = [o for o in outcomes if o in ("small", "big")]
    refused = [o for o in outcomes if o in (503, 504)]
    assert len(answered) + len(refused) == 200, outcomes
    assert answered
    assert engine.inflight == 0
