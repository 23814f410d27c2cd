"""Generative models: HFCausalLM on tiny random-weight GPT-2 and Llama models saved locally.

Nothing is downloaded: the tokenizer is a character vocabulary built here with ``tokenizers``,
the models are random ``save_pretrained`` directories, and the socket layer refuses connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytest.importorskip("transformers")

from hybridserve.errors import HybridServeError
from hybridserve.models.family import read_config
from hybridserve.models.generative import Generation, GenerationParams
from hybridserve.models.generative_family import load_generative_family
from hybridserve.models.hf_causal import HFCausalLM
from models.tiny_lms import CHARS, KINDS, PROMPTS, save_tiny, tiny_model

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("no_network")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_tiny(root / kind, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def lms(saved: dict[str, Path]) -> dict[str, HFCausalLM]:
    return {kind: HFCausalLM(path) for kind, path in saved.items()}


def assert_same(a: Generation, b: Generation) -> None:
    """Same tokens and text; log-probs equal up to float rounding (batch shapes differ)."""
    assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
    assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def tokens_until(lm: HFCausalLM, ids: tuple[int, ...], stop: str) -> int:
    """How many of ``ids`` it takes for their text to contain ``stop``."""
    return next(
        n
        for n in range(len(ids) + 1)
        if stop in lm.tokenizer.decode(ids[:n], skip_special_tokens=True)
    )


def reference_greedy(lm: HFCausalLM, prompt: str, steps: int) -> tuple[list[int], list[float]]:
    """Plain greedy loop: the whole sequence through the model each step, no cache, no padding."""
    ids = list(lm.tokenizer(prompt)["input_ids"])
    tokens, logprobs = [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = lm.model(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)))
            logits = logits.logits[0, -1].float()
            token = int(logits.argmax())
            tokens.append(token)
            logprobs.append(float(torch.log_softmax(logits, dim=-1)[token]))
            ids.append(token)
    return tokens, logprobs


@pytest.mark.parametrize("kind", KINDS)
def test_batched_greedy_equals_a_plain_loop_per_prompt(
    lms: dict[str, HFCausalLM], kind: str
) -> None:
    lm = lms[kind]
    params = GenerationParams(max_new_tokens=10, stop_at_eos=False)
    batch = lm.generate(PROMPTS, params)
    assert batch == lm.generate(PROMPTS, params)  # deterministic
    for prompt, gen in zip(PROMPTS, batch, strict=True):
        tokens, logprobs = reference_greedy(lm, prompt, 10)
        assert list(gen.token_ids) == tokens
        # the chosen tokens' log-probs are log_softmax of the model's own logits
        assert gen.logprobs == pytest.approx(logprobs, abs=1e-4)
        assert gen.finish_reason == "length" and gen.prompt_tokens == len(prompt)
        assert gen.text == lm.tokenizer.decode(tokens, skip_special_tokens=True)
        assert_same(lm.generate([prompt], params)[0], gen)


@pytest.mark.parametrize("kind", KINDS)
def test_stop_string_cuts_the_text(lms: dict[str, HFCausalLM], kind: str) -> None:
    lm = lms[kind]
    params = GenerationParams(max_new_tokens=12, stop_at_eos=False)
    full = lm.generate(PROMPTS[:1], params)[0]
    stop = full.text[3:5]
    cut = full.text.find(stop)
    got = lm.generate(PROMPTS[:1], replace(params, stop=(stop, "@@")))[0]
    assert got.finish_reason == "stop" and got.text == full.text[:cut]
    # every token up to the one completing the stop string, no more
    n = tokens_until(lm, full.token_ids, stop)
    assert got.token_ids == full.token_ids[:n] and got.logprobs == full.logprobs[:n]


def test_finished_prompts_leave_the_batch(lms: dict[str, HFCausalLM]) -> None:
    lm = lms["gpt2"]
    params = GenerationParams(max_new_tokens=8, stop_at_eos=False)
    alone = [lm.generate([p], params)[0] for p in PROMPTS[:2]]
    stop = alone[0].text[0]  # the first prompt stops early, the second must not
    assert stop not in alone[1].text
    n = tokens_until(lm, alone[0].token_ids, stop)
    sizes: list[int] = []
    hook = lm.model.register_forward_pre_hook(
        lambda _m, _a, kw: sizes.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        out = lm.generate(PROMPTS[:2], replace(params, stop=(stop,)))
    finally:
        hook.remove()
    assert out[0].finish_reason == "stop" and len(out[0].token_ids) == n < 8
    assert_same(out[1], alone[1])
    # one forward pass per generated token (the prompt's gives the first); two rows until the
    # first prompt's last token, one row after it
    assert sizes == [2] * n + [1] * (8 - n)


def test_eos_ends_a_request_and_is_not_in_the_text(
    tmp_path: Path, lms: dict[str, HFCausalLM]
) -> None:
    params = GenerationParams(max_new_tokens=6, stop_at_eos=False)
    greedy = lms["gpt2"].generate(PROMPTS[:1], params)[0]
    eos = greedy.token_ids[2]  # the model's config now also ends sequences at this token
    lm = HFCausalLM(save_tiny(tmp_path / "eos", "gpt2", eos=eos))
    got = lm.generate(PROMPTS[:1], replace(params, stop_at_eos=True))[0]
    first = next(i for i, t in enumerate(greedy.token_ids) if t in (eos, 0))  # <eos> is 0
    assert got.finish_reason == "eos" and got.token_ids == greedy.token_ids[: first + 1]
    assert got.text == lm.tokenizer.decode(greedy.token_ids[:first], skip_special_tokens=True)
    assert lm.generate(PROMPTS[:1], params)[0] == greedy


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_sampling_repeats_and_ignores_batch_neighbours(
    lms: dict[str, HFCausalLM], kind: str
) -> None:
    lm = lms[kind]
    params = GenerationParams(max_new_tokens=12, temperature=1.0, seed=7, stop_at_eos=False)
    first = lm.generate(PROMPTS, params)
    assert first == lm.generate(PROMPTS, params)
    assert_same(lm.generate(PROMPTS[:1], params)[0], first[0])
    other = lm.generate(PROMPTS, replace(params, seed=8))
    assert [g.token_ids for g in other] != [g.token_ids for g in first]
    greedy = lm.generate(PROMPTS, GenerationParams(max_new_tokens=12, stop_at_eos=False))
    assert [g.token_ids for g in first] != [g.token_ids for g in greedy]
    # a tiny top_p keeps only the most likely token: sampling becomes greedy
    narrow = lm.generate(PROMPTS, replace(params, top_p=1e-6))
    assert [g.token_ids for g in narrow] == [g.token_ids for g in greedy]


def test_top_logprobs_are_sorted_and_include_the_choice(lms: dict[str, HFCausalLM]) -> None:
    lm = lms["llama"]
    greedy = lm.generate(PROMPTS, GenerationParams(max_new_tokens=5, top_logprobs=3))
    sampled = lm.generate(
        PROMPTS, GenerationParams(max_new_tokens=5, top_logprobs=1000, temperature=2.0, seed=1)
    )
    for gen in greedy:
        assert gen.top_logprobs is not None and len(gen.top_logprobs) == len(gen.token_ids)
        for alts, token, lp in zip(gen.top_logprobs, gen.token_ids, gen.logprobs, strict=True):
            values = [a.logprob for a in alts]
            assert len(alts) == 3 and values == sorted(values, reverse=True)
            assert alts[0].token_id == token and alts[0].logprob == pytest.approx(lp)
            assert alts[0].text == lm.tokenizer.decode([token])
    for gen in sampled:
        assert gen.top_logprobs is not None
        for alts, token in zip(gen.top_logprobs, gen.token_ids, strict=True):
            assert len(alts) == lm.info.vocab_size  # k is capped at the vocabulary
            assert token in {a.token_id for a in alts}
    plain = lm.generate(PROMPTS[:1], GenerationParams(max_new_tokens=2))[0]
    assert plain.top_logprobs is None


def test_length_and_zero_tokens(lms: dict[str, HFCausalLM]) -> None:
    lm = lms["gpt2"]
    got = lm.generate(PROMPTS, GenerationParams(max_new_tokens=3, stop_at_eos=False))
    assert all(len(g.token_ids) == 3 and g.finish_reason == "length" for g in got)
    none = lm.generate(PROMPTS[:1], GenerationParams(max_new_tokens=0))[0]
    assert none.token_ids == () and none.text == "" and none.finish_reason == "length"
    # the context (64 positions) ends a generation too
    long = lm.generate(["a" * 60], GenerationParams(max_new_tokens=20, stop_at_eos=False))[0]
    assert len(long.token_ids) == 4 and long.finish_reason == "length"
    assert lm.generate([], GenerationParams()) == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_new_tokens", -1),
        ("max_new_tokens", 2.5),
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_logprobs", -2),
        ("seed", -1),
        ("stop", ("",)),
    ],
)
def test_bad_params_are_refused_naming_the_field(field: str, value: object) -> None:
    name = "stop strings" if field == "stop" else field
    with pytest.raises(HybridServeError, match=name):
        GenerationParams(**{field: value})


def test_prompts_the_model_cannot_read_are_refused(lms: dict[str, HFCausalLM]) -> None:
    with pytest.raises(HybridServeError, match="prompt 1 has 70 tokens"):
        lms["gpt2"].generate(["ok", "a" * 70], GenerationParams())
    with pytest.raises(HybridServeError, match="prompt 0 is empty"):
        lms["gpt2"].generate([""], GenerationParams())


def test_missing_or_incomplete_directories_are_one_line_errors(
    tmp_path: Path, saved: dict[str, Path]
) -> None:
    for path, match in [
        (tmp_path / "absent", "directory not found"),
        (tmp_path, "no config.json"),
    ]:
        with pytest.raises(HybridServeError, match=match) as err:
            HFCausalLM(path)
        assert "\n" not in str(err.value)
    no_tok = tmp_path / "no-tokenizer"
    tiny_model("gpt2", len(CHARS) + 2).save_pretrained(no_tok)
    with pytest.raises(HybridServeError, match="tokenizer") as err:
        HFCausalLM(no_tok)
    assert "\n" not in str(err.value)
    with pytest.raises(HybridServeError, match="dtype must be one of"):
        HFCausalLM(saved["gpt2"], dtype="int3")


def test_info_and_fingerprint(lms: dict[str, HFCausalLM], saved: dict[str, Path]) -> None:
    lm = lms["gpt2"]
    params = sum(p.numel() for p in lm.model.parameters())
    assert lm.info.params == params and lm.info.weight_bytes == 4 * params
    assert lm.info.kv_bytes_per_token == 2 * 2 * 32 * 4  # K and V, 2 layers, width 32, fp32
    assert lm.info.max_context == 64 and lm.info.vocab_size == len(CHARS) + 2
    assert lms["llama"].info.kv_bytes_per_token == 2 * 2 * 2 * 8 * 4  # 2 KV heads of 8
    assert lm.fingerprint == HFCausalLM(saved["gpt2"]).fingerprint != lms["llama"].fingerprint


def write_family(tmp_path: Path, saved: dict[str, Path], **extra: Any) -> Path:
    config = {
        "family": "tiny-lm",
        "task": "generate",
        "data": {"val": "val.jsonl", "test": "test.jsonl"},
        "models": [
            {"name": "small", "loader": "hf-causal-lm", "path": str(saved["gpt2"])},
            {"name": "giant", "loader": "hf-causal-lm", "path": "llama", "dtype": "float32"},
        ],
        **extra,
    }
    link = tmp_path / "llama"
    if not link.exists():
        link.symlink_to(saved["llama"])  # a path relative to the YAML
    path = tmp_path / "family.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_family_yaml_loads_generative_models(
    tmp_path: Path, saved: dict[str, Path], lms: dict[str, HFCausalLM]
) -> None:
    family = load_generative_family(write_family(tmp_path, saved))
    assert family.name == "tiny-lm" and family.names == ("small", "giant")
    assert family.data_paths["val"] == (tmp_path / "val.jsonl").resolve()
    params = GenerationParams(max_new_tokens=6)
    assert family.giant.generate(PROMPTS, params) == lms["llama"].generate(PROMPTS, params)
    assert family.model("small").generate(PROMPTS, params) == lms["gpt2"].generate(PROMPTS, params)
    # classifier-only steps refuse it in one line
    with pytest.raises(HybridServeError, match="is generative"):
        read_config(tmp_path / "family.yaml")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c["models"][0].update(loader="gguf"), r"models\.0\.loader"),
        (lambda c: c["models"][0].pop("path"), r"models\.0\.path: Field required"),
        (lambda c: c["models"][1].update(dtype="int8"), r"models\.1\.dtype"),
        (lambda c: c["models"][1].update(path="nowhere"), "directory not found"),
        (lambda c: c.update(models=c["models"][:1]), "models: List should have at least 2"),
        (lambda c: c.pop("task"), "needs 'task: generate'"),
    ],
)
def test_bad_generative_family_yaml_is_one_line(
    tmp_path: Path, saved: dict[str, Path], change: Any, match: str
) -> None:
    path = write_family(tmp_path, saved)
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(HybridServeError, match=match) as err:
        load_generative_family(path)
    assert "\n" not in str(err.value)


@pytest.fixture(autouse=True, scope="module")
def _quiet_progress() -> Iterator[None]:
    """transformers draws progress bars on load; they only clutter the test log."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    yield
    hf_logging.enable_progress_bar()
