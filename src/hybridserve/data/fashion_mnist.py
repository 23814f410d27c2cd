"""Fashion-MNIST (MIT licence, Zalando Research) loaders.

The package ships the 10,000-image ``t10k`` file; a seeded permutation cuts it into a validation
split (calibration and threshold search) and a test split (every reported figure), 5,000 images
each. The bundled models were trained on the 60,000-image ``train`` file only, so the three are
disjoint. The training file is read from a user directory, Debian's ``dataset-fashion-mnist``
package, or the upstream mirror, in that order.
"""

from __future__ import annotations

import gzip
import os
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError

LABEL_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: Seed of the permutation that cuts t10k into validation (first half) and test (second half).
SPLIT_SEED = 20251123
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
UPSTREAM_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")

SplitName = Literal["val", "test"]


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N×…; uint8 N×28×28 here), labels ``y`` (int64, N), source indices."""

    name: str
    x: npt.NDArray[Any]
    y: npt.NDArray[np.int64]
    index: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _read_idx(raw: bytes, header: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


def _read_pair(
    images_gz: bytes, labels_gz: bytes
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    try:
        images = _read_idx(gzip.decompress(images_gz), 16).reshape(-1, 28, 28)
        labels = _read_idx(gzip.decompress(labels_gz), 8).astype(np.int64)
    except (OSError, EOFError, ValueError) as err:  # not gzip, truncated, or not 28×28 images
        raise HybridServeError(f"Fashion-MNIST files are corrupt ({err})") from err
    if images.shape[0] != labels.shape[0]:
        raise HybridServeError(
            f"Fashion-MNIST files disagree: {images.shape[0]} images, {labels.shape[0]} labels"
        )
    return images, labels


def _bundled_t10k() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    folder = resources.files("hybridserve.data") / "fashion_mnist"
    images = (folder / "t10k-images-idx3-ubyte.gz").read_bytes()
    labels = (folder / "t10k-labels-idx1-ubyte.gz").read_bytes()
    return _read_pair(images, labels)


def load_eval_split(name: SplitName) -> Split:
    """Return the bundled validation or test split (5,000 images each, disjoint, seeded)."""
    if name not in ("val", "test"):
        raise HybridServeError(f"unknown split {name!r}: expected 'val' or 'test'")
    x, y = _bundled_t10k()
    order = np.random.default_rng(SPLIT_SEED).permutation(x.shape[0]).astype(np.int64)
    half = x.shape[0] // 2
    index = np.sort(order[:half] if name == "val" else order[half:])
    return Split(name=name, x=x[index], y=y[index], index=index)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
    return data


def load_train(directory: Path | None = None, *, allow_download: bool = True) -> Split:
    """Return the 60,000-image training split, for training only.

    Looks in ``directory`` (or ``$HYBRIDSERVE_FASHION_MNIST``), then in Debian's package
    directory, then downloads from upstream when ``allow_download`` and a network exist.
    """
    candidates: list[Path] = []
    env_dir = os.environ.get("HYBRIDSERVE_FASHION_MNIST")
    if directory is not None:
        candidates.append(Path(directory))
    elif env_dir:
        candidates.append(Path(env_dir))
    candidates.append(DEBIAN_DIR)
    for folder in candidates:
        paths = [folder / f for f in TRAIN_FILES]
        if all(p.is_file() for p in paths):
            x, y = _read_pair(paths[0].read_bytes(), paths[1].read_bytes())
            return Split("train", x, y, np.arange(len(y), dtype=np.int64))
    download_error = "downloads disabled"
    if allow_download:
        try:
            blobs = [_fetch(UPSTREAM_URL + f) for f in TRAIN_FILES]
            x, y = _read_pair(blobs[0], blobs[1])
            return Split("train", x, y, np.arange(len(y), dtype=np.int64))
        except OSError as err:
            download_error = f"download failed: {err}"
    searched = ", ".join(str(c) for c in candidates)
    raise HybridServeError(
        f"Fashion-MNIST training files not found (looked in {searched}). Give a directory holding "
        f"{' and '.join(TRAIN_FILES)} (--data-dir or $HYBRIDSERVE_FASHION_MNIST), or install "
        f"Debian's package dataset-fashion-mnist ({DEBIAN_DIR}), or allow a download from "
        f"{UPSTREAM_URL} ({download_error})."
    )
