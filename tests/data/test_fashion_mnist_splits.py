"""The bundled val/test splits of t10k, and where the training file is looked for."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from hybridserve.data import fashion_mnist as fm
from hybridserve.data import load_eval_split, load_train
from hybridserve.errors import HybridServeError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def splits() -> tuple[fm.Split, fm.Split]:
    return load_eval_split("val"), load_eval_split("test")


def test_splits_are_disjoint_large_and_inside_t10k(splits: tuple[fm.Split, fm.Split]) -> None:
    val, test = splits
    assert len(val) >= 5000 and len(test) >= 5000
    assert not set(val.index.tolist()) & set(test.index.tolist())
    union = np.union1d(val.index, test.index)
    assert union.min() >= 0 and union.max() < 10000
    assert len(np.unique(val.index)) == len(val)


def test_splits_are_deterministic(splits: tuple[fm.Split, fm.Split]) -> None:
    val, test = splits
    again_val, again_test = load_eval_split("val"), load_eval_split("test")
    np.testing.assert_array_equal(val.index, again_val.index)
    np.testing.assert_array_equal(test.index, again_test.index)
    np.testing.assert_array_equal(val.x, again_val.x)


def test_split_rows_are_the_indexed_t10k_rows(splits: tuple[fm.Split, fm.Split]) -> None:
    x, y = fm._bundled_t10k()
    for split in splits:
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (28, 28)
        assert split.y.dtype == np.int64
        np.testing.assert_array_equal(split.x, x[split.index])
        np.testing.assert_array_equal(split.y, y[split.index])
        # every class is present in both halves, roughly balanced
        counts = np.bincount(split.y, minlength=10)
        assert counts.min() > 400


def test_unknown_split_is_refused() -> None:
    with pytest.raises(HybridServeError, match="unknown split 'train'"):
        load_eval_split("train")  # type: ignore[arg-type]


def _idx_gz(path: Path, magic: int, dims: tuple[int, ...], data: np.ndarray) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    path.write_bytes(gzip.compress(header + data.astype(np.uint8).tobytes()))


def _write_train(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    _idx_gz(folder / fm.TRAIN_FILES[0], 2051, (n, 28, 28), rng.integers(0, 256, (n, 28, 28)))
    _idx_gz(folder / fm.TRAIN_FILES[1], 2049, (n,), np.arange(n) % 10)


@pytest.fixture
def no_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No env var, an empty Debian directory; returns that directory."""
    debian = tmp_path / "debian"
    monkeypatch.delenv("HYBRIDSERVE_FASHION_MNIST", raising=False)
    monkeypatch.setattr(fm, "DEBIAN_DIR", debian)
    return debian


def test_training_loader_error_names_every_source(tmp_path: Path, no_sources: Path) -> None:
    with pytest.raises(HybridServeError) as info:
        load_train(tmp_path / "user", allow_download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "user") in message
    assert "--data-dir" in message and "HYBRIDSERVE_FASHION_MNIST" in message
    assert str(no_sources) in message
    assert fm.UPSTREAM_URL in message and "downloads disabled" in message


def test_training_loader_reads_user_dir_then_env_then_debian(
    tmp_path: Path, no_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_train(tmp_path / "user", 7)
    split = load_train(tmp_path / "user", allow_download=False)
    assert split.x.shape == (7, 28, 28) and split.y.tolist() == [0, 1, 2, 3, 4, 5, 6]
    _write_train(tmp_path / "env", 5)
    monkeypatch.setenv("HYBRIDSERVE_FASHION_MNIST", str(tmp_path / "env"))
    assert len(load_train(allow_download=False)) == 5
    monkeypatch.delenv("HYBRIDSERVE_FASHION_MNIST")
    _write_train(no_sources, 3)
    assert len(load_train(allow_download=False)) == 3


def test_training_loader_never_downloads_when_disabled(
    tmp_path: Path, no_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(url: str) -> bytes:
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(fm, "_fetch", no_network)
    with pytest.raises(HybridServeError):
        load_train(tmp_path, allow_download=False)


def test_failed_download_is_reported(
    tmp_path: Path, no_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str) -> bytes:
        raise OSError("network unreachable")

    monkeypatch.setattr(fm, "_fetch", offline)
    with pytest.raises(HybridServeError, match="download failed: network unreachable"):
        load_train(tmp_path)


def test_corrupt_training_files(tmp_path: Path, no_sources: Path) -> None:
    _write_train(tmp_path, 4)
    (tmp_path / fm.TRAIN_FILES[0]).write_bytes(b"not gzip at all")
    with pytest.raises(HybridServeError, match="Fashion-MNIST files are corrupt"):
        load_train(tmp_path, allow_download=False)


def test_mismatched_image_and_label_counts(tmp_path: Path, no_sources: Path) -> None:
    _write_train(tmp_path, 4)
    _idx_gz(tmp_path / fm.TRAIN_FILES[1], 2049, (3,), np.arange(3))
    with pytest.raises(HybridServeError, match="4 images, 3 labels"):
        load_train(tmp_path, allow_download=False)
