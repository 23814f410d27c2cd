"""From files to a checked ``plan.json``: the function the CLI and the quickstart call."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridserve.planning.check import check_plan
from hybridserve.planning.costs import TypeCosts, load_costs
from hybridserve.planning.inputs import (
    Cluster,
    PlanOptions,
    Reach,
    make_reach,
    read_cluster,
    read_policy_reach,
)
from hybridserve.planning.instance import build_instance
from hybridserve.planning.plan import Plan
from hybridserve.planning.solve import plan_instance
from hybridserve.workdir import Workdir


def plan_for(
    cluster: Cluster, costs: Mapping[str, TypeCosts], reach: Reach, options: PlanOptions
) -> Plan:
    """Plan ``reach`` on ``cluster`` and check the result (raises on an unsound plan)."""
    plan = plan_instance(build_instance(cluster, costs, reach, options))
    check_plan(plan)
    return plan


def parse_reach(text: str) -> dict[str, float]:
    """``"linear=1,mlp=0.45"`` → ``{"linear": 1.0, "mlp": 0.45}`` (order kept)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError as err:
            from hybridserve.errors import HybridServeError

            raise HybridServeError(f"--reach: expected model=fraction, got {part!r}") from err
    return out


def run_plan(
    workdir: Path | str | Workdir = Path("hybridserve-out"),
    cluster: str | Path = "local-cpu",
    policy_path: Path | None = None,
    objective: str = "throughput",
    options: PlanOptions | None = None,
    reach_override: Mapping[str, float] | None = None,
    family: str | None = None,
    save: bool = True,
) -> Plan:
    """Read the policy (default ``DIR/policy-ap.json``), the cluster and its profiles, plan,
    check, and write ``DIR/plan.json``.

    ``reach_override`` replaces the policy's reach fractions (its order is the chain when there
    is no policy file; then ``family`` names the family, default ``fashion-mnist``).
    """
    wd = workdir if isinstance(workdir, Workdir) else Workdir(Path(workdir))
    path = Path(policy_path) if policy_path is not None else wd.policy("ap")
    if reach_override is not None and not path.is_file():
        chain = tuple(reach_override)
        reach = make_reach(family or "fashion-mnist", chain, reach_override, "--reach")
    else:
        reach = read_policy_reach(path)
        if reach_override is not None:
            reach = make_reach(reach.family, reach.chain, reach_override, "--reach")
    update: dict[str, Any] = {"objective": objective}
    opts = (options or PlanOptions()).model_copy(update=update)
    opts = PlanOptions.model_validate(opts.model_dump())
    the_cluster = read_cluster(cluster)
    models = [m for m in reach.chain if reach.fraction[m] > 0]
    costs = load_costs(the_cluster, wd.profile, reach.family, models)
    plan = plan_for(the_cluster, costs, reach, opts)
    if save:
        wd.ensure()
        plan.save(wd.plan)
    return plan
