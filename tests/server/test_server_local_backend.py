"""``engine_from_workdir``: defaults, explicit files, and clear errors for missing pieces."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hybridserve.backends import ServeOptions, get_backend
from hybridserve.backends.local import engine_from_workdir
from hybridserve.errors import HybridServeError
from hybridserve.models import load_family
from hybridserve.planning import Plan
from hybridserve.tuning import CascadePolicy
from runtime.cascade_fixtures import simulate, temperature

pytestmark = pytest.mark.unit


def _policy() -> CascadePolicy:
    return CascadePolicy(
        family="tiny",
        chain=("small", "big"),
        thresholds=(0.8,),
        calibrators=(temperature(4.0), temperature(1.0)),
    )


def test_defaults_to_the_ap_policy_and_a_default_plan(
    tmp_path: Path, tiny_family_yaml: Path
) -> None:
    _policy().save(tmp_path / "policy-ap.json")
    engine = engine_from_workdir(tmp_path, family_config=tiny_family_yaml, batch_size=16)
    assert engine.chain == ("small", "big")
    family = load_family(config=tiny_family_yaml)
    x = family.split("val").x[:50]
    sim = simulate(_policy(), family, x)

    async def go() -> list[str]:
        async with engine:
            assert [
                r["batch_size"] for s in engine.describe()["positions"] for r in s["replicas"]
            ] == [
                16,
                16,
            ]
            return [a.model for a in await engine.predict(x)]

    assert asyncio.run(go()) == sim.model
    assert np.isin(sim.model, ["small", "big"]).all()


def test_explicit_plan_must_place_every_chain_model(tmp_path: Path, tiny_family_yaml: Path) -> None:
    _policy().save(tmp_path / "p.json")
    Plan.default("tiny", ("big",)).save(tmp_path / "plan.json")
    with pytest.raises(HybridServeError, match=r"plan is for chain \['big'\], the policy routes"):
        engine_from_workdir(tmp_path, tmp_path / "p.json", family_config=tiny_family_yaml)
    # a plan that names no chain (older files) is checked model by model
    replace(Plan.default("tiny", ("big",)), chain=()).save(tmp_path / "plan.json")
    with pytest.raises(HybridServeError, match=r"plan places no replica of \['small'\]"):
        engine_from_workdir(tmp_path, tmp_path / "p.json", family_config=tiny_family_yaml)


def test_missing_policy_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        HybridServeError, match=r"policy-ap\.json: not found; run `hybridserve tune"
    ):
        engine_from_workdir(tmp_path)


def test_backends_are_chosen_by_name() -> None:
    assert hasattr(get_backend("local"), "serve_options")
    with pytest.raises(HybridServeError, match="--backend 'k8s': expected one of"):
        get_backend("k8s")
    assert ServeOptions(workdir=Path("w")).host == "127.0.0.1"
