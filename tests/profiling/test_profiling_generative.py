"""Profiling a generative family: tiny random GPT-2 and Llama models plus a much bigger GPT-2.

One profile is taken per module (fast settings, modelled meter) and every test reads it; the
CLI tests check the dispatch by ``task`` and the one-line errors.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from transformers import GPT2Config, GPT2LMHeadModel

from hybridserve.cli import main
from hybridserve.errors import HybridServeError
from hybridserve.profiling.generative import profile_generative
from hybridserve.profiling.profile import Profile
from hybridserve.profiling.profiler import ProfilerSettings
from hybridserve.tuning.costs import costs_from_profile
from models.tiny_lms import PROMPTS, char_tokenizer, save_tiny

pytestmark = pytest.mark.unit

FAST = ProfilerSettings(
    time_budget_s=0.01, rounds=2, warmup_s=0.0, min_warmup=1, min_repeats=2, max_repeats=3
)
SIZES = (1, 2)
MAX_NEW = 3
#: val prompts, each within the tiny models' 64 positions (one token per character)
VAL = [*PROMPTS, "let there be light", "and god saw the light, that it was good"]


def save_big(directory: Path) -> Path:
    """A GPT-2 with about 30 times the tiny ones' weights (4 layers, width 128), same tokenizer."""
    tok = char_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok), n_layer=4, n_embd=128, n_head=4, n_positions=64,
        eos_token_id=0, bos_token_id=0, pad_token_id=1,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def write_family(root: Path, models: dict[str, str]) -> Path:
    lines = [json.dumps({"prompt": p, "answer": "x"}) for p in VAL]
    (root / "val.jsonl").write_text("\n".join(lines) + "\n")
    entries = "\n".join(
        f"  - {{name: {n}, loader: hf-causal-lm, path: {p}}}" for n, p in models.items()
    )
    path = root / "family.yaml"
    path.write_text(
        f"family: tiny-lms\ntask: generate\nmax_new_tokens: {MAX_NEW}\n"
        f"data: {{val: val.jsonl, test: val.jsonl}}\nmodels:\n{entries}\n"
    )
    return path


@pytest.fixture(scope="module")
def family_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lms")
    save_tiny(root / "gpt2", "gpt2")
    save_tiny(root / "llama", "llama")
    save_big(root / "big")
    return write_family(root, {"gpt2": "gpt2", "llama": "llama", "big": "big"})


@pytest.fixture(scope="module")
def profile(family_yaml: Path) -> Profile:
    return profile_generative(
        "tiny-lms", config=family_yaml, batch_sizes=SIZES, serving_batch_size=2,
        settings=FAST, meter_source="modelled",
    )  # fmt: skip


def test_every_model_has_every_field(profile: Profile) -> None:
    assert profile.task == "generate" and profile.names == ("gpt2", "llama", "big")
    assert profile.energy_source == "modelled" and "generate" in profile.memory_method
    assert profile.settings["max_new_tokens"] == MAX_NEW
    assert profile.settings["torch_threads"] == 1
    # the token census is the first max(SIZES) prompts; the char tokenizer adds no specials
    prompt_mean = sum(len(p) for p in VAL[: max(SIZES)]) / max(SIZES)
    for m in profile.models:
        assert m.batch_sizes == SIZES
        for r in m.rows:
            assert r.latency_ms_median > 0 and r.latency_ms_p90 >= r.latency_ms_median
            assert r.throughput_rps == pytest.approx(1000 * r.batch_size / r.latency_ms_median)
            assert r.memory_bytes > m.weight_bytes and r.energy_j_per_request > 0
            assert r.repeats >= FAST.min_repeats
        assert m.energy_j_per_request() == m.row(2).energy_j_per_request
        assert m.latency_ms(2) > 0 and 0 <= m.utilisation(2) <= 1
        g = m.generative
        assert g is not None and g.max_new_tokens == MAX_NEW and g.batch_size == 2
        assert g.prompt_tokens_mean == pytest.approx(prompt_mean)
        assert 1 <= g.generated_tokens_mean <= MAX_NEW
        assert [r.batch_size for r in g.rows] == list(SIZES)
        for gr in g.rows:
            assert gr.prefill_ms_median > 0 and gr.prefill_ms_per_token > 0
            assert gr.prefill_j_per_token > 0
            assert gr.decode_ms_per_token >= 0 or math.isnan(gr.decode_ms_per_token)
        assert g.prefill_ms_per_token == g.rows[1].prefill_ms_per_token


def test_kv_cache_and_macs_follow_the_architecture(profile: Profile) -> None:
    # K and V, per layer, per token: float32 elements of (kv heads x head dim)
    kv_per_token = {
        "gpt2": 2 * 2 * 32 * 4,
        "llama": 2 * 2 * 2 * (32 // 4) * 4,
        "big": 2 * 4 * 128 * 4,
    }
    for m in profile.models:
        g = m.generative
        assert g is not None
        assert g.kv_bytes_per_token == kv_per_token[m.name]
        tokens = g.prompt_tokens_mean + g.generated_tokens_mean
        assert g.kv_bytes_per_sequence == round(kv_per_token[m.name] * tokens)
        assert g.macs_per_token == m.params
        read = g.prompt_tokens_mean + g.generated_tokens_mean - 1
        assert m.macs == g.macs_per_request == round(m.params * read)


def test_the_much_bigger_model_costs_more_per_request(profile: Profile) -> None:
    small, big = profile.model("gpt2"), profile.model("big")
    assert small.generative is not None and big.generative is not None
    # deterministic: MACs per request follow the weights (the prompts are the same)
    assert big.macs > 20 * small.macs
    assert big.generative.kv_bytes_per_sequence > 4 * small.generative.kv_bytes_per_sequence


def test_costs_from_profile_reads_it(profile: Profile) -> None:
    table = costs_from_profile(profile)
    assert table.source == "profile:modelled" and table.batch_size == 2
    assert sorted(table.costs) == sorted(profile.names)
    for m in profile.models:
        assert table[m.name].energy_j == m.energy_j_per_request()
        assert table[m.name].latency_ms == m.row(2).latency_ms_median
    assert costs_from_profile(profile, batch_size=1)["big"].energy_j == (
        profile.model("big").row(1).energy_j_per_request
    )


def test_json_round_trip_and_old_files(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    profile.save(path)
    back = Profile.load(path)
    assert back.to_dict() == profile.to_dict()
    assert back.task == "generate" and back.model("big").generative is not None
    # a version-1 file from before generative profiles: no task, no generative blocks
    body = json.loads(path.read_text())
    del body["task"]
    for m in body["models"]:
        del m["generative"]
    path.write_text(json.dumps(body))
    old = Profile.load(path)
    assert old.task == "classify" and all(m.generative is None for m in old.models)
    assert old.model("big").rows == profile.model("big").rows


def test_malformed_generative_block_names_the_field(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    profile.save(path)
    body = json.loads(path.read_text())
    del body["models"][0]["generative"]["prompt_tokens_mean"]
    path.write_text(json.dumps(body))
    with pytest.raises(HybridServeError, match="prompt_tokens_mean"):
        Profile.load(path)


def test_plan_consumes_a_generative_profile(
    profile: Profile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hybridserve.planning.plan import Plan

    profile.save(tmp_path / "profile.json")
    args = ["plan", "--reach", "gpt2=1,llama=0.5,big=0.2", "--batch-sizes", "1,2"]
    main([*args, "--family", "tiny-lms", "--workdir", str(tmp_path)])
    assert set(Plan.load(tmp_path / "plan.json").models) == {"gpt2", "llama", "big"}
    capsys.readouterr()
    # without a policy or --family the reach is read as the default family's: a one-line refusal
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--workdir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'tiny-lms'" in err and len(err.strip().splitlines()) == 1


def test_cli_profiles_a_generative_config(
    family_yaml: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # tables unwrapped, so their headers can be read
    workdir = tmp_path / "wd"
    main([
        "profile", "--config", str(family_yaml), "--batch-sizes", "1,2", "--serving-batch-size",
        "2", "--time-budget-s", "0.01", "--rounds", "1", "--meter", "modelled",
        "--workdir", str(workdir),
    ])  # fmt: skip
    body = json.loads((workdir / "profile.json").read_text())
    assert body["task"] == "generate" and body["settings"]["rounds"] == 1
    assert all("generative" in m for m in body["models"])
    out = capsys.readouterr().out
    assert "prefill ms/tok" in out and "KV/seq" in out


def test_cli_model_without_tokenizer_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_tiny(tmp_path / "bare", "gpt2")
    for f in (tmp_path / "bare").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            f.unlink()
    family = write_family(tmp_path, {"a": "bare", "b": "bare"})
    capsys.readouterr()  # save_pretrained's own progress bars
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", "--config", str(family), "--workdir", str(tmp_path / "wd")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no tokenizer" in err and len(err.strip().splitlines()) == 1


def test_cli_unknown_family_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", "--family", "no-such-family", "--workdir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no-such-family" in err and len(err.strip().splitlines()) == 1


def test_family_without_val_prompts_is_a_clear_error(family_yaml: Path, tmp_path: Path) -> None:
    for name in ("gpt2", "llama"):
        shutil.copytree(family_yaml.parent / name, tmp_path / name)
    text = family_yaml.read_text().replace("data: {val: val.jsonl, test: val.jsonl}\n", "")
    (tmp_path / "family.yaml").write_text(
        text.replace("  - {name: big, loader: hf-causal-lm, path: big}\n", "")
    )
    with pytest.raises(HybridServeError, match="profiling needs prompts"):
        profile_generative("x", config=tmp_path / "family.yaml", batch_sizes=(1,), settings=FAST)


def test_the_planner_reserves_a_full_batchs_kv_caches(profile: Profile) -> None:
    from hybridserve.planning.costs import ModelCost

    for m in profile.models:
        cost = ModelCost.from_profile(m)
        g = m.generative
        assert g is not None and cost.kv_bytes_per_sequence == g.kv_bytes_per_sequence > 0
        big = 10_000  # far past every measured batch: the fit alone could undershoot
        assert cost.memory_bytes(big) >= m.weight_bytes + big * g.kv_bytes_per_sequence
