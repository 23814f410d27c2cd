"""Checks on a batch of raw inputs before it enters the cascade; each failure names the problem."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.runtime.errors import BatchTooLargeError, InvalidInputError


def check_count(n: int, max_batch_size: int) -> None:
    """Refuse ``n`` inputs when one request may carry at most ``max_batch_size`` (HTTP 413)."""
    if n > max_batch_size:
        raise BatchTooLargeError(
            f"inputs: batch of {n} inputs is larger than the limit of {max_batch_size}"
        )


def check_batch(
    x: Any,
    input_shape: tuple[int, ...],
    input_range: tuple[float, float] | None,
    max_batch_size: int,
) -> npt.NDArray[np.float32]:
    """The batch as float32 ``N × input_shape``, or ``InvalidInputError`` saying what is wrong."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"inputs: expected numbers, got values of type {arr.dtype}")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise InvalidInputError("inputs: empty batch; send at least one input")
    expected = tuple(int(d) for d in input_shape)
    if tuple(arr.shape[1:]) != expected:
        want = ", ".join(["N", *map(str, expected)])
        raise InvalidInputError(
            f"inputs: expected shape ({want}) with the batch first, got {tuple(arr.shape)}"
        )
    n = arr.shape[0]
    check_count(n, max_batch_size)
    out = np.ascontiguousarray(arr, dtype=np.float32)
    bounds = None if input_range is None else (float(input_range[0]), float(input_range[1]))
    if arr.dtype.kind in "biu" and _holds_dtype(bounds, arr.dtype):
        return out  # integers are finite, and every value of this type is in range
    # two reductions check everything: NaN propagates through min/max, inf is out of range
    low, high = float(out.min()), float(out.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int(np.flatnonzero(~np.isfinite(out).reshape(n, -1).all(axis=1))[0])
        raise InvalidInputError(f"inputs: input {bad} holds NaN or infinite values")
    if input_range is not None:
        lo, hi = input_range
        if low < lo or high > hi:
            per_row = out.reshape(n, -1)
            bad = int(np.flatnonzero((per_row.min(axis=1) < lo) | (per_row.max(axis=1) > hi))[0])
            raise InvalidInputError(
                f"inputs: input {bad} has values outside the family's range [{lo:g}, {hi:g}]"
            )
    return out


@functools.lru_cache(maxsize=64)
def _holds_dtype(input_range: tuple[float, float] | None, dtype: np.dtype[Any]) -> bool:
    """Whether every value of integer ``dtype`` lies in ``input_range`` (no range check needed)."""
    if input_range is None:
        return True
    if dtype.kind == "b":
        low, high = 0, 1
    else:
        info = np.iinfo(dtype)
        low, high = int(info.min), int(info.max)
    return input_range[0] <= low and high <= input_range[1]
