"""``hybridserve serve`` of a generative family: what it serves; bad setups exit 2, one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridserve.cli import main
from hybridserve.errors import HybridServeError
from hybridserve.genserving import (
    generative_engine,
    generative_family_path,
    resolve_generative_target,
)
from hybridserve.models.family import bundled_config_path
from server.gen_harness import ALWAYS_ESCALATE, FAMILY, policy, save_family

pytestmark = pytest.mark.unit


def _exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") <= 1  # one message (a long line may wrap once)
    return err


def test_a_generative_family_is_recognised(tmp_path: Path) -> None:
    kjv = bundled_config_path("kjv-gpt")
    assert generative_family_path(tmp_path, None, "kjv-gpt", None) == kjv
    assert generative_family_path(tmp_path, None, "fashion-mnist", None) is None
    # no family named: the policy names it
    policy(ALWAYS_ESCALATE).__class__(
        family="kjv-gpt", chain=("tiny", "giant"), thresholds=(0.5,),
        calibrators=policy(0.0).calibrators, confidence="min", task="generate",
    ).save(tmp_path / "policy-ap.json")  # fmt: skip
    assert generative_family_path(tmp_path, None, None, None) == kjv


def test_workdir_policy_or_the_giant_alone(tmp_path: Path) -> None:
    yaml = save_family(tmp_path / "lms")
    alone = resolve_generative_target(tmp_path / "wd", yaml)
    assert alone.policy is None and "giant" in alone.policy_source
    policy(ALWAYS_ESCALATE).save(tmp_path / "wd" / "policy-ap.json")
    target = resolve_generative_target(tmp_path / "wd", yaml)
    assert target.policy is not None and target.policy.chain == ("small", "big")
    assert resolve_generative_target(tmp_path / "wd", yaml, giant_only=True).policy is None
    engine = generative_engine(target)
    assert engine.chain == ("small", "big") and engine.family.name == FAMILY
    assert generative_engine(alone).family.names == ("big",)  # only the giant is loaded
    stepwise = generative_engine(target, iteration_level=True)
    assert stepwise.iteration_level and stepwise.describe()["batching"] == "iteration-level"
    with pytest.raises(HybridServeError, match="--giant-only and --policy"):
        resolve_generative_target(tmp_path, yaml, policy=tmp_path / "p.json", giant_only=True)


def test_bad_setups_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    yaml = save_family(tmp_path / "lms")
    broken = tmp_path / "broken"
    save_family(broken)
    (broken / "big" / "config.json").unlink()
    capsys.readouterr()  # the tiny models' save-progress bars
    wd = ["--workdir", str(tmp_path / "wd"), "--port", "0"]
    base = ["serve", "--config", str(yaml), *wd]
    assert "not found" in _exit_2([*base, "--policy", str(tmp_path / "none.json")], capsys)
    assert "'cuda:7'" in _exit_2([*base, "--device", "cuda:7"], capsys)
    ray = [*base, "--backend", "ray"]
    assert "--ray-front serve" in _exit_2([*ray, "--ray-front", "serve"], capsys)
    assert "--iteration-level" in _exit_2([*ray, "--iteration-level"], capsys)
    assert "'nope'" in _exit_2([*base, "--backend", "nope"], capsys)
    assert "--plan" in _exit_2([*base, "--plan", str(tmp_path / "plan.json")], capsys)
    assert "classifier families only" in _exit_2([*base, "--drift"], capsys)
    other = policy(ALWAYS_ESCALATE).to_dict() | {"family": "someone-else"}
    from hybridserve.tuning.policy import CascadePolicy

    CascadePolicy.from_dict(other).save(tmp_path / "other.json")
    assert "someone-else" in _exit_2([*base, "--policy", str(tmp_path / "other.json")], capsys)
    msg = _exit_2(["serve", "--config", str(broken / "family.yaml"), *wd, "--giant-only"], capsys)
    assert "config.json" in msg


def test_iteration_level_is_for_generative_families(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--family", "fashion-mnist", "--workdir", str(tmp_path), "--port", "0"]
    assert "--iteration-level applies to generative" in _exit_2(
        [*argv, "--iteration-level"], capsys
    )


def test_ray_backend_gets_the_resolved_generative_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --backend ray`` of a generative family reaches the generative Ray backend with
    the local backend's target; an address skips this machine's device check."""
    from hybridserve.backends import ServeOptions, ray_genbackend
    from hybridserve.backends.run import run_serve

    yaml = save_family(tmp_path / "lms")
    policy(ALWAYS_ESCALATE).save(tmp_path / "wd" / "policy-ap.json")
    seen: list[tuple[ServeOptions, object]] = []
    monkeypatch.setattr(ray_genbackend, "serve_options", lambda o, t: seen.append((o, t)))
    options = ServeOptions(workdir=tmp_path / "wd", family_config=yaml, port=0, decode_batch=4)
    run_serve(options, "ray")
    ((got, target),) = seen
    assert got is options
    assert target.policy == policy(ALWAYS_ESCALATE)  # type: ignore[attr-defined]
    assert target.family_path == yaml.resolve()  # type: ignore[attr-defined]
    with pytest.raises(HybridServeError, match="'cuda:7'"):
        run_serve(options.model_copy(update={"device": "cuda:7"}), "ray")
    remote = options.model_copy(update={"device": "cuda:7", "address": "ray://head:10001"})
    run_serve(remote, "ray")
    assert seen[-1][0].device == "cuda:7"
