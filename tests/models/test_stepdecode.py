"""Iteration-level batching: StepDecoder rows decode exactly as HFCausalLM.generate decodes them,
whichever rows join or leave the batch meanwhile (tiny random GPT-2 and Llama models)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from hybridserve.errors import HybridServeError
from hybridserve.models.generative import Generation, GenerationParams
from hybridserve.models.hf_causal import HFCausalLM
from hybridserve.models.stepdecode import StepDecoder, decode_continuous
from models.tiny_lms import KINDS, PROMPTS, save_tiny

pytestmark = pytest.mark.unit

MORE = ["let there be light", "god", "and the evening and the morning were the first day"]


@pytest.fixture(scope="module", params=KINDS)
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HFCausalLM:
    torch.set_num_threads(1)
    kind = str(request.param)
    return HFCausalLM(save_tiny(tmp_path_factory.mktemp(kind) / kind, kind))


def same(a: Generation, b: Generation) -> None:
    assert (a.token_ids, a.text, a.finish_reason, a.prompt_tokens) == (
        b.token_ids,
        b.text,
        b.finish_reason,
        b.prompt_tokens,
    )
    assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def run_all(dec: StepDecoder, out: dict[int, Generation]) -> None:
    while len(dec):
        out.update(dec.step())
    out.update(dec.step())


def test_staggered_joins_match_generate(lm: HFCausalLM) -> None:
    short = GenerationParams(max_new_tokens=5, stop_at_eos=False)
    long = GenerationParams(max_new_tokens=20, stop_at_eos=False, logprob_temperature=2.0)
    dec = StepDecoder(lm)
    out: dict[int, Generation] = {}
    first = dec.add([PROMPTS[2]], long)
    for _ in range(3):
        out.update(dec.step())
    second = dec.add(PROMPTS[:2], short)  # joins a batch already 3 tokens in, shorter prompts
    for _ in range(7):
        out.update(dec.step())
    assert set(second) <= set(out)  # the short ones left while the long one runs on
    third = dec.add(MORE, long)  # a longer prompt widens the running cache
    run_all(dec, out)
    for rid, prompt, params in [
        (first[0], PROMPTS[2], long),
        (second[0], PROMPTS[0], short),
        (second[1], PROMPTS[1], short),
        *((r, p, long) for r, p in zip(third, MORE, strict=True)),
    ]:
        same(out[rid], lm.generate([prompt], params)[0])
    assert out[first[0]].calibrated_logprobs is not None
    assert out[first[0]].calibrated_logprobs == pytest.approx(
        lm.generate([PROMPTS[2]], long)[0].calibrated_logprobs, abs=1e-4
    )


def test_stop_eos_and_context_limit_match_generate(lm: HFCausalLM) -> None:
    free = lm.generate([MORE[0]], GenerationParams(max_new_tokens=12, stop_at_eos=False))[0]
    stop = free.text[4:6]
    cases = [
        GenerationParams(max_new_tokens=12, stop=(stop,)),
        GenerationParams(max_new_tokens=12, top_logprobs=3),
        GenerationParams(max_new_tokens=200, stop_at_eos=False),  # the 64-position limit
    ]
    dec = StepDecoder(lm)
    out: dict[int, Generation] = {}
    rids = [dec.add([MORE[0]], p)[0] for p in cases]
    run_all(dec, out)
    want = [lm.generate([MORE[0]], p)[0] for p in cases]
    for rid, w in zip(rids, want, strict=True):
        same(out[rid], w)
    assert out[rids[0]].finish_reason == "stop"
    got_top = out[rids[1]].top_logprobs
    assert got_top is not None and want[1].top_logprobs is not None
    assert [[t.token_id for t in pos] for pos in got_top] == [
        [t.token_id for t in pos] for pos in want[1].top_logprobs
    ]
    assert out[rids[2]].finish_reason == "length"
    assert len(out[rids[2]].token_ids) + out[rids[2]].prompt_tokens == lm.max_context


def test_drop_leaves_the_others_unchanged(lm: HFCausalLM) -> None:
    params = GenerationParams(max_new_tokens=10, stop_at_eos=False)
    dec = StepDecoder(lm)
    rids = dec.add(MORE, params)
    out: dict[int, Generation] = {}
    out.update(dec.step())
    wide = dec.width
    dec.drop([rids[2]])  # the longest prompt leaves: its padding columns are trimmed
    assert len(dec) == 2
    assert dec.width == max(len(lm.encode([p])[0]) for p in MORE[:2]) + 1 < wide
    run_all(dec, out)
    assert set(out) == set(rids[:2])
    for rid, prompt in zip(rids[:2], MORE[:2], strict=True):
        same(out[rid], lm.generate([prompt], params)[0])
    with pytest.raises(HybridServeError, match="no live row"):
        dec.drop([rids[0]])


def test_decode_continuous_matches_generate_and_seeds(lm: HFCausalLM) -> None:
    prompts = PROMPTS + MORE
    params = [
        GenerationParams(max_new_tokens=3 if i % 2 else 15, stop_at_eos=False)
        for i in range(len(prompts))
    ]
    got = decode_continuous(lm, prompts, params, max_batch=2)
    for g, prompt, p in zip(got, prompts, params, strict=True):
        same(g, lm.generate([prompt], p)[0])
    sampled = GenerationParams(max_new_tokens=8, temperature=1.0, seed=7, stop_at_eos=False)
    # one add of all prompts is the very batch generate builds: the same seeded samples
    assert [g.token_ids for g in decode_continuous(lm, PROMPTS, sampled, max_batch=8)] == [
        g.token_ids for g in lm.generate(PROMPTS, sampled)
    ]


def test_zero_budget_and_bad_input(lm: HFCausalLM) -> None:
    dec = StepDecoder(lm)
    (rid,) = dec.add(["and"], GenerationParams(max_new_tokens=0))
    assert len(dec) == 0
    assert dec.step() == {rid: Generation("", (), (), "length", 3)}
    with pytest.raises(HybridServeError, match="params"):
        dec.add(["a", "b"], [GenerationParams()])
    with pytest.raises(HybridServeError, match="max_batch"):
        decode_continuous(lm, ["a"], GenerationParams(), max_batch=0)
