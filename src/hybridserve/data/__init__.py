"""Labelled data: the bundled Fashion-MNIST splits and users' own ``.npz`` files."""

from hybridserve.data.fashion_mnist import (
    LABEL_NAMES,
    SPLIT_SEED,
    Split,
    load_eval_split,
    load_train,
)
from hybridserve.data.npz import load_npz_split

__all__ = ["LABEL_NAMES", "SPLIT_SEED", "Split", "load_eval_split", "load_npz_split", "load_train"]
