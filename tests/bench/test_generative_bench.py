"""The generative bench: a tiny two-model family calibrated and profiled in a temp dir, served.

The models are random GPT-2 / Llama LMs (``models/tiny_lms.py``); the prompts' answers are what
the big one says (one in four made wrong), so giant-only is right on about three quarters and
the small model rarely (so its calibrated P(correct) is about 0 on every prompt). The cascades
are written by hand: each model's token temperature from calibrate with identity maps, so the
score is the small model's ``min`` token probability, thresholded at its quantiles on the test
prompts; part of the traffic stands at the small model and part reaches the big one, whatever a
tuner would pick on 60 prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")

from hybridserve.bench.genrun import run_generative_bench, spread_indices
from hybridserve.bench.report import read_report, write_report
from hybridserve.bench.run import LoadSettings
from hybridserve.calibration import load_calibration
from hybridserve.calibration.generative import load_records, run_generative_calibration
from hybridserve.cli import main
from hybridserve.errors import HybridServeError
from hybridserve.models.generative import GenerationParams
from hybridserve.models.generative_family import load_generative_family
from hybridserve.models.scorers import get_scorer
from hybridserve.profiling.generative import profile_generative
from hybridserve.profiling.profiler import ProfilerSettings
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.workdir import Workdir
from models.tiny_lms import save_tiny

FAST = ProfilerSettings(
    time_budget_s=0.01, rounds=2, warmup_s=0.0, min_warmup=1, min_repeats=2, max_repeats=3
)
#: the generative profiler's batch sizes and serving batch size, so ``run_profile`` reuses it
SIZES = (1, 4, 16, 64)
SERVING_BATCH = 16
TEST_PROMPTS = 40
LIMIT = 30
#: every served system's fields (beside the classifier bench's)
SERVED_KEYS = {
    "accuracy",
    "energy_j_per_request",
    "energy_j_per_request_profile",
    "energy_source",
    "throughput_rps",
    "latency_ms",
    "requests",
    "errors",
    "reach_fraction",
    "chain",
    "deferral",
    "rounds",
    "tokens_per_s",
    "tokens_per_request",
    "generated_tokens_per_request",
}


def write_family(root: Path) -> Path:
    """Two tiny LMs and their family YAML; val and test prompts answered by the big model."""
    save_tiny(root / "small", "gpt2")
    save_tiny(root / "big", "llama")
    yaml = root / "family.yaml"
    yaml.write_text(
        "family: tiny-lms\ntask: generate\nscorer: next-word\nmax_new_tokens: 3\n"
        "data: {val: val.jsonl, test: test.jsonl}\n"
        "models:\n  - {name: small, loader: hf-causal-lm, path: small}\n"
        "  - {name: big, loader: hf-causal-lm, path: big}\n"
    )
    big = load_generative_family(yaml).model("big")
    words = ["the", "and", "earth", "void", "light", "form", "was"]
    nw = get_scorer("next-word")
    for split, n, seed in (("val", 60, 0), ("test", TEST_PROMPTS, 1)):
        rng = np.random.default_rng(seed)
        prompts = [" ".join(rng.choice(words, rng.integers(1, 4))) for _ in range(n)]
        said = big.generate(prompts, GenerationParams(max_new_tokens=3))
        with (root / f"{split}.jsonl").open("w") as fh:
            for i, (p, g) in enumerate(zip(prompts, said, strict=True)):
                answer = nw.answer_of(g.text) if i % 4 else "zzz"
                fh.write(json.dumps({"prompt": p, "answer": answer}) + "\n")
    return yaml


def small_scores(wd: Workdir, policy: CascadePolicy, picked: np.ndarray) -> np.ndarray:
    """The policy's score of the small model's cached test answers, on the picked prompts."""
    rows = load_records(wd, load_calibration(wd), "test")["small"].rows()[picked]
    return np.asarray(policy.decide(0, rows).score, dtype=np.float64)


def cascade(calibration: Any, threshold: float) -> CascadePolicy:
    """small → big: the small model's answer stands when its min token probability (at its
    calibrated token temperature) reaches ``threshold``."""
    identity = {"method": "platt", "a": 1.0, "b": 0.0}
    cals = tuple(
        {
            "kind": "sequence",
            "state": {
                "temperature": calibration.model(n).temperature,
                "method": "platt",
                "maps": dict.fromkeys(("min", "mean", "prod", "q10", "q25", "q50"), identity),
            },
        }
        for n in ("small", "big")
    )
    return CascadePolicy(
        "tiny-lms", ("small", "big"), (threshold,), cals, confidence="min", task="generate"
    )


@pytest.fixture(scope="module")
def family_wd(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Workdir]:
    """The family YAML and a workdir with its calibration, profile and two cascade policies."""
    root = tmp_path_factory.mktemp("genbench")
    yaml = write_family(root)
    wd = Workdir(root / "wd").ensure()
    run_generative_calibration(load_generative_family(yaml), wd, progress=False)
    profile_generative(
        "tiny-lms", config=yaml, batch_sizes=SIZES, serving_batch_size=SERVING_BATCH,
        settings=FAST, meter_source="modelled",
    ).save(wd.profile)  # fmt: skip
    calibration = load_calibration(wd)
    probe = cascade(calibration, 0.5)
    scores = small_scores(wd, probe, spread_indices(TEST_PROMPTS, LIMIT))
    # AP: the upper half of the small model's scores stands; EO: the upper three quarters
    for mode, q in (("ap", 0.5), ("eo", 0.25)):
        cascade(calibration, float(np.quantile(scores, q))).save(wd.policy(mode))
    return yaml, wd


def test_spread_indices_cover_the_file_evenly() -> None:
    assert spread_indices(10, None).tolist() == list(range(10))
    assert spread_indices(10, 25).tolist() == list(range(10))
    picked = spread_indices(100, 7)
    assert picked.tolist() == [0, 16, 33, 49, 66, 82, 99]
    assert len(set(spread_indices(1000, 999).tolist())) == 999
    with pytest.raises(HybridServeError, match="--limit"):
        spread_indices(10, 0)


@pytest.mark.integration
def test_bench_serves_every_system_and_reports_it(family_wd: tuple[Path, Workdir]) -> None:
    yaml, wd = family_wd
    load = LoadSettings(mode="saturate", concurrency=6, duration_s=120.0, rounds=2)
    body = run_generative_bench(wd, load, config=yaml, limit=LIMIT)

    report = read_report(wd.report)
    raw = json.loads(wd.report.read_text())
    assert raw["format"] == "hybridserve/report" and raw["version"] == 2
    assert report["task"] == "generate" and report["family"] == "tiny-lms"
    assert report["systems"] == body["systems"]
    assert report["load"]["prompts"] == LIMIT and report["load"]["prompts_in_test"] == 40
    assert report["load"]["decode_batch"] == SERVING_BATCH and report["load"]["rounds"] == 2
    systems = report["systems"]
    assert list(systems) == ["giant-only", "small", "cascade-ap", "cascade-eo", "oracle"]
    profile = json.loads(wd.profile.read_text())
    energy = {m["name"]: m["energy_j_per_request"] for m in profile["models"]}

    for name, s in systems.items():
        if name == "oracle":
            continue
        assert set(s) >= SERVED_KEYS, name
        assert s["requests"] == LIMIT and s["errors"] == 0, name
        assert 0.0 <= s["accuracy"] <= 1.0
        assert s["throughput_rps"] > 0 and s["energy_j_per_request"] > 0
        lat = s["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        # answers hold 1..max_new_tokens tokens; tokens/s is that many per answered request
        assert 1 <= s["tokens_per_request"] <= 3
        assert s["tokens_per_s"] == pytest.approx(s["tokens_per_request"] * s["throughput_rps"])
        # the profile's energy is the models each request reached, at their profiled price
        predicted = sum(frac * energy[m] for m, frac in s["reach_fraction"].items())
        assert s["energy_j_per_request_profile"] == pytest.approx(predicted)
        assert set(s["generated_tokens_per_request"]) <= set(s["chain"])

    # one model alone answers everything itself, as it did offline in calibrate
    for name, model in (("giant-only", "big"), ("small", "small")):
        s = systems[name]
        assert s["chain"] == [model] and s["reach_fraction"] == {model: 1.0}
        assert s["energy_j_per_request_profile"] == pytest.approx(energy[model])
        assert s["accuracy"] == pytest.approx(s["accuracy_offline"], abs=0.1)
        assert s["generated_tokens_per_request"][model] == pytest.approx(s["tokens_per_request"])
    assert systems["giant-only"]["accuracy"] > systems["small"]["accuracy"]

    # the cascades: every request starts small; about the share the offline scores predict
    # goes on to the big model, and EO (the lower threshold) sends fewer than AP
    picked = spread_indices(TEST_PROMPTS, LIMIT)
    reach_big = {}
    for name in ("cascade-ap", "cascade-eo"):
        s = systems[name]
        policy = CascadePolicy.load(wd.policy(name.split("-")[1]))
        offline = float(np.mean(small_scores(wd, policy, picked) < policy.thresholds[0]))
        assert s["chain"] == ["small", "big"] and s["reach_fraction"]["small"] == 1.0
        reach_big[name] = s["reach_fraction"]["big"]
        assert reach_big[name] == pytest.approx(offline, abs=0.1), name
        assert 0 < reach_big[name] < 1
        assert s["energy_j_per_request_profile"] == pytest.approx(
            energy["small"] + reach_big[name] * energy["big"]
        )
        # escalated requests were decoded twice: the big model's tokens are counted too
        assert s["generated_tokens_per_request"]["big"] > 0
    assert reach_big["cascade-eo"] < reach_big["cascade-ap"]

    oracle = systems["oracle"]
    ok = {n: r.correct[picked] for n, r in load_records(wd, load_calibration(wd), "test").items()}
    assert oracle["accuracy"] == pytest.approx(float(np.mean(ok["small"] | ok["big"])))
    assert oracle["requests"] == LIMIT and oracle["throughput_rps"] is None
    assert sum(oracle["reach_fraction"].values()) == pytest.approx(1.0)

    md = wd.report_md.read_text()
    assert "tokens/s" in md and "cascade-eo (min)" in md
    for png in ("bench-threshold-graph.png", "latency-cdf.png", "energy-per-request.png"):
        assert (wd.root / png).stat().st_size > 0, png


@pytest.mark.integration
def test_test_generations_of_other_prompts_are_refused(
    family_wd: tuple[Path, Workdir], tmp_path: Path
) -> None:
    yaml, wd = family_wd
    other = tmp_path / "family.yaml"
    lines = (yaml.parent / "test.jsonl").read_text().splitlines()
    (tmp_path / "test.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # one prompt fewer
    (tmp_path / "val.jsonl").write_text((yaml.parent / "val.jsonl").read_text())
    text = yaml.read_text().replace("path: small", f"path: {yaml.parent / 'small'}")
    other.write_text(text.replace("path: big", f"path: {yaml.parent / 'big'}"))
    load = LoadSettings(mode="saturate", concurrency=2, rounds=1)
    with pytest.raises(
        HybridServeError, match=r"test generations of .small. were made from other prompts"
    ):
        run_generative_bench(wd, load, config=other, limit=2)


def test_version_1_reports_read_as_classifier_reports(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"format": "hybridserve/report", "version": 1, "systems": {}}))
    assert read_report(path)["task"] == "classify"
    write_report(path, {"systems": {}})
    assert read_report(path)["task"] == "classify"
    assert json.loads(path.read_text())["version"] == 2


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as ex:
        code = int(ex.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["bench", "--family", "kjv-gpt", "--limit", "0"], "--limit must be ≥ 1"),
        (["bench", "--family", "kjv-gpt", "--decode-batch", "0"], "--decode-batch must be ≥ 1"),
        (["bench", "--family", "fashion-mnist", "--limit", "5"], "--limit applies to generative"),
        (["bench", "--family", "kjv-gpt", "--url", "http://127.0.0.1:9"], "--url"),
        (["bench", "--family", "kjv-gpt", "--drift"], "--drift"),
        (["quickstart", "--family", "kjv-gpt", "--limit", "0"], "--limit must be ≥ 1"),
        (["quickstart", "--limit", "5"], "--limit applies to generative"),
    ],
)
def test_bad_generative_options_exit_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    wd = tmp_path / "wd"
    code, err = _cli([*args, "--workdir", str(wd)], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert not (wd / "report.json").exists() and not (wd / "calibration.json").exists()


@pytest.mark.integration
def test_bench_of_an_uncalibrated_generative_workdir_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _cli(["bench", "--family", "kjv-gpt", "--workdir", str(tmp_path)], capsys)
    assert code == 2 and "run `hybridserve calibrate` first" in err


@pytest.mark.e2e
def test_generative_quickstart_runs_every_step_then_reuses_them(tmp_path: Path) -> None:
    from hybridserve.pipeline import quickstart
    from hybridserve.profiling.run import run_profile

    yaml = write_family(tmp_path / "family")
    wd = Workdir(tmp_path / "out")
    # a short profile up front: the quickstart reuses it, as it would a real one
    run_profile("tiny-lms", wd, config=yaml, settings=FAST, meter_source="modelled")
    body = quickstart(wd, config=yaml, passes=1, duration_s=120.0, limit=20)

    report = read_report(wd.report)
    assert report["task"] == "generate" and report["systems"] == body["systems"]
    systems = report["systems"]
    assert {"giant-only", "small", "cascade-ap", "cascade-eo", "oracle"} <= set(systems)
    for name, s in systems.items():
        if name != "oracle":
            assert s["requests"] == 20 and s["errors"] == 0, name
            assert s["tokens_per_s"] > 0 and 0 <= s["accuracy"] <= 1
    # tuned with every confidence rule; the one kept is what the cascade is labelled with
    ap = CascadePolicy.load(wd.policy("ap"))
    assert ap.task == "generate" and systems["cascade-ap"]["deferral"] == ap.confidence
    assert wd.policy("eo").is_file() and wd.calibration.is_file()

    cached = sorted((wd.root / "generations").glob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in [wd.profile, *cached]}
    quickstart(wd, config=yaml, passes=1, duration_s=120.0, limit=20)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # generations and profile reused
