"""Fixtures shared by the Ray backend's integration tests."""

from __future__ import annotations

import pytest

from hybridserve.tuning.policy import CascadePolicy


@pytest.fixture(scope="session")
def ap_policy(tmp_path_factory: pytest.TempPathFactory) -> CascadePolicy:
    """The bundled family's AP policy, calibrated and tuned by the pipeline's own functions."""
    from hybridserve.calibration.fit import run_calibration
    from hybridserve.models.family import load_family
    from hybridserve.tuning.tune import run_tune
    from hybridserve.workdir import Workdir

    wd = Workdir(tmp_path_factory.mktemp("ray-workdir"))
    run_calibration(load_family("fashion-mnist"), wd, "temperature", progress=False)
    return run_tune(wd, "ap")
