"""Users' own labelled data: an ``.npz`` file with arrays ``x`` (N×…) and ``y`` (N labels)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from hybridserve.data.fashion_mnist import Split
from hybridserve.errors import HybridServeError


def load_npz_split(
    path: Path,
    name: str,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    *,
    text: bool = False,
) -> Split:
    """Load and validate a labelled split; every problem is reported naming the file and array.

    With ``text``, ``x`` holds one string per input (a 1-D unicode array).
    """
    path = Path(path)
    if not path.is_file():
        raise HybridServeError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise HybridServeError(
                    f"{path}: missing array(s) {sorted(missing)}; expected 'x' and 'y'"
                )
            x = archive["x"]
            y = archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise HybridServeError(f"{path}: not a readable .npz file ({err})") from err
    if y.ndim != 1:
        raise HybridServeError(f"{path}: 'y' must be 1-D labels, got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise HybridServeError(f"{path}: 'x' has {x.shape[0]} rows but 'y' has {y.shape[0]} labels")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise HybridServeError(
            f"{path}: 'x' rows have shape {tuple(x.shape[1:])}, "
            f"the family expects {tuple(input_shape)}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise HybridServeError(f"{path}: 'y' must hold integer labels, got dtype {y.dtype}")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise HybridServeError(f"{path}: labels in 'y' must lie in [0, {num_classes - 1}]")
    if text:
        if x.dtype.kind not in "US" or x.ndim != 1:
            raise HybridServeError(
                f"{path}: 'x' must be a 1-D array of strings for a text family, "
                f"got dtype {x.dtype} and shape {x.shape}"
            )
        x = x.astype(str)
    elif not np.issubdtype(x.dtype, np.number):
        raise HybridServeError(f"{path}: 'x' must be numeric, got dtype {x.dtype}")
    return Split(name, x, y.astype(np.int64), np.arange(y.shape[0], dtype=np.int64))
