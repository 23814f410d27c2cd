"""The kjv-gpt family's pieces, on tiny synthetic corpora (the real family never trains here)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hybridserve.cli import main
from hybridserve.errors import HybridServeError
from hybridserve.models.zoo.kjv_gpt import architecture, corpus, data, prompts, tokenizer
from hybridserve.models.zoo.kjv_gpt.evaluate import greedy_words, next_word_accuracy
from hybridserve.models.zoo.kjv_gpt.family import _export
from hybridserve.models.zoo.kjv_gpt.train import Recipe, Trainer

pytestmark = pytest.mark.unit

TEXT = "the cat sat on the mat and the dog lay on the rug. " * 40


def _chapters(n_books: int = 5, n_chapters: int = 40) -> list[corpus.Chapter]:
    verses = [
        {"book": f"Book{b}", "chapter": c, "verse": v, "text": f"verse {v} of {b}:{c}"}
        for b in range(n_books)
        for c in range(1, n_chapters + 1)
        for v in range(1, 4)
    ]
    return corpus.chapters_from_verses(verses)


def test_chapters_join_their_verses_in_order() -> None:
    chapters = _chapters(1, 2)
    assert [c.key for c in chapters] == ["Book0 1", "Book0 2"]
    assert chapters[0].text == "verse 1 of 0:1 verse 2 of 0:1 verse 3 of 0:1"


def test_the_chapter_split_has_no_overlap_and_is_deterministic() -> None:
    chapters = _chapters()
    split = corpus.split_chapters(chapters, seed=0)
    keys = {s: {c.key for c in split[s]} for s in corpus.SPLITS}
    assert sum(len(k) for k in keys.values()) == len(chapters) == 200
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    assert all(keys[s] for s in corpus.SPLITS)
    # same seed, any order → same split; another seed → another split
    again = corpus.split_chapters(list(reversed(chapters)), seed=0)
    assert {s: {c.key for c in again[s]} for s in corpus.SPLITS} == keys
    other = corpus.split_chapters(chapters, seed=1)
    assert {c.key for c in other["val"]} != keys["val"]


def test_fortunes_split_on_percent_lines_and_collapse_whitespace() -> None:
    raw = "A stitch in time\n  saves nine.\n%\nSecond one.\n%\n"
    assert corpus.parse_fortunes(raw) == ["A stitch in time saves nine.", "Second one."]


def test_the_tokenizer_round_trips_text(tmp_path: Path) -> None:
    tok = tokenizer.train_tokenizer([TEXT], vocab_size=300)
    sample = "The LORD's mat, unseen: naïve 42!"
    assert tok.decode(tok.encode(sample).ids) == sample
    tokenizer.save_tokenizer(tok, tmp_path)
    auto = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert auto.decode(auto(sample)["input_ids"]) == sample
    assert auto.eos_token == tokenizer.EOS
    # frequent words with their leading space become single tokens
    assert tok.encode(" mat").tokens == ["Ġmat"]


def test_first_word_stops_at_the_word_boundary() -> None:
    assert prompts.first_word(" mat. And") == "mat"
    assert prompts.first_word("LORD's") == "LORD"
    assert prompts.first_word(", and") == ""
    assert prompts.is_correct("  rug", "rug") and not prompts.is_correct(" rugs", "rug")


def test_prompts_end_right_before_their_answer_within_the_document() -> None:
    docs = [("a", TEXT), ("b", "word " * 200)]
    made = prompts.make_prompts(docs, 50, seed=3, min_chars=30, max_chars=80)
    assert len(made) == 50
    assert made == prompts.make_prompts(docs, 50, seed=3, min_chars=30, max_chars=80)
    for p in made:
        text = dict(docs)[p.source]
        assert 30 <= len(p.prompt) <= 80
        assert f"{p.prompt} {p.answer}" in text
        assert p.answer.isalpha() and not p.prompt.startswith(" ")


def test_too_few_words_for_the_prompts_is_an_error() -> None:
    with pytest.raises(HybridServeError, match="eligible"):
        prompts.make_prompts([("a", "short text here")], 5, seed=0)


def test_a_prompt_line_without_an_answer_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"prompt": "a b", "answer": "c"}) + "\n")
        f.write(json.dumps({"prompt": "a b"}) + "\n")
    with pytest.raises(HybridServeError, match=r"p\.jsonl\.gz:2: .*answer"):
        prompts.read_jsonl_gz(path)


@pytest.mark.parametrize("name", data.PROMPT_FILES)
def test_the_shipped_prompt_files_parse_and_have_5000_rows(name: str) -> None:
    rows = data.load_prompts(name)
    assert len(rows) >= 5000
    assert all(r.answer.isalpha() and 0 < len(r.prompt) <= prompts.MAX_CHARS for r in rows)
    # many different words are asked for, from many documents
    assert len({r.answer for r in rows}) > 500 and len({r.source for r in rows}) > 50
    if name != "shift":
        # every prompt comes from a chapter of its own split, so training never saw it
        assert {corpus.split_of(r.source) for r in rows} == {name}
    assert data.prompt_path(name).stat().st_size < 1_000_000


def test_the_family_grows_in_compute_per_token() -> None:
    macs = []
    for name, size in architecture.SIZES.items():
        config = architecture.gpt2_config(name)
        assert config.n_embd == size.width and config.n_embd % config.n_head == 0
        # per token: 12·d² per layer plus the tied output projection
        macs.append(12 * size.width**2 * size.layers + size.width * config.vocab_size)
    assert macs == sorted(macs) and macs[-1] / macs[0] >= 20


def _trainer(tokens: torch.Tensor, vocab: int, seed: int = 0) -> Trainer:
    recipe = Recipe(epochs=50, lr=5e-3, batch_size=8, seq_len=32, warmup_steps=2)
    return Trainer("tiny", recipe, tokens, seed, vocab)


def _tokens(tok_text: str = TEXT) -> tuple[torch.Tensor, int, tokenizer.Tokenizer]:
    tok = tokenizer.train_tokenizer([tok_text], vocab_size=300)
    return torch.tensor(tok.encode(tok_text).ids), tok.get_vocab_size(), tok


def test_training_resumes_from_its_checkpoint_to_the_same_state(tmp_path: Path) -> None:
    tokens, vocab, _ = _tokens()
    straight = _trainer(tokens, vocab)
    straight.run(until=6)
    interrupted = _trainer(tokens, vocab)
    interrupted.run(until=3)
    interrupted.save(tmp_path / "tiny.pt")
    torch.manual_seed(1234)  # whatever the process did meanwhile must not matter
    resumed = _trainer(tokens, vocab)
    resumed.load(tmp_path / "tiny.pt")
    assert resumed.step == 3
    resumed.run(until=6)
    for (k, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    assert straight.opt.param_groups[0]["lr"] == resumed.opt.param_groups[0]["lr"]


def test_a_checkpoint_of_another_seed_is_refused(tmp_path: Path) -> None:
    tokens, vocab, _ = _tokens()
    _trainer(tokens, vocab, seed=0).save(tmp_path / "tiny.pt")
    with pytest.raises(HybridServeError, match="another model"):
        _trainer(tokens, vocab, seed=1).load(tmp_path / "tiny.pt")


def test_a_saved_tiny_model_loads_locally_and_greedy_decodes_the_next_word(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(1)
    tokens, vocab, tok = _tokens()
    trainer = _trainer(tokens, vocab)
    trainer.run(until=120)  # enough for the repeated sentence to be memorised
    tok_dir = tmp_path / "tok"
    tokenizer.save_tokenizer(tok, tok_dir)
    _export(trainer, tok_dir, tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "tiny"), local_files_only=True)
    auto = AutoTokenizer.from_pretrained(str(tmp_path / "tiny"), local_files_only=True)
    assert (tmp_path / "tiny" / "model.safetensors").is_file()
    assert auto.get_vocab() == tok.get_vocab()
    cases = [
        ("on the rug. the cat sat on the", "mat"),
        ("mat and the dog lay on the", "rug"),
        ("the cat sat on the mat and the", "dog"),
    ]
    # prompts of different lengths share a left-padded batch: padding must not change a word
    words = greedy_words(model, tok, [c[0] for c in cases], batch_size=3)
    assert words == [greedy_words(model, tok, [c[0]])[0] for c in cases]
    assert words == [c[1] for c in cases]
    asked = [prompts.Prompt(p, a, "x") for p, a in cases]
    assert next_word_accuracy(model, tok, asked) == 1.0


def test_an_unknown_family_or_member_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for args in (["zoo", "train", "nope"], ["zoo", "train", "kjv-gpt", "--only", "huge"]):
        with pytest.raises(SystemExit) as ex:
            main(args)
        assert ex.value.code == 2
        err = capsys.readouterr().err
        assert len([x for x in err.splitlines() if x.strip()]) == 1 and "Traceback" not in err


def _small_family_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the family run at a synthetic corpus and a few-step recipe for ``tiny``."""
    from hybridserve.models.zoo.kjv_gpt import family

    chapters = [corpus.Chapter("Book", i, TEXT) for i in range(30)]
    monkeypatch.setattr(family, "load_chapters", lambda: chapters)
    asked = [prompts.Prompt("the cat sat on the", "mat", "Book 1")] * 3
    monkeypatch.setattr(family, "load_prompts", lambda name: asked)
    recipe = Recipe(epochs=0.5, lr=5e-3, batch_size=4, seq_len=32, warmup_steps=2)
    monkeypatch.setattr(family, "RECIPES", {"tiny": recipe})


def test_the_family_run_stops_on_request_and_resumes_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hybridserve.models.zoo.kjv_gpt import family

    _small_family_run(monkeypatch)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    family.STOP.set()  # as SIGTERM does: checkpoint at the next step, then return
    assert family.train_family(out, ckpt, only=["tiny"]) == {}
    assert (ckpt / "tiny.pt").is_file() and not (out / "tiny").exists()
    manifest = family.train_family(out, ckpt, only=["tiny"], resume=True)
    events = [json.loads(line) for line in (ckpt / "log.jsonl").read_text().splitlines()]
    assert {"model": "tiny", "event": "resumed", "step": 1}.items() <= events[-3].items()
    assert manifest["tiny"]["tokens_trained"] > 4 * 32
    assert manifest["tiny"]["epochs"] == 0.5
    assert 0.0 <= manifest["tiny"]["accuracy_val"] <= 1.0
    assert json.loads((out / "manifest.json").read_text()) == manifest
    model = AutoModelForCausalLM.from_pretrained(str(out / "tiny"), local_files_only=True)
    assert model.config.n_layer == architecture.SIZES["tiny"].layers
    # --epochs overrides the recipe, and a checkpoint of the old recipe is not resumed
    with pytest.raises(HybridServeError, match="another model, recipe"):
        family.train_family(tmp_path / "out2", ckpt, only=["tiny"], epochs=1, resume=True)
    # a finished model is skipped on --resume
    capsys.readouterr()
    assert family.train_family(out, ckpt, only=["tiny"], resume=True) == manifest
    assert "tiny: already trained, skipped" in capsys.readouterr().out
