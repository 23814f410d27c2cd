"""Corruptions: reproducible per seed, uint8 in/out, further from clean as severity rises."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hybridserve.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from hybridserve.errors import HybridServeError


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    # garment-like blobs: a bright off-centre block on black, so flips and shears move pixels
    rng = np.random.default_rng(0)
    x = np.zeros((24, 28, 28), dtype=np.uint8)
    for i in range(x.shape[0]):
        r, c = rng.integers(4, 12, size=2)
        x[i, r : r + 14, c : c + 9] = rng.integers(90, 220)
    return x


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_same_seed_same_images_other_seed_differs(name: str, images: np.ndarray) -> None:
    a = corrupt(images, name, 3, seed=7)
    b = corrupt(images, name, 3, seed=7)
    assert np.array_equal(a, b)
    if name in ("blur", "contrast", "brightness", "scale"):  # deterministic transforms
        assert np.array_equal(a, corrupt(images, name, 3, seed=8))
    else:
        assert not np.array_equal(a, corrupt(images, name, 3, seed=8))


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_shapes_and_dtype(name: str, images: np.ndarray) -> None:
    out = corrupt(images, name, 2)
    assert out.shape == images.shape and out.dtype == np.uint8
    one = corrupt(images[0], name, 2)
    assert one.shape == (28, 28) and one.dtype == np.uint8
    assert not np.array_equal(corrupt(images, name, 5), images)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_severity_monotone_in_distance(name: str, images: np.ndarray) -> None:
    clean = images.astype(np.float64)
    dist = [np.abs(corrupt(images, name, s, seed=1) - clean).mean() for s in SEVERITIES]
    assert all(a < b for a, b in itertools.pairwise(dist)), dist


def test_bad_input_names_the_field(images: np.ndarray) -> None:
    with pytest.raises(HybridServeError, match="corruption"):
        corrupt(images, "fog", 1)
    with pytest.raises(HybridServeError, match="severity"):
        corrupt(images, "blur", 6)
    with pytest.raises(HybridServeError, match="uint8"):
        corrupt(images.astype(np.float32), "blur", 1)
    with pytest.raises(HybridServeError, match="images"):
        corrupt(images[None], "blur", 1)
