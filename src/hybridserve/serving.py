"""What to serve: (family, policy, plan) from a workdir and options, checked against this machine.

``serve`` (local and Ray backends), ``bench`` and ``quickstart`` all find what they serve here,
with one set of fallbacks:

- policy: ``--policy``, else ``WORKDIR/policy-ap.json``;
- family: ``--config`` (a family YAML), else ``--family``, else the policy's (bundled) family;
- plan: ``--plan``, else ``WORKDIR/plan.json``, else one replica of every chain model on one
  device (``Plan.default``) at the profile's serving batch size (64 without a profile).

``resolve_target`` reads files only (no weights, no torch models) and checks that the three
agree; ``check_here`` checks the plan against this machine (devices exist, memory, batch sizes,
queue size), so a server that could never start fails in seconds with one line, before it binds
its port or loads a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hybridserve.devices import cuda_device_count, memory_bytes, parse_device
from hybridserve.errors import HybridServeError
from hybridserve.models.family import Family, FamilyConfig, bundled_config_path, read_config
from hybridserve.planning.plan import DeviceAssignment, Placement, Plan
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.workdir import Workdir

#: Batch size of the fallback plan when the workdir holds no profile.
DEFAULT_BATCH_SIZE = 64
#: Most rows one model call may take. Far above any batch the planner picks (≤ 256 by default);
#: a plan beyond it is a typo or a corrupt file, and would try to allocate the input at once.
MAX_BATCH_SIZE = 65_536
#: Bytes per input element once preprocessed (float32).
_ELEMENT_BYTES = 4


@dataclass(frozen=True)
class ServeTarget:
    """A policy, the plan that places its chain, and the family both name (not yet loaded)."""

    policy: CascadePolicy
    plan: Plan
    family: FamilyConfig
    #: The family's YAML file (bundled or the user's).
    family_path: Path
    #: True when the family came from ``--config`` (a user's YAML) rather than a bundled name.
    user_config: bool
    #: Where the plan came from: its file, or ``"default"``.
    plan_source: str

    @property
    def family_name(self) -> str:
        return self.family.family

    @property
    def config(self) -> Path | None:
        """``--config`` to load the same family again (None: the bundled one by name)."""
        return self.family_path if self.user_config else None

    def load_family(self, device: str = "cpu") -> Family:
        """Build the family's models (weights loaded) on ``device``."""
        from hybridserve.models.family import build_family

        return build_family(self.family, self.family_path.parent, device)

    def placements(self) -> list[tuple[DeviceAssignment, Placement]]:
        """Every placement of a chain model (the only ones the runtime serves)."""
        chain = set(self.policy.chain)
        return [(d, p) for d in self.plan.devices for p in d.placements if p.model in chain]

    @property
    def largest_batch(self) -> int:
        return max(p.batch_size for _, p in self.placements())


def serving_batch_size(workdir: Workdir, family: str | None = None) -> int:
    """The profile's serving batch size (of ``family``, when given), else ``DEFAULT_BATCH_SIZE``."""
    from hybridserve.profiling.profile import Profile

    if not workdir.profile.is_file():
        return DEFAULT_BATCH_SIZE
    profile = Profile.load(workdir.profile)
    if family is not None and profile.family != family:
        return DEFAULT_BATCH_SIZE
    return int(profile.serving_batch_size)


def resolve_family(family: str | None, config: Path | None) -> tuple[FamilyConfig, Path, bool]:
    """A family's validated YAML: ``config``'s, else the bundled ``family``'s."""
    if config is not None:
        cfg = read_config(Path(config))
        if family is not None and family != cfg.family:
            raise HybridServeError(
                f"--family {family!r} but --config {config} declares family {cfg.family!r}"
            )
        return cfg, Path(config).resolve(), True
    if family is None:
        raise HybridServeError("no family: pass --family or --config")
    path = bundled_config_path(family)
    return read_config(path), path, False


def resolve_target(
    workdir: Path | str,
    *,
    policy: Path | None = None,
    plan: Path | None = None,
    family: str | None = None,
    family_config: Path | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
) -> ServeTarget:
    """Find the policy, family and plan to serve (the fallbacks in the module docstring)."""
    wd = Workdir(Path(workdir))
    policy_file = Path(policy) if policy is not None else wd.policy("ap")
    if policy is None and not policy_file.is_file():
        raise HybridServeError(
            f"{policy_file}: not found; run `hybridserve tune --workdir {wd.root}` or pass --policy"
        )
    the_policy = CascadePolicy.load(policy_file)
    cfg, path, user = resolve_family(
        family if family is not None or family_config is not None else the_policy.family,
        family_config,
    )
    names = tuple(m.name for m in cfg.models)
    the_policy.check_family(names, cfg.family)
    if plan is not None:
        the_plan, source = Plan.load(Path(plan)), str(plan)
    elif wd.plan.is_file():
        the_plan, source = Plan.load(wd.plan), str(wd.plan)
    else:
        b = batch_size if batch_size is not None else serving_batch_size(wd, cfg.family)
        the_plan = Plan.default(cfg.family, the_policy.chain, device=device, batch_size=b)
        source = "default"
    target = ServeTarget(the_policy, the_plan, cfg, path, user, source)
    check_agreement(target)
    return target


def targets_for_systems(
    workdir: Workdir,
    policies: Mapping[str, CascadePolicy],
    family: tuple[FamilyConfig, Path, bool],
    *,
    device: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, ServeTarget]:
    """A target per benched system: ``plan.json`` for the systems whose chain it was planned
    for and places in full (unless ``device`` is given), else one replica of every chain model
    on ``device`` (default cpu)."""
    cfg, path, user = family
    planned = Plan.load(workdir.plan) if workdir.plan.is_file() and device is None else None

    def planned_for(plan: Plan, chain: tuple[str, ...]) -> bool:
        if (plan.chain or plan.models) != chain:
            return False
        # a plan may leave out a model its policy never reaches; it cannot serve that chain
        return all(plan.replicas(m) for m in chain)

    out = {}
    for name, policy in policies.items():
        if planned is not None and planned_for(planned, tuple(policy.chain)):
            plan, source = planned, str(workdir.plan)
        else:
            plan = Plan.default(cfg.family, policy.chain, device or "cpu", batch_size)
            source = "default"
        target = ServeTarget(policy, plan, cfg, path, user, source)
        check_agreement(target)
        out[name] = target
    return out


def check_agreement(target: ServeTarget) -> None:
    """The plan is for the policy's family and places every model the policy routes to."""
    plan, policy = target.plan, target.policy
    where = "" if target.plan_source == "default" else f"{target.plan_source}: "
    if plan.family != policy.family:
        raise HybridServeError(
            f"{where}plan is for family {plan.family!r}, the policy for {policy.family!r}; "
            "re-run `hybridserve plan` for this policy"
        )
    if plan.chain and tuple(plan.chain) != tuple(policy.chain):
        raise HybridServeError(
            f"{where}plan is for chain {list(plan.chain)}, the policy routes "
            f"{list(policy.chain)}; re-run `hybridserve plan` for this policy"
        )
    missing = [m for m in policy.chain if not plan.replicas(m)]
    if missing:
        raise HybridServeError(
            f"{where}plan places no replica of {missing}, which the policy routes to; "
            "re-run `hybridserve plan` for this policy"
        )


def check_here(
    target: ServeTarget, *, queue_size: int | None = None, this_machine: bool = True
) -> None:
    """Refuse a plan this process could never serve, before any port or model is touched.

    Always: batch sizes within ``MAX_BATCH_SIZE`` and not above ``queue_size`` (a position's queue
    caps its batches). With ``this_machine`` (every backend but Ray on a remote cluster): one
    node; every device is ``cpu`` or an existing ``cuda:N``; each device's planned memory, and
    its largest batch's input, fit in that device's memory.
    """
    where = "" if target.plan_source == "default" else f"{target.plan_source}: "
    placed = target.placements()
    for dev, p in placed:
        if p.batch_size > MAX_BATCH_SIZE:
            raise HybridServeError(
                f"{where}{p.model} on {dev.id}: batch size {p.batch_size} is above the "
                f"limit of {MAX_BATCH_SIZE}; re-run `hybridserve plan`"
            )
    largest = target.largest_batch
    if queue_size is not None and queue_size < largest:
        raise HybridServeError(
            f"--queue-size {queue_size} is below the plan's largest batch size {largest}: "
            f"every batch would be cut to {queue_size}; pass --queue-size {largest} or more"
        )
    if this_machine:
        _check_devices(target, where, placed)


def _check_devices(
    target: ServeTarget, where: str, placed: list[tuple[DeviceAssignment, Placement]]
) -> None:
    hint = (
        f" (the plan was made for cluster {target.plan.cluster!r}; plan for this machine with "
        "`hybridserve plan --cluster local-cpu` or pass another --plan)"
    )
    nodes = sorted({d.node for d, _ in placed})
    if len(nodes) > 1:
        raise HybridServeError(
            f"{where}plan places models on {len(nodes)} nodes {nodes}; serve it with "
            "`--backend ray --address ...`" + hint
        )
    gpus: int | None = None
    input_bytes = _ELEMENT_BYTES * math.prod(target.family.input_shape)
    for dev in dict.fromkeys(d for d, _ in placed):
        try:
            spec = parse_device(dev.device)
        except HybridServeError:
            raise HybridServeError(
                f"{where}plan device {dev.id!r}: {dev.device!r} is not cpu, cuda or cuda:N" + hint
            ) from None
        if spec.type == "cuda":
            gpus = cuda_device_count() if gpus is None else gpus
            if (spec.index or 0) >= gpus:
                have = f"cuda:0..cuda:{gpus - 1}" if gpus else "no CUDA device"
                raise HybridServeError(
                    f"{where}plan device {dev.id!r} does not exist here ({have})" + hint
                )
        have_bytes = memory_bytes(spec.torch_device)
        if not have_bytes:
            continue
        mine = [p for d, p in placed if d == dev]
        need = sum(p.memory_bytes for p in mine)
        batch_need = max(p.batch_size for p in mine) * input_bytes
        if need > have_bytes or batch_need > have_bytes:
            raise HybridServeError(
                f"{where}plan device {dev.id!r} needs {_gib(max(need, batch_need))} "
                f"(planned memory, or one batch's input), this {spec.torch_device} has "
                f"{_gib(have_bytes)}" + hint
            )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
