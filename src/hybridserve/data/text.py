"""Users' labelled text: a ``.jsonl`` file, one ``{"text": str, "label": int}`` object a line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hybridserve.data.fashion_mnist import Split
from hybridserve.errors import HybridServeError


def load_jsonl_split(path: Path, name: str, num_classes: int | None = None) -> Split:
    """Load and validate a text split; a problem names the file and the line.

    ``x`` is a 1-D unicode array (hashable by bytes, so cached logits notice edits).
    """
    path = Path(path)
    if not path.is_file():
        raise HybridServeError(f"{path}: data file not found")
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise HybridServeError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise HybridServeError(f"{path}:{number}: expected an object with a string 'text'")
            label = row.get("label")
            if isinstance(label, bool) or not isinstance(label, int):
                raise HybridServeError(f"{path}:{number}: 'label' must be an integer")
            if label < 0 or (num_classes is not None and label >= num_classes):
                top = "" if num_classes is None else f", at most {num_classes - 1}"
                raise HybridServeError(f"{path}:{number}: 'label' {label} must be ≥ 0{top}")
            texts.append(row["text"])
            labels.append(label)
    x = np.array(texts, dtype=str) if texts else np.zeros(0, dtype="<U1")
    y = np.array(labels, dtype=np.int64)
    return Split(name, x, y, np.arange(len(y), dtype=np.int64))
