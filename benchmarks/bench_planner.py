"""Planner solve time and quality vs cluster size, and the cascade's gain on the 4×A5000 example.

Targets: a 64-GPU, 8-model instance plans in < 10 s (gap reported); solve time is recorded for
8 → 512 GPUs (nodes of 8 × H100 80 GB, estimated costs of a synthetic 8-model family whose
120 GB giant must be split into 2 pipeline parts); on the bundled 4×A5000 example the bundled
family's cascade (the real AP policy's reach) reaches λ ≥ 3× a giant-only plan. Run::

    python benchmarks/bench_planner.py                  # writes benchmarks/out/bench_planner.json
    python benchmarks/bench_planner.py --policy hybridserve-out/policy-ap.json --max-gpus 128
    python benchmarks/bench_planner.py --skip-scaling   # the A5000 and H200 comparisons only

Each cluster comparison is made for two AP policies: the workdir's ``--policy`` (default
``DIR/policy-ap.json`` of ``--workdir``, itself defaulting to the repository's
``hybridserve-out``; priced by this machine's CPU profile), and, when the workdir holds
``calibration.json`` and cached logits, the AP policy priced for that cluster
(``hybridserve tune --cluster NAME``, tuned here in a scratch copy): the policy one would serve
there, whose gain is the headline ``gain``. Without a policy file the first falls back to a
plausible development reach vector (1, .45, .3, .2, .12). It is planned with time shares (the
default) and with integer replicas (``time_share=False``), and reports the ratio's ceiling
``1 / Σ_m reach_m·cost_m/cost_giant`` with ``cost = min_b u(b)/throughput(b)`` (device-seconds
per request): the most any plan on any number of such devices can gain while memory is not
binding. Every plan is checked with ``planning.check`` (memory and utilisation per device).
The same comparison runs on ``1x-h200``, whose costs were measured on an H200 (not estimated).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hybridserve.planning.check import problems
from hybridserve.planning.costs import load_costs
from hybridserve.planning.estimate import H100, estimate_table, synthetic_shapes
from hybridserve.planning.inputs import (
    ClusterConfig,
    DeviceSpec,
    NodeSpec,
    PlanOptions,
    Reach,
    expand,
    make_reach,
    read_cluster,
    read_policy_reach,
)
from hybridserve.planning.instance import build_instance
from hybridserve.planning.milp import count_vars
from hybridserve.planning.plan import Plan
from hybridserve.planning.planner import plan_for
from hybridserve.planning.pricing import Prices, request_prices
from hybridserve.planning.solve import plan_instance
from hybridserve.tuning.tune import run_tune
from hybridserve.workdir import Workdir

OUT = Path(__file__).resolve().parent / "out"
DEFAULT_WORKDIR = Path(__file__).resolve().parent.parent / "hybridserve-out"
TARGET_64_S = 10.0
TARGET_GAIN = 3.0
DEV_REACH = {"linear": 1.0, "mlp": 0.45, "cnn-small": 0.3, "cnn": 0.2, "vgg": 0.12}
SYNTH_REACH = (1.0, 0.6, 0.4, 0.28, 0.2, 0.14, 0.1, 0.07)


def h100_nodes(nodes: int) -> ClusterConfig:
    device = DeviceSpec(type="h100", count=8, memory_bytes="79GB", power_w=700.0, idle_power_w=70.0)
    return ClusterConfig(
        name=f"{8 * nodes}x-h100", nodes=[NodeSpec(name="node", count=nodes, devices=[device])]
    )


def scaling(max_gpus: int, solver: str) -> list[dict[str, Any]]:
    shapes = synthetic_shapes(8, giant_params=30_000_000_000)
    costs = {"h100": estimate_table("synthetic", shapes, H100).to_costs("estimated")}
    reach = make_reach(
        "synthetic",
        tuple(s.name for s in shapes),
        dict(zip((s.name for s in shapes), SYNTH_REACH, strict=True)),
    )
    rows = []
    nodes = 1
    while 8 * nodes <= max_gpus:
        cluster = expand(h100_nodes(nodes))
        options = PlanOptions(solver=solver)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        inst = build_instance(cluster, costs, reach, options)
        plan = plan_instance(inst)
        wall = time.perf_counter() - t0
        found = problems(plan)
        split = max(p.num_parts for d in plan.devices for p in d.placements)
        t1 = time.perf_counter()
        heur = plan_instance(build_instance(cluster, costs, reach, PlanOptions(solver="heuristic")))
        heur_wall = time.perf_counter() - t1
        rows.append(
            {
                "gpus": 8 * nodes,
                "nodes": nodes,
                "models": len(shapes),
                "configs": len(inst.configs),
                "milp_vars_aggregated": count_vars(inst, inst.groups(exact=False)),
                "milp_vars_exact": count_vars(inst, inst.groups(exact=True)),
                "solver": plan.solver,
                "solve_time_s": round(wall, 4),
                "lambda_rps": plan.lambda_rps,
                "optimality_gap": plan.optimality_gap,
                "energy_j_per_request": plan.energy_j_per_request,
                "max_pipeline_stages": split,
                "heuristic_only": {
                    "solve_time_s": round(heur_wall, 4),
                    "lambda_rps": heur.lambda_rps,
                    "optimality_gap_vs_lp": heur.optimality_gap,
                    "check_problems": problems(heur),
                },
                "check_problems": found,
                "notes": list(plan.notes),
            }
        )
        print(
            f"{8 * nodes:4d} GPUs: {plan.solver:16s} {wall:7.2f} s  λ={plan.lambda_rps:12,.0f}"
            f"  gap={plan.optimality_gap if plan.optimality_gap is not None else float('nan'):.2e}"
            f"  parts≤{split}  problems={len(found)}"
            f"  | heuristic alone {heur_wall:.2f} s λ={heur.lambda_rps:,.0f}"
        )
        nodes *= 2
    return rows


def fluid_ceiling(prices: Prices, reach: Reach) -> dict[str, Any]:
    """Device-seconds per request of each model at its cheapest batch size (as ``tune
    --cluster`` prices them), and the gain ceiling ``1 / Σ_m reach_m·cost_m/cost_giant``."""
    per = {m: prices.models[m].device_s for m in reach.chain}
    giant = reach.chain[-1]
    terms = {m: reach.fraction[m] * per[m] / per[giant] for m in reach.chain}
    return {
        "device_s_per_request": per,
        "terms": terms,
        "gain_ceiling": 1.0 / sum(terms.values()),
    }


def cluster_gain(cluster_name: str, policy: Path | None) -> dict[str, Any]:
    """λ(cascade) / λ(giant-only) on a bundled single-type cluster, and its ceiling."""
    cluster = read_cluster(cluster_name)
    (device_type,) = cluster.types
    if policy is not None and policy.is_file():
        reach = read_policy_reach(policy)
        source = str(policy)
    else:
        reach = make_reach("fashion-mnist", tuple(DEV_REACH), DEV_REACH)
        source = "plausible development reach vector (no policy file)"
    giant = reach.chain[-1]
    giant_only = Reach(reach.family, (giant,), {giant: 1.0})
    costs = load_costs(cluster, None, reach.family, list(reach.chain))
    options = PlanOptions()
    prices = request_prices(cluster, reach.family, list(reach.chain), None, options.batch_sizes)
    ceiling = fluid_ceiling(prices, reach)
    kind = "ESTIMATE from datasheet specs" if costs[device_type].estimate else "MEASURED"
    out: dict[str, Any] = {
        "cluster": cluster.name,
        "reach_source": source,
        "reach_fraction": dict(reach.fraction),
        "costs": f"{Path(costs[device_type].source).name} ({kind})",
        "fluid": ceiling,
        "target_gain": TARGET_GAIN,
    }
    for mode, time_share in (("time_share", True), ("integer_replicas", False)):
        plans: dict[str, Plan] = {}
        row: dict[str, Any] = {}
        for label, r in (("cascade", reach), ("giant_only", giant_only)):
            t0 = time.perf_counter()
            plans[label] = plan_for(
                cluster, costs, r, options.model_copy(update={"time_share": time_share})
            )
            row[label] = {
                "lambda_rps": plans[label].lambda_rps,
                "solver": plans[label].solver,
                "optimality_gap": plans[label].optimality_gap,
                "energy_j_per_request": plans[label].energy_j_per_request,
                "capacity_rps": dict(plans[label].capacity_rps),
                "placements": {
                    d.id: [
                        f"{p.model}@{p.batch_size} share {p.time_share:.3f}" for p in d.placements
                    ]
                    for d in plans[label].devices
                },
                "solve_time_s": round(time.perf_counter() - t0, 4),
                "check_problems": problems(plans[label]),
            }
        row["gain"] = plans["cascade"].lambda_rps / plans["giant_only"].lambda_rps
        row["meets_target"] = row["gain"] >= TARGET_GAIN
        out[mode] = row
        print(
            f"{cluster.name} ({mode}): cascade λ={plans['cascade'].lambda_rps:,.0f}  giant-only "
            f"λ={plans['giant_only'].lambda_rps:,.0f}  gain {row['gain']:.2f}x"
        )
    out["gain"] = out["time_share"]["gain"]
    out["meets_target"] = out["time_share"]["meets_target"]
    print(f"  ceiling 1/Σ reach·cost/cost_giant = {ceiling['gain_ceiling']:.2f}x ({source})")
    return out


def cluster_priced_policy(workdir: Path, cluster_name: str, scratch: Path) -> Path | None:
    """The AP policy priced for ``cluster_name``, tuned in a scratch copy of ``workdir``'s
    calibration and logits (None when the workdir has not been calibrated)."""
    src = Workdir(workdir)
    if not src.calibration.is_file() or not src.logits_dir.is_dir():
        return None
    wd = Workdir(scratch / cluster_name)
    wd.ensure()
    shutil.copy2(src.calibration, wd.calibration)
    shutil.copytree(src.logits_dir, wd.logits_dir)
    if src.profile.is_file():
        shutil.copy2(src.profile, wd.profile)
    run_tune(wd, "ap", cluster=cluster_name)
    return wd.policy("ap")


def compare_on(cluster_name: str, workdir: Path, policy: Path, scratch: Path) -> dict[str, Any]:
    """Gains of the workdir's AP policy and of the AP policy priced for the cluster."""
    out: dict[str, Any] = {"workdir_policy": cluster_gain(cluster_name, policy)}
    priced = cluster_priced_policy(workdir, cluster_name, scratch)
    headline = out["workdir_policy"]
    if priced is not None:
        out["cluster_priced_policy"] = headline = cluster_gain(cluster_name, priced)
    out["gain"] = headline["gain"]
    out["meets_target"] = headline["meets_target"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-gpus", type=int, default=512)
    parser.add_argument("--solver", default="auto", choices=("auto", "milp", "heuristic"))
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="its policy-ap.json is the default"
    )
    parser.add_argument("--policy", type=Path, default=None, help="policy JSON for the A5000 run")
    parser.add_argument(
        "--skip-scaling", action="store_true", help="the A5000 and H200 comparisons only"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default out/bench_planner.json (…_a5000.json)"
    )
    args = parser.parse_args()
    policy = args.policy if args.policy is not None else args.workdir / "policy-ap.json"
    rows = [] if args.skip_scaling else scaling(args.max_gpus, args.solver)
    name = "bench_planner_a5000.json" if args.skip_scaling else "bench_planner.json"
    out_path = args.out if args.out is not None else OUT / name
    at64 = next((r for r in rows if r["gpus"] == 64), None)
    report = {
        "benchmark": "planner",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "costs": "estimated H100 table of a synthetic 8-model family (hybridserve.planning."
        "estimate.synthetic_shapes, 30e9-parameter giant)",
        "scaling": rows,
        "target_64_gpus_s": TARGET_64_S,
        "meets_64_gpu_target": None
        if at64 is None
        else bool(at64["solve_time_s"] < TARGET_64_S and at64["optimality_gap"] is not None),
    }
    with tempfile.TemporaryDirectory() as scratch:
        for key, name in (("a5000", "4x-a5000"), ("h200", "1x-h200")):
            report[key] = compare_on(name, args.workdir, policy, Path(scratch))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
