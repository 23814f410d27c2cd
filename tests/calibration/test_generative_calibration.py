"""Generative calibration: scorers, prompt files, token temperature, and calibrate → tune."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hybridserve.calibration import load_calibration
from hybridserve.calibration.generative import run_generative_calibration, token_temperature
from hybridserve.calibration.sequence import SequenceCalibrator, binary_bins, fit_map
from hybridserve.data.prompts import PromptRecord, read_prompts
from hybridserve.errors import HybridServeError
from hybridserve.models.generative import GenerationParams, GenerativeInfo, GenerativeModel
from hybridserve.models.generative_family import load_generative_family
from hybridserve.models.scorers import get_scorer
from hybridserve.tuning import CascadePolicy, CostTable
from hybridserve.tuning.tune import run_tune
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.unit


def test_next_word_and_exact_scorers() -> None:
    nw, ex = get_scorer("next-word"), get_scorer("exact")
    assert nw.correct(" Israel, and", "Israel") and not nw.correct(" Is rael", "Israel")
    assert ex.correct("  the end \n", "the end") and not ex.correct("the end.", "the end")
    pieces = [" Is", "ra", "el", ",", " and"]

    def decode(ids: list[int]) -> str:
        return "".join(pieces[i] for i in ids)

    # "el" completes the word; what follows it is not part of the answer
    assert nw.scored_tokens(decode, [0, 1, 2, 3, 4]) == 3
    assert nw.scored_tokens(decode, [0, 1, 2]) == 3
    assert ex.scored_tokens(decode, [0, 1, 2, 3, 4]) == 5
    assert get_scorer("builtins:hasattr").name == "builtins:hasattr"
    with pytest.raises(HybridServeError, match="unknown"):
        get_scorer("fuzzy")


def test_prompt_files_plain_and_gzip_and_their_errors(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl.gz"
    with gzip.open(good, "wt") as fh:
        fh.write(json.dumps({"prompt": "a", "answer": "b", "source": "x"}) + "\n\n")
    assert read_prompts(good) == [PromptRecord("a", "b")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(HybridServeError, match=r"bad\.jsonl:2: needs a string 'answer'") as err:
        read_prompts(bad)
    assert "\n" not in str(err.value)
    bad.write_text('{"answer": "b"}\n')
    with pytest.raises(HybridServeError, match=r":1: needs a string 'prompt'"):
        read_prompts(bad)


def test_logprob_temperature_is_validated() -> None:
    for t in (0, -1.0, float("nan"), True):
        with pytest.raises(HybridServeError, match="logprob_temperature"):
            GenerationParams(logprob_temperature=t)
    assert GenerationParams(logprob_temperature=2).logprob_temperature == 2


class _Overconfident(GenerativeModel):
    """Teacher-forced logits 4× sharper than the distribution the targets come from."""

    name = "sharp"

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def info(self) -> GenerativeInfo:
        return GenerativeInfo(params=1, macs=1, weight_bytes=4)

    def generate(self, prompts: list[str], params: GenerationParams) -> list[Any]:
        raise AssertionError("not used")

    def next_token_logits(
        self, texts: list[str], max_positions_per_text: int = 16
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        rng = np.random.default_rng(len(texts))
        z = rng.normal(size=(2000, 8))
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = np.array([rng.choice(8, p=row) for row in p])
        return (4 * z).astype(np.float32), y.astype(np.int64)


def test_token_temperature_lowers_nll_of_an_overconfident_model(tmp_path: Path) -> None:
    prompts = [PromptRecord(f"p{i}", "a") for i in range(20)]
    fig = token_temperature(
        _Overconfident(), prompts, prompts, get_scorer("exact"), Workdir(tmp_path), "f"
    )
    assert fig["temperature"] == pytest.approx(4.0, rel=0.15)
    assert fig["nll_val_after"] < fig["nll_val_before"] - 0.1
    assert fig["nll_test_after"] < fig["nll_test_before"]


def test_sequence_maps_fix_a_miscalibrated_confidence() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 4000)
    right = rng.random(4000) < conf**3  # the raw confidence is far too high
    before = binary_bins(conf, right).ece
    for method in ("platt", "isotonic"):
        spec = fit_map(conf[:2000], right[:2000], method)
        from hybridserve.calibration.sequence import apply_map

        after = binary_bins(apply_map(spec, conf[2000:]), right[2000:]).ece
        assert after < before / 3
    with pytest.raises(HybridServeError, match="maps"):
        SequenceCalibrator.from_state({"temperature": 1.0, "maps": {}})


def _family(tmp: Path) -> Path:
    from models.tiny_lms import save_tiny

    save_tiny(tmp / "small", "gpt2")
    save_tiny(tmp / "big", "llama")
    (tmp / "family.yaml").write_text(
        "family: tiny-lms\ntask: generate\nscorer: next-word\nmax_new_tokens: 3\n"
        "data: {val: val.jsonl, test: test.jsonl}\n"
        "models:\n  - {name: small, loader: hf-causal-lm, path: small}\n"
        "  - {name: big, loader: hf-causal-lm, path: big}\n"
    )
    return tmp / "family.yaml"


def _prompts(path: Path, fam_yaml: Path, n: int, seed: int) -> None:
    """Prompts whose answer is mostly what the big model says, so the cascade has signal."""
    from hybridserve.models.hf_causal import HFCausalLM

    rng = np.random.default_rng(seed)
    words = ["the", "and", "earth", "void", "light", "form", "was"]
    prompts = [" ".join(rng.choice(words, rng.integers(1, 4))) for _ in range(n)]
    big = HFCausalLM(fam_yaml.parent / "big")
    said = big.generate(prompts, GenerationParams(max_new_tokens=3))
    nw = get_scorer("next-word")
    with path.open("w") as fh:
        for i, (p, g) in enumerate(zip(prompts, said, strict=True)):
            answer = nw.answer_of(g.text) if i % 4 else "zzz"
            fh.write(json.dumps({"prompt": p, "answer": answer}) + "\n")


def test_calibrate_then_tune_a_two_model_generative_cascade(tmp_path: Path) -> None:
    yaml = _family(tmp_path)
    _prompts(tmp_path / "val.jsonl", yaml, 60, 0)
    _prompts(tmp_path / "test.jsonl", yaml, 40, 1)
    fam = load_generative_family(yaml)
    wd = Workdir(tmp_path / "wd")
    report = run_generative_calibration(fam, wd, progress=False)
    loaded = load_calibration(wd)
    assert loaded == report and loaded.task == "generate"
    big = loaded.model("big")
    assert big.accuracy_val == pytest.approx(0.75, abs=0.05)
    assert big.temperature > 0 and big.nll_after <= big.nll_before + 1e-6
    assert set(big.sequence or {}) >= {"aggregate_test_ece", "method_test_ece", "records"}
    assert wd.reliability_png.is_file()
    # a rerun reuses the cached generations (same fingerprints, same figures)
    again = run_generative_calibration(fam, wd, progress=False)
    assert again == report
    costs = CostTable.from_energy({"small": 1.0, "big": 10.0})
    policy = run_tune(wd, "ap", confidence="auto", costs=costs)
    assert policy.task == "generate" and policy.chain[-1] == "big"
    assert CascadePolicy.load(wd.policy("ap")) == policy
    tried = policy.summary["deferral"]["tried"]
    assert set(tried) == {"min", "mean", "prod", "q10", "q25", "q50", "seq-learned"}
    test = policy.summary["test"]
    assert test["giant_accuracy"] == pytest.approx(0.75, abs=0.05)
    assert {"accuracy", "energy_j_per_request", "saving_x", "oracle"} <= set(test)
    assert policy.calibrators[-1]["state"]["temperature"] == big.temperature


def test_unknown_family_and_bad_prompt_file_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hybridserve.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", "--family", "nope", "--workdir", str(tmp_path)])
    assert res.exit_code != 0 and isinstance(res.exception, HybridServeError)
    yaml = _family(tmp_path)
    (tmp_path / "val.jsonl").write_text('{"prompt": "a"}\n')
    (tmp_path / "test.jsonl").write_text('{"prompt": "a", "answer": "b"}\n')
    with pytest.raises(HybridServeError, match=r"val\.jsonl:1"):
        run_generative_calibration(load_generative_family(yaml), tmp_path / "wd", progress=False)
