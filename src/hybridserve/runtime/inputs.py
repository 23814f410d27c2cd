"""Checks on a batch of raw inputs before it enters the cascade; each failure names the problem.

A tensor family's batch becomes float32 ``N × input_shape`` (``check_batch``); a text family's
(``input_kind: text``) a 1-D object array of ``str`` (``check_texts``). ``check_family_batch``
picks by the family, and ``example_input`` gives the one input the engines warm up with.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Protocol

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
    if not out.flags.writeable:
        # a float32 view of a request body (binary bodies are not copied on the way in):
        # the models get memory of their own, which torch also wants writable
        out = out.copy()
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


#: A text family's warm-up input: short, so warming up costs little.
WARMUP_TEXT = "warm up"


class InputSpec(Protocol):
    """What the checks need of a family (``models.family.Family`` has it)."""

    @property
    def input_kind(self) -> str: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def input_range(self) -> tuple[float, float] | None: ...


def check_family_batch(
    x: Any, family: InputSpec, max_batch_size: int, max_text_chars: int
) -> npt.NDArray[Any]:
    """``x`` checked as the family's inputs: ``check_texts`` for text, else ``check_batch``."""
    if family.input_kind == "text":
        return check_texts(x, max_batch_size, max_text_chars)
    return check_batch(x, family.input_shape, family.input_range, max_batch_size)


def example_input(family: InputSpec) -> npt.NDArray[Any]:
    """One input the family accepts (no batch dimension), for warm-up batches."""
    if family.input_kind == "text":
        return np.array(WARMUP_TEXT, dtype=object)
    low = family.input_range[0] if family.input_range else 0.0
    return np.full(family.input_shape, low, dtype=np.float32)


def check_texts(x: Any, max_batch_size: int, max_chars: int) -> npt.NDArray[np.object_]:
    """The batch as a 1-D object array of ``str`` (UTF-8 ``bytes`` decoded), or
    ``InvalidInputError``: not text, not one string per input, empty or too long."""
    if isinstance(x, (str, bytes)):
        raise InvalidInputError("inputs: expected a list of strings (one per input), not a string")
    items = x
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "biufc":
            raise InvalidInputError(
                f"inputs: this family takes text (one string per input), got numbers ({x.dtype})"
            )
        if x.ndim != 1:
            raise InvalidInputError(
                f"inputs: expected a 1-D list of strings (one per input), got shape {x.shape}"
            )
        items = x.tolist()
    try:
        items = list(items)
    except TypeError:
        raise InvalidInputError(
            f"inputs: expected a list of strings (one per input), got {type(x).__name__}"
        ) from None
    if not items:
        raise InvalidInputError("inputs: empty batch; send at least one input")
    check_count(len(items), max_batch_size)
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = _text(item, i, max_chars)
    return out


def _text(item: Any, i: int, max_chars: int) -> str:
    where = f"inputs[{i}]"
    if isinstance(item, bytes):
        try:
            item = item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(f"{where}: bytes that are not UTF-8 text") from None
    if not isinstance(item, str):
        what = (
            "null"
            if item is None
            else "a list"
            if isinstance(item, (list, tuple))
            else "a number"
            if isinstance(item, (int, float))
            else type(item).__name__
        )
        raise InvalidInputError(
            f"{where}: this family takes text (one string per input), got {what}"
        )
    if not item.strip():
        raise InvalidInputError(f"{where}: empty text; send at least one non-space character")
    if len(item) > max_chars:
        raise InvalidInputError(
            f"{where}: text of {len(item)} characters is longer than the limit of {max_chars}"
        )
    return item
