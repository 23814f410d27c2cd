"""``hybridserve serve`` refuses what it could never serve: exit 2 and one line, in seconds.

Plans are checked against this machine before the port is bound or a model is loaded (a plan
for GPUs it lacks, an unknown device, another family, absurd batches or memory, a queue smaller
than a batch); a taken port, an unknown log level and an empty API key are refused the same way.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hybridserve.cli import main
from hybridserve.planning import DeviceAssignment, Placement, Plan
from hybridserve.tuning import CascadePolicy
from runtime.cascade_fixtures import temperature
from serve_process import free_port, serve_command

pytestmark = pytest.mark.integration

CHAIN = ("small", "big")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A workdir holding a policy for the tiny family (and no plan)."""
    CascadePolicy(
        family="tiny",
        chain=CHAIN,
        thresholds=(0.8,),
        calibrators=(temperature(4.0), temperature(1.0)),
    ).save(tmp_path / "wd" / "policy-ap.json")
    return tmp_path / "wd"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something listens on while the test runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _gpu_plan(n_gpus: int = 4) -> Plan:
    """A planner-style plan over ``n_gpus`` GPUs this machine does not have (as 4x-a5000)."""
    first = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = []
    for i, model in enumerate((*CHAIN, *CHAIN)[:n_gpus]):
        placement = Placement(model, 0, 1, i // 2, 64, 5.0, 2**20, 0.5)
        gpu = f"cuda:{first + i}"
        devices.append(
            DeviceAssignment(f"node/{gpu}", "node", gpu, "a5000", 23 * 2**30, (placement,))
        )
    return Plan(
        "tiny", "throughput", "milp", 0.0, 1.0, {}, {}, None, tuple(devices), CHAIN, "4x-a5000"
    )


def _with_placement(plan: Plan, **changes: object) -> Plan:
    """``plan`` with every placement changed as given (one CPU device)."""
    (dev,) = plan.devices
    placements = tuple(replace(p, **changes) for p in dev.placements)  # type: ignore[arg-type]
    return replace(plan, devices=(replace(dev, placements=placements),))


def _serve(
    argv: list[str], port: int, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, float]:
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *argv, "--port", str(port)])
    return int(exit_info.value.code or 0), capsys.readouterr().err, time.monotonic() - started


def _cpu_plan(**changes: object) -> Plan:
    return _with_placement(Plan.default("tiny", CHAIN), **changes)


def _tpu_plan() -> Plan:
    plan = _gpu_plan(2)
    tpu = replace(plan.devices[0], id="node/tpu:7", device="tpu:7")
    return replace(plan, devices=(tpu, plan.devices[1]))


def _other_family_plan() -> Plan:
    return Plan.default("other", CHAIN)


@pytest.mark.parametrize(
    ("make_plan", "message"),
    [
        (_gpu_plan, r"plan device 'node/cuda:\d+' does not exist here .*'4x-a5000'"),
        (_tpu_plan, r"plan device 'node/tpu:7': 'tpu:7' is not cpu, cuda or cuda:N"),
        (_other_family_plan, r"plan is for family 'other', the policy for 'tiny'"),
        (lambda: _cpu_plan(batch_size=10**9), r"batch size 1000000000 is above the limit of 65536"),
        (lambda: _cpu_plan(memory_bytes=2**60), r"plan device 'local/cpu' needs .* GiB .* has"),
    ],
    ids=["gpus-missing", "tpu", "other-family", "huge-batch", "memory"],
)
def test_an_unservable_plan_exits_2_before_the_port_is_bound(
    make_plan: Callable[[], Plan],
    message: str,
    workdir: Path,
    tiny_family_yaml: Path,
    taken_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_plan().save(workdir / "plan.json")
    # the port is taken: had the server bound it before checking the plan, the error would say so
    code, err, took = _serve(
        ["--workdir", str(workdir), "--config", str(tiny_family_yaml)], taken_port, capsys
    )
    assert code == 2
    assert err.count("\n") == 1, err
    assert re.search(message, err), err
    assert "cannot listen" not in err
    assert took < 30


def test_a_queue_smaller_than_the_plans_batch_is_refused(
    workdir: Path, tiny_family_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _cpu_plan(batch_size=64).save(workdir / "plan.json")
    code, err, _ = _serve(
        ["--workdir", str(workdir), "--config", str(tiny_family_yaml), "--queue-size", "8"],
        free_port(),
        capsys,
    )
    assert code == 2
    assert "--queue-size 8 is below the plan's largest batch size 64" in err
    assert err.count("\n") == 1, err


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*serve_command(), "serve", *argv], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_taken_port_exits_2_with_one_line(
    workdir: Path, tiny_family_yaml: Path, tiny_family_env: dict[str, str], taken_port: int
) -> None:
    argv = ["--workdir", str(workdir), "--config", str(tiny_family_yaml), "--port", str(taken_port)]
    done = _run(argv, tiny_family_env)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{taken_port}: another process is listening" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr


@pytest.mark.parametrize(
    ("argv", "env_key", "message"),
    [
        (["--log-level", "loud"], None, "--log-level 'loud': expected one of"),
        ([], "", "the API key (--api-key or HYBRIDSERVE_API_KEY) is empty"),
        (["--api-key", ""], None, "the API key (--api-key or HYBRIDSERVE_API_KEY) is empty"),
        (["--api-key", "  "], None, "is empty"),
    ],
    ids=["log-level", "empty-env-key", "empty-flag-key", "blank-flag-key"],
)
def test_bad_serve_options_exit_2_with_one_line(
    argv: list[str],
    env_key: str | None,
    message: str,
    workdir: Path,
    tiny_family_yaml: Path,
    tiny_family_env: dict[str, str],
) -> None:
    env = {k: v for k, v in tiny_family_env.items() if k != "HYBRIDSERVE_API_KEY"}
    if env_key is not None:
        env["HYBRIDSERVE_API_KEY"] = env_key
    base = [
        "--workdir",
        str(workdir),
        "--config",
        str(tiny_family_yaml),
        "--port",
        str(free_port()),
    ]
    done = _run([*base, *argv], env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
