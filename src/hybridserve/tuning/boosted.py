"""A gradient-boosted binary classifier as plain numbers: fitted by scikit-learn, scored by numpy.

``fit_boosted(x, y)`` fits ``HistGradientBoostingClassifier`` and exports its trees
(``Forest``): per tree and node the split feature and threshold, the children, whether it is a
leaf and the leaf's value, plus the baseline log-odds. ``Forest.proba(x)`` walks every tree at
once, one level per step, so serving a policy needs neither scikit-learn nor pickles, and its
JSON form (``to_dict`` / ``from_dict``) is the whole model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_FIELDS = ("feature", "threshold", "left", "right", "leaf", "value")


@dataclass(frozen=True)
class Forest:
    """Trees padded to one node count: T × M arrays (``leaf`` 1 where the node is a leaf)."""

    baseline: float
    feature: IntArray
    threshold: FloatArray
    left: IntArray
    right: IntArray
    leaf: npt.NDArray[np.bool_]
    value: FloatArray
    depth: int

    def proba(self, x: npt.NDArray[Any]) -> FloatArray:
        """P(class 1) per row of ``x`` (N × F)."""
        x = np.asarray(x, dtype=np.float64)
        n_trees = self.feature.shape[0]
        rows = np.arange(x.shape[0])[None, :]
        trees = np.arange(n_trees)[:, None]
        node = np.zeros((n_trees, x.shape[0]), dtype=np.int64)
        for _ in range(self.depth):
            at_leaf = self.leaf[trees, node]
            if at_leaf.all():
                break
            go_left = x[rows, self.feature[trees, node]] <= self.threshold[trees, node]
            step = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(at_leaf, node, step)
        raw = self.baseline + self.value[trees, node].sum(axis=0)
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(raw, -40.0, 40.0))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "depth": self.depth,
            **{
                f: getattr(self, f).astype(float if f in ("threshold", "value") else int).tolist()
                for f in _FIELDS
            },
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], n_features: int) -> Forest:
        """Rebuild and check a forest; errors name what does not fit."""
        missing = [k for k in ("baseline", "depth", *_FIELDS) if k not in raw]
        if missing:
            raise HybridServeError(f"forest: missing field(s) {missing}")
        try:
            arrays: dict[str, npt.NDArray[Any]] = {
                f: np.asarray(raw[f], dtype=np.float64 if f in ("threshold", "value") else np.int64)
                for f in _FIELDS
            }
            baseline, depth = float(raw["baseline"]), int(raw["depth"])
        except (TypeError, ValueError) as err:
            raise HybridServeError(f"forest: expected numbers ({err})") from err
        if arrays["feature"].size == 0:  # no trees: a constant (one class at fit time)
            arrays = {f: a.reshape(0, 1) for f, a in arrays.items()}
        shape = arrays["feature"].shape
        if len(shape) != 2 or any(a.shape != shape for a in arrays.values()) or depth < 0:
            raise HybridServeError("forest: node arrays must share one T × M shape")
        m = shape[1]
        inner = arrays["leaf"] == 0
        bad_child = ((arrays["left"] < 0) | (arrays["left"] >= m)) & inner
        bad_child |= ((arrays["right"] < 0) | (arrays["right"] >= m)) & inner
        bad_feature = ((arrays["feature"] < 0) | (arrays["feature"] >= n_features)) & inner
        finite = np.isfinite(arrays["threshold"]).all() and np.isfinite(arrays["value"]).all()
        if bad_child.any() or bad_feature.any() or not finite or not np.isfinite(baseline):
            raise HybridServeError(
                "forest: a node names a missing child or feature, or a value is not finite"
            )
        return cls(
            baseline,
            np.asarray(arrays["feature"], dtype=np.int64),
            np.asarray(arrays["threshold"], dtype=np.float64),
            np.asarray(arrays["left"], dtype=np.int64),
            np.asarray(arrays["right"], dtype=np.int64),
            np.asarray(arrays["leaf"], dtype=np.bool_),
            np.asarray(arrays["value"], dtype=np.float64),
            depth,
        )


def fit_boosted(
    x: npt.NDArray[Any],
    y: npt.NDArray[np.bool_],
    *,
    max_iter: int = 100,
    learning_rate: float = 0.1,
    max_leaf_nodes: int = 8,
    min_samples_leaf: int = 40,
    seed: int = 0,
) -> Forest:
    """Fit a boosted classifier of ``y`` on ``x`` and export it (one class only: a constant)."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]

    y = np.asarray(y, dtype=np.bool_)
    if y.all() or not y.any():
        share = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        empty = np.zeros((0, 1))
        return Forest(
            float(np.log(share / (1 - share))),
            empty.astype(np.int64),
            empty,
            empty.astype(np.int64),
            empty.astype(np.int64),
            empty.astype(np.bool_),
            empty,
            0,
        )
    clf = HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=learning_rate,
        max_leaf_nodes=max_leaf_nodes,
        min_samples_leaf=min_samples_leaf,
        early_stopping=False,
        random_state=seed,
    )
    clf.fit(np.asarray(x, dtype=np.float64), y)
    # The fitted trees live in private attributes; checked here so a changed scikit-learn fails
    # at fit time with a message rather than exporting something else.
    predictors = getattr(clf, "_predictors", None)
    baseline = getattr(clf, "_baseline_prediction", None)
    if predictors is None or baseline is None:
        raise HybridServeError("this scikit-learn's boosted trees cannot be exported")
    nodes = [it[0].nodes for it in predictors]
    width = max(len(nd) for nd in nodes)

    def pad(field: str, fill: float, dtype: Any) -> npt.NDArray[Any]:
        out = np.full((len(nodes), width), fill, dtype=dtype)
        for t, nd in enumerate(nodes):
            out[t, : len(nd)] = nd[field]
        return out

    return Forest(
        float(np.asarray(baseline).ravel()[0]),
        pad("feature_idx", 0, np.int64),
        pad("num_threshold", 0.0, np.float64),
        pad("left", 0, np.int64),
        pad("right", 0, np.int64),
        pad("is_leaf", 1, np.bool_),
        pad("value", 0.0, np.float64),
        int(max(int(nd["depth"].max()) for nd in nodes)) + 1,
    )
