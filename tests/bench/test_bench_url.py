"""``hybridserve bench --url``: a real ``hybridserve serve`` process loaded over HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from hybridserve.bench.report import read_report
from hybridserve.cli import main
from hybridserve.models import load_family
from runtime.cascade_fixtures import simulate, tiny_median_policy
from serve_process import free_port, serve_command, wait_ready

pytestmark = pytest.mark.integration

KEY = "bench-url-token"


def test_bench_url_loads_a_running_server_and_scores_its_answers(
    tmp_path: Path, tiny_family_yaml: Path, tiny_family_env: dict[str, str]
) -> None:
    family = load_family(config=tiny_family_yaml)
    test = family.split("test")
    policy = tiny_median_policy(family, test.x)
    served_wd, bench_wd = tmp_path / "served", tmp_path / "bench"
    policy.save(served_wd / "policy-ap.json")
    sim = simulate(policy, family, test.x)
    expected_accuracy = float(np.mean(sim.labels == test.y))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["serve", "--workdir", str(served_wd), "--config", str(tiny_family_yaml)]
    proc = subprocess.Popen(
        [*serve_command(), *serve, "--port", str(port)],
        env={**tiny_family_env, "HYBRIDSERVE_API_KEY": KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(proc, url)
        args = ["bench", "--url", url, "--config", str(tiny_family_yaml)]
        args += ["--workdir", str(bench_wd), "--concurrency", "4", "--passes", "1"]
        try:
            main([*args, "--api-key", KEY])
        except SystemExit as ex:  # the entry point exits only on an error
            pytest.fail(f"bench --url exited with {ex.code}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    report = read_report(bench_wd / "report.json")
    served = report["systems"]["served"]
    # one pass over the test split, every request answered as the policy routes it
    assert served["requests"] == len(test.y)
    assert served["errors"] == 0
    assert served["accuracy"] == pytest.approx(expected_accuracy)
    assert served["throughput_rps"] > 0
    assert report["energy_source"] == "unavailable"  # a remote server is not metered here
