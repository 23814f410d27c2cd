"""The drift bench: clean traffic, then a corruption; giant-only vs static vs adaptive cascade.

``hybridserve bench --drift`` and ``benchmarks/bench_drift.py`` run it on a workdir with
``calibration.json``, ``logits/`` (val/test) and ``profile.json``. Each model scores each
corrupted image set once (``images`` test images per corruption and severity, cached under
``WORKDIR/logits/drift/``); the cascade is replayed at logit level by the policy's own
``decide``. Reports per ``window`` requests: accuracy and energy per request of the three
systems, alarm time, false alarms on clean streams, and the label-free estimate's error.

The estimate's ``WindowAccuracy`` is trained on *validation* images under the same corruption
catalogue (every severity, ``shift_images`` images, another seed), never on the test images the
streams use; the bench also replays each shifted stream with a model trained without that
stream's corruption, and reports that error separately (a shift the estimator never saw).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.data import load_eval_split
from hybridserve.data.corruptions import CORRUPTIONS, SEVERITIES
from hybridserve.drift.monitor import DriftMonitor, ShiftSet
from hybridserve.drift.replay import StreamResult, replay_adaptive, replay_static
from hybridserve.drift.shifted import CATALOGUE_SEED, catalogue_logits, shifted_logits
from hybridserve.models import load_family
from hybridserve.tuning.search import APSearch
from hybridserve.tuning.tune import _cached_logits, _calibration, load_costs
from hybridserve.workdir import Workdir


@dataclass(frozen=True)
class DriftOptions:
    """Settings of one drift bench run (the CLI's and the benchmark script's flags)."""

    out: Path | None = None
    plot: Path | None = None
    images: int = 2000
    clean_before: int = 2000
    clean_streams: int = 5
    clean_length: int = 5000
    severities: tuple[int, ...] = (2, 4)
    corruptions: tuple[str, ...] = tuple(sorted(CORRUPTIONS))
    window: int = 500
    shadow_fraction: float = 0.025
    signature_window: int = 300
    shift_images: int = 1000
    shift_seed: int = CATALOGUE_SEED
    guard_pairs: int = 600
    margin_pt: float = 0.3
    progress: bool = False


def windows(values: npt.NDArray[Any], w: int) -> list[float]:
    return [float(values[i : i + w].mean()) for i in range(0, values.size - w + 1, w)]


def estimate_errors(res: StreamResult, accuracy: list[float]) -> list[float]:
    """Per window with an estimate: how far the label-free estimate was from the accuracy."""
    return [abs(e - a) for e, a in zip(res.estimates, accuracy, strict=True) if e is not None]


def summarise(res: StreamResult, y_len: int, w: int) -> dict[str, Any]:
    return {
        "accuracy": windows(res.correct.astype(float), w),
        "energy_mj": windows(res.energy_j * 1e3, w),
        "events": res.events,
    }


def run_drift_bench(workdir: Path, args: DriftOptions) -> dict[str, Any]:
    """Run the drift bench on ``workdir`` (a calibrated, profiled classifier workdir); write
    ``args.out`` (JSON) and ``args.plot`` (PNG) when set; return the report."""
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    wd = Workdir(workdir)
    fam_name, cals = _calibration(wd)
    names = list(cals)
    vl, vy = _cached_logits(wd, fam_name, names, "val")
    tl, ty = _cached_logits(wd, fam_name, names, "test")
    costs = load_costs(wd, fam_name, names)
    policy = APSearch().fit(vl, vy, costs, cals, family=fam_name).policy_
    giant = names[-1]
    fam = load_family(fam_name)
    va = load_eval_split("val")
    n_shift = min(args.shift_images, va.y.size)
    shifted_val = catalogue_logits(
        fam,
        va.x[:n_shift],
        va.y[:n_shift],
        wd,
        args.corruptions,
        SEVERITIES,
        seed=args.shift_seed,
    )

    def shift_sets(leave_out: str | None = None) -> list[ShiftSet]:
        sets: list[ShiftSet] = [(vl, vy)]
        sets += [(ls.logits, ls.labels) for (n, _), ls in shifted_val.items() if n != leave_out]
        return sets

    def watcher(leave_out: str | None = None) -> DriftMonitor:
        return DriftMonitor(
            shadow_fraction=args.shadow_fraction, signature_window=args.signature_window
        ).fit(policy, vl, vy, shift_sets=shift_sets(leave_out))

    monitor = watcher()
    # per corruption, a monitor whose estimate never saw it (the error on an unseen shift)
    unseen = {name: watcher(name) for name in args.corruptions}

    def adapt(
        watch: DriftMonitor, logits: dict[str, Any], labels: npt.NDArray[Any], seed: int
    ) -> StreamResult:
        return replay_adaptive(
            policy,
            watch,
            logits,
            labels,
            costs,
            window=args.window,
            seed=seed,
            guard_pairs=args.guard_pairs,
            margin_pt=args.margin_pt,
        )

    giant_cost = costs[giant].energy_j * 1e3
    w = args.window
    report: dict[str, Any] = {
        "policy": {"chain": list(policy.chain), "thresholds": list(policy.thresholds)},
        "settings": asdict(args) | {"workdir": str(workdir)},
        "monitor": monitor.state(),
        "clean": [],
        "shifts": [],
    }
    # clean streams: seeded resamples of the test split (false alarms, shadow overhead, MAE)
    rng = np.random.default_rng(1)
    false_alarms, clean_total, shadow_e, static_e = 0, 0, 0.0, 0.0
    errs: list[float] = []
    errs_shift: list[float] = []
    errs_unseen: list[float] = []
    for s in range(args.clean_streams):
        idx = rng.integers(0, ty.size, args.clean_length)
        logits = {m: tl[m][idx] for m in names}
        res = adapt(monitor, logits, ty[idx], 100 + s)
        st = replay_static(policy, logits, ty[idx], costs)
        alarms = [e for e in res.events if e["event"] == "alarm"]
        false_alarms += len(alarms)
        clean_total += idx.size
        shadow_e += res.shadow_energy_j
        static_e += float(st.energy_j.sum())
        acc = windows(res.correct.astype(float), w)
        errs += estimate_errors(res, acc)
        report["clean"].append(
            {
                "requests": int(idx.size),
                "alarms": alarms,
                "estimate": res.estimates,
                "accuracy": acc,
            }
        )
    # shifted streams: clean prefix from the test split's other rows, then the corrupted set
    te = load_eval_split("test")
    x, y = te.x[: args.images], te.y[: args.images]
    pre = np.arange(args.images, te.y.size)[: args.clean_before]
    targets = {"detected_within_window": 0, "needed": 0}
    # after the swap, on each stream that needed the alarm: accuracy lost against the giant, and
    # the saving (1.0 where the re-tune kept the giant alone)
    retunes: list[dict[str, Any]] = []
    for name in args.corruptions:
        for sev in args.severities:
            ls = shifted_logits(fam, x, y, name, sev, wd)
            order = np.random.default_rng(sev).permutation(args.images)
            logits = {m: np.concatenate([tl[m][pre], ls.logits[m][order]]) for m in names}
            labels = np.concatenate([ty[pre], y[order]])
            change = pre.size
            st = replay_static(policy, logits, labels, costs)
            ad = adapt(monitor, logits, labels, sev)
            g_ok = logits[giant].argmax(1) == labels
            alarm_at: list[int] = [e["request"] for e in ad.events if e["event"] == "alarm"]
            pre_alarms = [a for a in alarm_at if a <= change]
            post = [a - change for a in alarm_at if a > change]
            false_alarms += len(pre_alarms)
            clean_total += change
            gap = 100 * (g_ok[change:].mean() - st.correct[change:].mean())
            acc = windows(ad.correct.astype(float), w)
            errs_shift += estimate_errors(ad, acc)
            # the same stream, its estimate from a window model that never saw this corruption
            ad_blind = adapt(unseen[name], logits, labels, sev)
            errs_unseen += estimate_errors(ad_blind, windows(ad_blind.correct.astype(float), w))
            swaps = [e for e in ad.events if e["event"] == "swap"]
            after = swaps[0]["request"] if swaps else labels.size
            row = {
                "corruption": name,
                "severity": sev,
                "change_at": change,
                "giant_acc_shift": float(g_ok[change:].mean()),
                "static_acc_shift": float(st.correct[change:].mean()),
                "static_gap_pt": float(gap),
                "alarm_delay": post[0] if post else None,
                "false_alarms_before_change": len(pre_alarms),
                "adaptive_acc_after_swap": float(ad.correct[after:].mean())
                if after < labels.size
                else None,
                "giant_acc_after_swap": float(g_ok[after:].mean()) if after < labels.size else None,
                "adaptive_energy_mj_after_swap": float(ad.energy_j[after:].mean() * 1e3)
                if after < labels.size
                else None,
                "giant_energy_mj": giant_cost,
                "windows": {
                    "giant": {
                        "accuracy": windows(g_ok.astype(float), w),
                        "energy_mj": [giant_cost] * (labels.size // w),
                    },
                    "static": summarise(st, labels.size, w),
                    "adaptive": summarise(ad, labels.size, w) | {"estimate": ad.estimates},
                },
            }
            if gap >= 2.0:
                targets["needed"] += 1
                targets["detected_within_window"] += int(bool(post) and post[0] <= w)
                if after < labels.size:
                    loss = 100 * float(g_ok[after:].mean() - ad.correct[after:].mean())
                    saving = giant_cost / float(ad.energy_j[after:].mean() * 1e3)
                    retunes.append(
                        {"stream": f"{name}-s{sev}", "loss_pt": loss, "energy_saving": saving}
                    )
            report["shifts"].append(row)
            if args.progress:
                print(
                    f"{name:14s} s{sev} gap {gap:5.1f} delay {row['alarm_delay']} "
                    f"pre-alarms {len(pre_alarms)}"
                    f" adapt {row['adaptive_acc_after_swap']} giant {row['giant_acc_after_swap']}"
                    f" E {row['adaptive_energy_mj_after_swap']}",
                    flush=True,
                )
    report["summary"] = {
        "false_alarms": false_alarms,
        "clean_requests": clean_total,
        "shadow_extra_energy_share": shadow_e / static_e,
        "estimate_mae_pt_clean_streams": 100 * float(np.mean(errs)) if errs else None,
        "estimate_mae_pt_shift_streams": 100 * float(np.mean(errs_shift)) if errs_shift else None,
        "estimate_mae_pt_all_windows": 100 * float(np.mean(errs + errs_shift))
        if errs + errs_shift
        else None,
        "estimate_mae_pt_shift_streams_unseen_corruption": 100 * float(np.mean(errs_unseen))
        if errs_unseen
        else None,
        "alarm_targets": targets,
        "after_retune": retunes,
        "seconds": time.time() - t0,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1, default=str))
    if args.plot is not None:
        plot(report, args.plot, w)
    return report


def plot(report: dict[str, Any], path: Path, w: int) -> None:
    """Accuracy and energy per window over each shifted stream (one row of panels each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["shifts"]
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 1.8 * len(rows)), squeeze=False)
    for ax, row in zip(axes, rows, strict=True):
        for system, style in (("giant", "k-"), ("static", "b--"), ("adaptive", "r-")):
            win = row["windows"][system]
            x = np.arange(len(win["accuracy"])) * w + w
            ax[0].plot(x, win["accuracy"], style, label=system)
            ax[1].plot(x, win["energy_mj"], style, label=system)
        est = [np.nan if e is None else e for e in row["windows"]["adaptive"]["estimate"]]
        ax[0].plot(np.arange(len(est)) * w + w, est, "r:", label="estimate")
        for a in ax:
            a.axvline(row["change_at"], color="grey", lw=0.8)
        ax[0].set_ylabel(f"{row['corruption']}-s{row['severity']}", fontsize=7)
    axes[0][0].set_title("accuracy per window")
    axes[0][1].set_title("energy per request (mJ)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
