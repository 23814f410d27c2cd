"""family_logits: every model's logits on a split, cached in the workdir while weights match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file
from tiny_family import small_state

from hybridserve.models import LogitSet, TorchModel, family_logits, load_family
from hybridserve.workdir import Workdir

pytestmark = pytest.mark.unit


def test_logits_are_computed_and_cached(
    tiny_family_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = load_family(config=tiny_family_yaml)
    wd = Workdir(tmp_path / "wd")
    first = family_logits(family, "val", wd, progress=False)
    assert first.names == ("small", "big") and first.split == "val"
    assert first.logits["small"].shape == (2000, 3) and first.logits["small"].dtype == np.float32
    np.testing.assert_array_equal(first.labels, family.split("val").y)
    cache = wd.logits_dir / "tiny-val.npz"
    mtime = cache.stat().st_mtime_ns

    def boom(self: TorchModel, batch: object) -> object:
        raise AssertionError("cache not used")

    monkeypatch.setattr(TorchModel, "predict_logits", boom)
    again = family_logits(family, "val", wd, progress=False)
    assert cache.stat().st_mtime_ns == mtime
    for name in first.names:
        np.testing.assert_array_equal(again.logits[name], first.logits[name])
    np.testing.assert_array_equal(again.labels, first.labels)


def test_new_weights_invalidate_the_cache(tiny_family_yaml: Path, tmp_path: Path) -> None:
    wd = Workdir(tmp_path)
    before = family_logits(load_family(config=tiny_family_yaml), "test", wd, progress=False)
    save_file(small_state(1.0), str(tiny_family_yaml.parent / "small.safetensors"))
    after = family_logits(load_family(config=tiny_family_yaml), "test", wd, progress=False)
    np.testing.assert_allclose(after.logits["small"], before.logits["small"] / 4, rtol=1e-5)
    np.testing.assert_array_equal(after.logits["big"], before.logits["big"])


def test_corrupt_cache_is_recomputed(tiny_family_yaml: Path, tmp_path: Path) -> None:
    family = load_family(config=tiny_family_yaml)
    wd = Workdir(tmp_path)
    good = family_logits(family, "val", wd, progress=False)
    cache = wd.logits_dir / "tiny-val.npz"
    cache.write_bytes(cache.read_bytes()[:100])  # as if a run was killed mid-write
    again = family_logits(family, "val", wd, progress=False)
    np.testing.assert_array_equal(again.logits["big"], good.logits["big"])
    assert family_logits(family, "val", wd, progress=False).names == ("small", "big")
    assert [p.name for p in wd.logits_dir.iterdir()] == ["tiny-val.npz"]  # no temp files left


def test_new_labels_invalidate_the_cache(tiny_family_yaml: Path, tmp_path: Path) -> None:
    wd = Workdir(tmp_path)
    family_logits(load_family(config=tiny_family_yaml), "val", wd, progress=False)
    with np.load(tiny_family_yaml.parent / "val.npz") as data:
        x, y = data["x"], data["y"]
    np.savez(tiny_family_yaml.parent / "val.npz", x=x, y=(y + 1) % 3)
    after = family_logits(load_family(config=tiny_family_yaml), "val", wd, progress=False)
    np.testing.assert_array_equal(after.labels, (y + 1) % 3)


def test_without_workdir_nothing_is_written(
    tiny_family_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    logits = family_logits(load_family(config=tiny_family_yaml), "val", None, progress=False)
    assert sorted(tmp_path.rglob("*")) == before
    assert isinstance(logits, LogitSet)
    assert logits.stacked().shape == (2, 2000, 3)
    assert logits.stacked(("big",)).shape == (1, 2000, 3)
