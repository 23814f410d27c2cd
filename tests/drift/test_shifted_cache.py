"""The corrupted-set cache: what ``catalogue_logits`` writes, ``cached_catalogue`` reads back
for the same models only (a server fits the estimate's window model from it at start-up)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridserve.drift.shifted import cached_catalogue, catalogue_logits
from hybridserve.workdir import Workdir
from runtime.cascade_fixtures import make_family, make_inputs, tiny_models

pytestmark = pytest.mark.unit


def test_the_catalogue_is_read_back_for_the_same_models_only(tmp_path: Path) -> None:
    wd = Workdir(tmp_path)
    family = make_family()
    x = make_inputs(60, seed=3)
    y = np.arange(60) % 3
    made = catalogue_logits(family, x, y, wd, ("flip", "invert"), (1, 3), seed=7)
    assert sorted(made) == [("flip", 1), ("flip", 3), ("invert", 1), ("invert", 3)]
    back = {ls.split: ls for ls in cached_catalogue(wd, family, seed=7)}
    assert sorted(back) == ["flip-s1", "flip-s3", "invert-s1", "invert-s3"]
    for (name, sev), ls in made.items():
        got = back[f"{name}-s{sev}"]
        assert got.labels.tolist() == y.tolist()
        for m in family.names:
            np.testing.assert_array_equal(got.logits[m], ls.logits[m])
    assert cached_catalogue(wd, family, seed=0) == []  # another seed: nothing cached
    models = tiny_models()
    models[0]._weights_sha256 = "retrained"  # the fingerprint a new weights file gives
    assert cached_catalogue(wd, make_family(list(models)), seed=7) == []  # stale: not read
