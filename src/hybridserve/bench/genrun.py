"""The bench of a generative family (``task: generate``): every system served, measured, reported.

The systems are the classifier bench's (``bench/systems.py``): ``giant-only``, each model alone,
and the tuned cascades of the workdir (``cascade-ap`` from ``policy-ap.json``, ``cascade-eo``
from ``policy-eo.json``, ...), each served in this process by ``GenerativeEngine``, the engine
``hybridserve serve`` builds (one decode worker per chain model; the policy's ``decide`` routes),
every chain model on one device (plans do not place generative models yet). The systems take
turns over the same seeded request order (``run.serve_systems``), driven by the load generator
through ``gentarget.CompletionTarget``.

- **Requests**: the family's test prompts, one per request (``limit``: that many, spread evenly
  over the file, whose prompts run chapter by chapter), decoded greedily to the family's
  ``max_new_tokens``: the decoding calibrate and tune saw. Right when the family's scorer
  accepts the generated text.
- **Energy**: metered around each run as the classifier bench meters it (RAPL or the CPU-time
  model on the CPU, NVML on a GPU), and ``energy_j_per_request_profile``: Σ over models of the
  share of requests that reached it × its ``profile.json`` energy per request at the profile's
  serving batch size. The decode batch defaults to that batch size and the torch threads to the
  profile's, so the measured run and the profile's prediction price the same calls.
- **Oracle**: from calibrate's cached test generations (their fingerprints are checked against
  the prompts, weights, scorer and budget served here), never served; its energy is the
  profile's.
- **Tokens**: ``tokens_per_s`` (the standing answers' tokens per second),
  ``tokens_per_request`` and ``generated_tokens_per_request`` (per model, escalations included).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console

from hybridserve.bench.gentarget import RIGHT, CompletionTarget, TokenCount
from hybridserve.bench.report import markdown_table, token_table
from hybridserve.bench.run import LoadSettings, oracle_entry, save_report, serve_systems
from hybridserve.bench.systems import oracle_of, system_policies
from hybridserve.calibration.report import CalibrationReport
from hybridserve.errors import HybridServeError
from hybridserve.models.generative_family import GenerativeFamily
from hybridserve.runtime.config import EngineConfig
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.workdir import Workdir

#: A request's deadline in the bench: far above any queueing a saturating loop causes on a slow
#: CPU (the giant's batch of 16 long prompts takes about 0.3 s here), so no request is lost to
#: it and every system answers the same prompts.
REQUEST_TIMEOUT_S = 600.0
#: Saturation's cap on each system's run when none is given (its rounds together).
DEFAULT_DURATION_S = 600.0


def spread_indices(n: int, limit: int | None) -> npt.NDArray[np.int64]:
    """``limit`` indices of ``n`` prompts spread evenly over them (all when ``None`` or ≥ n)."""
    if limit is not None and limit < 1:
        raise HybridServeError(f"--limit must be ≥ 1, got {limit}")
    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    # steps of at least one prompt, so the floors are distinct
    return np.floor(np.linspace(0, n - 1, limit)).astype(np.int64)


def generative_clients(decode_batch: int, policies: dict[str, CascadePolicy]) -> int:
    """Closed-loop clients: two full decode batches per position of the longest chain.

    As for classifiers (``run.saturating_clients``), every system of a bench gets the same count:
    one batch decoding and one waiting at each position keeps a cascade's positions fed.
    """
    longest = max(len(p.chain) for p in policies.values())
    return 2 * decode_batch * longest


def _check_workdir(wd: Workdir, calibration: CalibrationReport, family: str) -> None:
    if calibration.task != "generate":
        raise HybridServeError(
            f"{wd.calibration} is a classifier calibration; run `hybridserve calibrate` on the "
            "generative family first"
        )
    if calibration.family != family:
        raise HybridServeError(
            f"{wd.calibration} is for family {calibration.family!r}, not {family!r}; run "
            f"`hybridserve calibrate` for {family!r} first"
        )


def _energy(wd: Workdir, family: str, names: tuple[str, ...]) -> tuple[dict[str, float], int, int]:
    """Per-model energy per request at the serving batch size, that size, and torch threads."""
    from hybridserve.profiling.profile import Profile

    if not wd.profile.is_file():
        raise HybridServeError(f"{wd.profile} not found: run `hybridserve profile` first")
    profile = Profile.load(wd.profile)
    if profile.family != family or profile.task != "generate":
        raise HybridServeError(
            f"{wd.profile} is a {profile.task} profile of family {profile.family!r}, not of the "
            f"generative family {family!r}; run `hybridserve profile --force`"
        )
    batch = int(profile.serving_batch_size)
    energy = {n: float(profile.model(n).energy_j_per_request(batch)) for n in names}
    threads = int(profile.settings.get("torch_threads") or 1)
    return energy, batch, threads


def _test_outcomes(
    wd: Workdir, calibration: CalibrationReport, family: GenerativeFamily, prompts: list[Any]
) -> dict[str, npt.NDArray[np.bool_]]:
    """Which test prompts each model got right in calibrate's cached generations.

    Refused when they were not made from these prompts, weights, scorer and budget (another
    ``--config`` of the same family name, or re-trained weights): the oracle would be another
    test's.
    """
    from hybridserve.calibration.generative import load_records
    from hybridserve.calibration.genrecords import prompts_digest, records_fingerprint
    from hybridserve.models.scorers import get_scorer

    records = load_records(wd, calibration, "test")
    scorer, digest = get_scorer(family.scorer), prompts_digest(prompts)
    for model in family.models:
        t = calibration.model(model.name).temperature
        want = records_fingerprint(model, digest, scorer, family.max_new_tokens, t)
        if records[model.name].fingerprint != want:
            raise HybridServeError(
                f"{wd.calibration}: the test generations of {model.name!r} were made from other "
                "prompts, weights, scorer or token budget than the family served here; run "
                "`hybridserve calibrate` with the same --family/--config first"
            )
    return {n: records[n].correct for n in family.names}


def run_generative_bench(
    workdir: Workdir,
    load: LoadSettings,
    *,
    family_name: str | None = None,
    config: Path | None = None,
    systems: list[str] | None = None,
    device: str | None = None,
    limit: int | None = None,
    decode_batch: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Bench every system of a generative ``workdir``; write report.json, report.md and plots."""
    import torch

    from hybridserve.calibration import load_calibration
    from hybridserve.calibration.generative import split_prompts
    from hybridserve.devices import resolve_device
    from hybridserve.models.family import family_path
    from hybridserve.models.generative import GenerationParams
    from hybridserve.models.generative_family import (
        build_generative_family,
        read_generative_config,
    )
    from hybridserve.models.scorers import get_scorer
    from hybridserve.runtime.genengine import GenerativeEngine

    if decode_batch is not None and decode_batch < 1:
        raise HybridServeError(f"--decode-batch must be ≥ 1, got {decode_batch}")
    calibration = load_calibration(workdir)
    path = family_path(family_name or calibration.family, config)
    cfg = read_generative_config(path)
    _check_workdir(workdir, calibration, cfg.family)
    names = tuple(m.name for m in cfg.models)
    if calibration.names != names:
        raise HybridServeError(
            f"{workdir.calibration} has models {list(calibration.names)}, the family "
            f"{list(names)}; run `hybridserve calibrate` again"
        )
    calibrators = {m.name: dict(m.calibrator) for m in calibration.models}
    policies = system_policies(workdir, names, calibrators)
    for name, policy in policies.items():
        if policy.task != "generate":
            raise HybridServeError(
                f"{name}: a classifier policy in {workdir.root}; run `hybridserve tune` on the "
                "generative workdir"
            )
    if systems:
        unknown = [s for s in systems if s not in policies]
        if unknown:
            raise HybridServeError(f"--systems: unknown {unknown}; known: {list(policies)}")
        policies = {k: v for k, v in policies.items() if k in systems}
    energy_j, batch, threads = _energy(workdir, cfg.family, names)
    decode_batch = decode_batch or batch
    spec = resolve_device(device or "cpu")
    family = build_generative_family(cfg, path.parent.resolve(), spec.torch_device)
    all_prompts = split_prompts(family, "test")
    correct = _test_outcomes(workdir, calibration, family, all_prompts)
    picked = spread_indices(len(all_prompts), limit)
    prompts = [all_prompts[i] for i in picked]
    if load.mode == "saturate" and load.concurrency is None:
        load = replace(load, concurrency=generative_clients(decode_batch, policies))
    engine_config = EngineConfig(
        queue_size=max(1024, 4 * (load.concurrency or 0)), request_timeout_s=REQUEST_TIMEOUT_S
    )
    scorer = get_scorer(family.scorer)
    params = GenerationParams(max_new_tokens=family.max_new_tokens)
    counts = {name: TokenCount() for name in policies}

    def make_engine(policy: CascadePolicy) -> CompletionTarget:
        name = next(k for k, p in policies.items() if p is policy)
        # the chain's models only, as `serve` loads them (a chain ends in its family's giant);
        # the weights are the ones loaded above, shared by every system
        chain = replace(family, models=tuple(family.model(n) for n in policy.chain))
        engine = GenerativeEngine(policy, chain, engine_config, max_batch=decode_batch)
        return CompletionTarget(engine, prompts, scorer, params, counts[name])

    x = np.arange(len(prompts), dtype=np.int64)
    y = np.full(len(prompts), RIGHT, dtype=np.int64)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        body = serve_systems(policies, make_engine, x, y, energy_j, load, console=console)
    finally:
        torch.set_num_threads(old_threads)
    latencies = body.pop("_latencies")
    for name, s in body["systems"].items():
        tokens = counts[name].per_request()
        per, rps = tokens["tokens_per_request"], s.get("throughput_rps")
        s["tokens_per_s"] = per * rps if per is not None and rps else None
        s.update(tokens)
        if len(s["chain"]) == 1:  # the same model offline, on these prompts (calibrate's cache)
            s["accuracy_offline"] = float(correct[s["chain"][0]][picked].mean())
    ok = np.stack([correct[n][picked] for n in names])
    acc, e_oracle, shares = oracle_of(ok, names, energy_j)
    body["systems"]["oracle"] = oracle_entry(
        acc,
        e_oracle,
        shares,
        len(prompts),
        "profile (computed from calibrate's cached test generations; never served)",
    )
    body["load"].update(
        prompts=len(prompts),
        prompts_in_test=len(all_prompts),
        limit=limit,
        max_new_tokens=family.max_new_tokens,
        decode_batch=decode_batch,
        torch_threads=threads,
        device=spec.torch_device,
    )
    out = {"task": "generate", "family": family.name, **body, "serving_batch_size": batch}
    save_report(workdir, out, latencies, generative_markdown(out))
    return out


def generative_markdown(body: dict[str, Any]) -> str:
    """``report.md`` of a generative bench."""
    m, load = body["machine"], body["load"]
    return (
        f"# hybridserve bench: {body['family']} (generate)\n\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}. "
        f"Energy source: **{body['energy_source']}** (the profile's prediction is "
        "`energy_j_per_request_profile` in report.json). "
        f"{load['prompts']} of {load['prompts_in_test']} test prompts, greedy to "
        f"{load['max_new_tokens']} tokens, decode batch {load['decode_batch']}, "
        f"{load['torch_threads']} torch thread(s). Load: {load}.\n\n"
        + markdown_table(body["systems"])
        + "\n\n"
        + token_table(body["systems"])
        + "\n\n![threshold graph](bench-threshold-graph.png)\n"
        "![latency CDF](latency-cdf.png)\n![energy per request](energy-per-request.png)\n"
    )
