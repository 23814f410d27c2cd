"""``hybridserve quickstart`` end to end on the tiny family: every step, then a cached rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridserve.calibration import load_calibration
from hybridserve.pipeline import quickstart
from hybridserve.profiling.profiler import ProfilerSettings
from hybridserve.profiling.run import run_profile
from hybridserve.workdir import Workdir

FAST = ProfilerSettings(
    time_budget_s=0.02, rounds=2, warmup_s=0.0, min_warmup=1, min_repeats=2, max_repeats=20
)


def _mtimes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


@pytest.mark.e2e
def test_quickstart_serves_every_system_then_reuses_logits_and_profile(
    tmp_path: Path, tiny_family_yaml: Path
) -> None:
    wd = Workdir(tmp_path / "out")
    # a short profile up front: the quickstart reuses it, as it would a real one
    run_profile("tiny", wd, config=tiny_family_yaml, settings=FAST)
    body = quickstart(wd, config=tiny_family_yaml, passes=1, duration_s=60.0)

    report = json.loads(wd.report.read_text())
    systems = report["systems"]
    assert set(systems) >= {
        "giant-only",
        "small",
        "cascade-ap",
        "cascade-ap-maxprob",
        "cascade-eo",
        "oracle",
    }
    # tuned with --deferral auto: the rule it kept is recorded, max-prob is served beside it
    assert systems["cascade-ap"]["deferral"] in ("maxprob", "learned")
    assert systems["cascade-ap-maxprob"]["deferral"] == "maxprob"
    assert report["energy_source"] in ("rapl", "modelled")
    for name, s in systems.items():
        if name == "oracle":
            continue
        assert s["requests"] == 2000 and s["errors"] == 0, name  # one pass, nothing lost
        assert s["throughput_rps"] > 0 and s["energy_j_per_request"] > 0
    # served answers are the offline model's: giant-only scores the giant's test accuracy
    big = next(m for m in load_calibration(wd).models if m.name == "big")
    assert systems["giant-only"]["accuracy"] == pytest.approx(big.accuracy_test)
    assert body["systems"]["cascade-ap"]["accuracy"] == systems["cascade-ap"]["accuracy"]
    for name in ("policy-ap.json", "policy-ap-maxprob.json", "policy-eo.json", "plan.json"):
        assert (wd.root / name).is_file(), name
    assert "cascade-ap-maxprob" in wd.report_md.read_text()

    cached = _mtimes([wd.profile, *sorted((wd.root / "logits").glob("*"))])
    report_before = wd.report.stat().st_mtime_ns
    quickstart(wd, config=tiny_family_yaml, passes=1, duration_s=60.0)
    assert _mtimes(list(cached)) == cached  # logits and profile reused, not recomputed
    assert wd.report.stat().st_mtime_ns > report_before


@pytest.mark.unit
def test_quickstart_refuses_zero_passes_before_any_step_runs(tmp_path: Path) -> None:
    from hybridserve.errors import HybridServeError

    with pytest.raises(HybridServeError, match="--passes"):
        quickstart(Workdir(tmp_path / "out"), passes=0)
    assert not (tmp_path / "out").exists()  # nothing was calibrated or written
