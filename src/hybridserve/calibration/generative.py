"""``calibrate`` for a generative family: token temperature, then sequence-level P(correct).

Per model, on the validation split only:

1. **Token temperature** T: minimises the next-token NLL of teacher-forced validation texts
   (prompt + the scorer's continuation of the answer; the last ``POSITIONS`` positions of up to
   ``TEXTS`` texts) with the classifier step's ``fit_temperature``.
2. **Generations**: greedy over val and test prompts with ``logprob_temperature=T``
   (``genrecords``; cached in the workdir).
3. **Sequence calibrator**: per aggregate (``min mean prod q10 q25 q50`` of the scored tokens'
   calibrated probabilities) a map to P(correct), ``platt`` or ``isotonic`` — ``auto`` picks
   the method with the lower validation ECE under 2-fold cross-fitting (test ECE of both is
   reported, never used to choose).

Reported on test: accuracy (the scorer's), sequence ECE before (raw ``min`` at T = 1, no map)
and after (calibrated ``min``), every aggregate's ECE after, both methods' ECE, next-token NLL
at T = 1 and T. Written to ``calibration.json`` (``task: generate``) and ``reliability.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.calibration.fit import DEFAULT_BINS
from hybridserve.calibration.genrecords import (
    GenerationRecords,
    cached_generations,
    prompts_digest,
)
from hybridserve.calibration.reliability import ReliabilityPanel, plot_reliability
from hybridserve.calibration.report import CalibrationReport, ModelCalibration
from hybridserve.calibration.scaling import fit_temperature, mean_nll
from hybridserve.calibration.sequence import (
    METHODS,
    SequenceCalibrator,
    apply_map,
    binary_bins,
    fit_map,
)
from hybridserve.data.prompts import PromptRecord, read_prompts
from hybridserve.errors import HybridServeError
from hybridserve.models.generative import GenerativeModel
from hybridserve.models.generative_family import GenerativeFamily
from hybridserve.models.scorers import Scorer, get_scorer
from hybridserve.tuning.seqfeatures import AGG_COLUMN, AGGREGATES
from hybridserve.workdir import Workdir

TEXTS = 512
POSITIONS = 16
AUTO = "auto"


def split_prompts(family: GenerativeFamily, split: str) -> list[PromptRecord]:
    if split not in family.data_paths:
        raise HybridServeError(f"family {family.name!r} declares no {split!r} prompts (data:)")
    return read_prompts(family.data_paths[split])


def _texts(prompts: list[PromptRecord], scorer: Scorer, n: int) -> list[str]:
    """Up to ``n`` teacher-forced texts, spread evenly over the split."""
    idx = np.unique(np.linspace(0, len(prompts) - 1, min(n, len(prompts))).astype(int))
    return [prompts[i].prompt + scorer.continuation(prompts[i].answer) for i in idx]


def token_temperature(
    model: GenerativeModel,
    val: list[PromptRecord],
    test: list[PromptRecord],
    scorer: Scorer,
    wd: Workdir,
    family: str,
    fresh: bool = False,
) -> dict[str, float]:
    """T fitted on val next-token NLL, with val/test NLL at T = 1 and at T (cached)."""
    key = f"{model.fingerprint}/{prompts_digest(val)}/{prompts_digest(test)}/{scorer.name}"
    key += f"/{TEXTS}/{POSITIONS}"
    path = wd.root / "generations" / f"{family}-{model.name}-temperature.json"
    if not fresh and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return {k: float(v) for k, v in cached["figures"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # unreadable: refit and overwrite
    z_val, y_val = model.next_token_logits(_texts(val, scorer, TEXTS), POSITIONS)
    z_test, y_test = model.next_token_logits(_texts(test, scorer, TEXTS), POSITIONS)
    zv, zt = z_val.astype(np.float64), z_test.astype(np.float64)
    t = fit_temperature(zv, y_val)
    figures = {
        "temperature": t,
        "nll_val_before": mean_nll(zv, y_val),
        "nll_val_after": mean_nll(zv / t, y_val),
        "nll_test_before": mean_nll(zt, y_test),
        "nll_test_after": mean_nll(zt / t, y_test),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "figures": figures}, indent=1))
    return figures


def cross_fit_ece(
    conf: npt.NDArray[np.float64], correct: npt.NDArray[np.bool_], method: str, n_bins: int
) -> float:
    """Validation ECE of a map fitted on the other half (2 seeded folds)."""
    if conf.size < 4:
        return float("nan")
    fold = np.random.default_rng(0).permutation(conf.size) % 2
    out = np.empty_like(conf)
    for k in (0, 1):
        spec = fit_map(conf[fold != k], correct[fold != k], method)
        out[fold == k] = apply_map(spec, conf[fold == k])
    return binary_bins(out, correct, n_bins).ece


def pick_method(val: GenerationRecords, n_bins: int) -> tuple[str, dict[str, float]]:
    """The map method with the lower cross-fitted validation ECE, averaged over aggregates."""
    rows = val.rows()
    scores = {
        m: float(
            np.mean(
                [cross_fit_ece(rows[:, AGG_COLUMN[a]], val.correct, m, n_bins) for a in AGGREGATES]
            )
        )
        for m in METHODS
    }
    return min(METHODS, key=lambda m: (scores[m], METHODS.index(m))), scores


def calibrate_model(
    model: GenerativeModel,
    val: GenerationRecords,
    test: GenerationRecords,
    temp: dict[str, float],
    method: str,
    n_bins: int,
) -> tuple[ModelCalibration, ReliabilityPanel]:
    """One model's entry in ``calibration.json`` and its reliability panel."""
    val_ece: dict[str, float] = {}
    if method == AUTO:
        method, val_ece = pick_method(val, n_bins)
    cal = SequenceCalibrator(temp["temperature"], method).fit(val.rows(), val.correct)
    test_rows = test.rows()
    after_rows = cal.transform(test_rows)
    min_col = AGG_COLUMN["min"]
    before = binary_bins(test.rows(calibrated=False)[:, min_col], test.correct, n_bins)
    after = binary_bins(after_rows[:, min_col], test.correct, n_bins)
    per_agg = {
        a: binary_bins(after_rows[:, AGG_COLUMN[a]], test.correct, n_bins).ece for a in AGGREGATES
    }
    methods: dict[str, dict[str, float]] = {}
    for m in METHODS:
        other = SequenceCalibrator(temp["temperature"], m).fit(val.rows(), val.correct)
        mapped = other.transform(test_rows)
        methods[m] = {
            a: binary_bins(mapped[:, AGG_COLUMN[a]], test.correct, n_bins).ece for a in AGGREGATES
        }
    info = model.info
    sequence: dict[str, Any] = {
        "method": method,
        "method_val_ece": val_ece,
        "aggregate_test_ece": per_agg,
        "method_test_ece": methods,
        "raw_min_test_ece": before.ece,
        "tokens_per_request_val": float((val.prompt_tokens + val.generated_tokens).mean()),
        "prompt_tokens_val": float(val.prompt_tokens.mean()),
        "generated_tokens_val": float(val.generated_tokens.mean()),
        "records": {"val": val.fingerprint, "test": test.fingerprint},
        "nll_val_before": temp["nll_val_before"],
        "nll_val_after": temp["nll_val_after"],
    }
    entry = ModelCalibration(
        name=model.name,
        params=info.params,
        macs=info.macs,
        weight_bytes=info.weight_bytes,
        n_val=val.n,
        n_test=test.n,
        accuracy_val=float(val.correct.mean()),
        accuracy_test=float(test.correct.mean()),
        temperature=temp["temperature"],
        ece_before=before.ece,
        ece_after=after.ece,
        nll_before=temp["nll_test_before"],
        nll_after=temp["nll_test_after"],
        calibrator=cal.to_dict(),
        sequence=sequence,
    )
    return entry, ReliabilityPanel(model.name, before, after)


def run_generative_calibration(
    family: GenerativeFamily,
    workdir: Workdir | Path | str,
    method: str = AUTO,
    *,
    n_bins: int = DEFAULT_BINS,
    fresh: bool = False,
    progress: bool = True,
) -> CalibrationReport:
    """Calibrate every model of a generative ``family`` into ``workdir`` (see module doc)."""
    if method not in (*METHODS, AUTO):
        raise HybridServeError(f"sequence calibrator: expected one of {[*METHODS, AUTO]}")
    wd = (workdir if isinstance(workdir, Workdir) else Workdir(Path(workdir))).ensure()
    scorer = get_scorer(family.scorer)
    val_p, test_p = split_prompts(family, "val"), split_prompts(family, "test")
    entries, panels = [], []
    for model in family.models:
        temp = token_temperature(model, val_p, test_p, scorer, wd, family.name, fresh)
        recs = {
            split: cached_generations(
                wd,
                family.name,
                model,
                prompts,
                scorer,
                family.max_new_tokens,
                temp["temperature"],
                split,
                fresh=fresh,
                progress=progress,
            )
            for split, prompts in (("val", val_p), ("test", test_p))
        }
        entry, panel = calibrate_model(model, recs["val"], recs["test"], temp, method, n_bins)
        entries.append(entry)
        panels.append(panel)
    report = CalibrationReport(
        family=family.name,
        calibrator=f"sequence-{method}",
        n_bins=n_bins,
        models=tuple(entries),
        task="generate",
    )
    report.save(wd.calibration)
    plot_reliability(
        panels,
        wd.reliability_png,
        f"{family.name}: test, raw min token prob (before) vs calibrated P(correct) (after)",
    )
    return report


def load_records(
    wd: Workdir, report: CalibrationReport, split: str
) -> dict[str, GenerationRecords]:
    """The records calibrate wrote for ``split``, per model in chain order (checked against
    the fingerprints ``calibration.json`` recorded)."""
    from hybridserve.calibration.genrecords import records_path

    out = {}
    for m in report.models:
        want = (m.sequence or {}).get("records", {}).get(split)
        path = records_path(wd, report.family, m.name, split)
        rec = GenerationRecords.load(path, want)
        if rec is None:
            raise HybridServeError(
                f"{path}: missing or not the generations calibration.json was made from; "
                "re-run `hybridserve calibrate`"
            )
        out[m.name] = rec
    return out
