"""Users' .npz splits: every malformed file is refused with a message naming file and array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridserve.data import load_npz_split
from hybridserve.errors import HybridServeError

pytestmark = pytest.mark.unit


def save(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "split.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_valid_file_loads(tmp_path: Path) -> None:
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    split = load_npz_split(save(tmp_path, x=x, y=np.array([0, 1, 2, 1])), "val", (6,), 3)
    assert split.name == "val" and len(split) == 4
    np.testing.assert_array_equal(split.x, x)
    assert split.y.dtype == np.int64
    np.testing.assert_array_equal(split.index, np.arange(4))


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.zeros((3, 6))}, r"missing array\(s\) \['y'\]"),
        ({"x": np.zeros((3, 6)), "y": np.zeros((3, 1), int)}, "'y' must be 1-D"),
        ({"x": np.zeros((3, 6)), "y": np.zeros(2, int)}, "'x' has 3 rows but 'y' has 2"),
        (
            {"x": np.zeros((3, 5)), "y": np.zeros(3, int)},
            r"shape \(5,\), the family expects \(6,\)",
        ),
        ({"x": np.zeros((3, 6)), "y": np.zeros(3)}, "integer labels"),
        ({"x": np.zeros((3, 6)), "y": np.array([0, 1, 3])}, r"must lie in \[0, 2\]"),
        ({"x": np.full((3, 6), "a"), "y": np.zeros(3, int)}, "'x' must be numeric"),
    ],
)
def test_malformed_files_are_refused(
    tmp_path: Path, arrays: dict[str, np.ndarray], match: str
) -> None:
    path = save(tmp_path, **arrays)
    with pytest.raises(HybridServeError, match=match) as info:
        load_npz_split(path, "val", (6,), 3)
    assert str(path) in str(info.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(HybridServeError, match="data file not found"):
        load_npz_split(tmp_path / "nope.npz", "val")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(HybridServeError, match=r"not a readable \.npz"):
        load_npz_split(bad, "val")
