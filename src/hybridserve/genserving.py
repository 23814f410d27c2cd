"""What to serve when the family is generative: (family YAML, policy), checked before loading.

``hybridserve serve`` comes here (``backends/run.py``) when the family it would serve declares
``task: generate``. The family is found as for classifiers (``--config``, else ``--family``,
else the policy's); the policy is ``--policy``, else ``WORKDIR/policy-ap.json``; with
``--giant-only``, or when the workdir holds no policy yet, the giant serves alone (nothing to
tune for that). Plans do not place generative models yet: every chain model runs on
``--device`` (in this process on the local backend; in one Ray Serve deployment per chain
model on the Ray backend, ``backends/ray_genbackend.py``). Every mismatch is a one-line
``HybridServeError`` (the CLI exits 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hybridserve.devices import resolve_device
from hybridserve.errors import HybridServeError
from hybridserve.models.family import BUNDLED, bundled_config_path, is_generative
from hybridserve.models.generative_family import (
    GenerativeFamilyConfig,
    build_generative_family,
    read_generative_config,
)
from hybridserve.runtime.config import EngineConfig
from hybridserve.runtime.genengine import GenerativeEngine, giant_only_policy
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.workdir import Workdir, read_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerativeTarget:
    """A generative family's YAML and the policy to route it by (``None``: the giant alone)."""

    config: GenerativeFamilyConfig
    family_path: Path
    policy: CascadePolicy | None
    #: the policy file, or why there is none
    policy_source: str

    @property
    def family_name(self) -> str:
        return self.config.family


def generative_family_path(
    workdir: Path, policy: Path | None, family: str | None, family_config: Path | None
) -> Path | None:
    """The family YAML ``serve`` would read, when it is generative (else ``None``).

    Reads small files only. Anything it cannot tell (no family named, an unreadable policy) is
    left to the classifier path, whose errors already say what is missing.
    """
    if family_config is not None:
        return Path(family_config) if is_generative(Path(family_config)) else None
    if family is not None:
        if family not in BUNDLED:
            return None
        path = bundled_config_path(family)
        return path if is_generative(path) else None
    policy_file = Path(policy) if policy is not None else Workdir(Path(workdir)).policy("ap")
    if not policy_file.is_file():
        return None
    try:
        raw = read_json(policy_file, "policy")
    except HybridServeError:
        return None
    name = raw.get("family")
    if raw.get("task") != "generate" or name not in BUNDLED:
        return None
    return bundled_config_path(str(name))


def resolve_generative_target(
    workdir: Path,
    family_path: Path,
    *,
    policy: Path | None = None,
    giant_only: bool = False,
) -> GenerativeTarget:
    """The family and the policy to serve (see the module docstring)."""
    cfg = read_generative_config(family_path)
    if giant_only:
        if policy is not None:
            raise HybridServeError("--giant-only and --policy: pass one of them")
        return GenerativeTarget(cfg, family_path.resolve(), None, "--giant-only")
    policy_file = Path(policy) if policy is not None else Workdir(Path(workdir)).policy("ap")
    if not policy_file.is_file():
        if policy is not None:
            raise HybridServeError(f"{policy_file}: not found")
        log.warning(
            "%s: no policy; serving the giant alone (run `hybridserve calibrate` and "
            "`hybridserve tune` for a cascade)",
            policy_file,
        )
        return GenerativeTarget(cfg, family_path.resolve(), None, "none (giant only)")
    the_policy = CascadePolicy.load(policy_file, family=cfg.family)
    if the_policy.task != "generate":
        raise HybridServeError(
            f"{policy_file}: a classifier policy; family {cfg.family!r} is generative "
            "(re-run `hybridserve tune` on a generative workdir)"
        )
    try:
        the_policy.check_family([m.name for m in cfg.models], cfg.family)
    except HybridServeError as err:
        raise HybridServeError(f"{policy_file}: {err}") from None
    return GenerativeTarget(cfg, family_path.resolve(), the_policy, str(policy_file))


def generative_engine(
    target: GenerativeTarget,
    config: EngineConfig | None = None,
    *,
    device: str = "cpu",
    max_batch: int = 8,
    max_wait_ms: float = 2.0,
    iteration_level: bool = False,
) -> GenerativeEngine:
    """An unstarted engine for ``target``; loads every chain model's weights on ``device``."""
    spec = resolve_device(device)
    cfg = target.config
    chain = target.policy.chain if target.policy is not None else (cfg.models[-1].name,)
    # only the chain's models are loaded (model_copy skips validation: one model may remain)
    cfg = cfg.model_copy(update={"models": [m for m in cfg.models if m.name in chain]})
    family = build_generative_family(cfg, target.family_path.parent, spec.torch_device)
    policy = target.policy if target.policy is not None else giant_only_policy(family)
    return GenerativeEngine(
        policy,
        family,
        config,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        iteration_level=iteration_level,
    )
