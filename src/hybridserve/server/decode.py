"""Request bodies to numpy batches: KServe v2 tensors, nested lists, base64 PNG images.

Every failure is an ``InvalidInputError`` whose message names the field and the problem; the
engine then checks the batch against the family (shape, range, NaN, size limit).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.runtime.errors import InvalidInputError
from hybridserve.server.schemas import TensorInput

V2_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}


def _array(values: Any, where: str) -> npt.NDArray[Any]:
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as err:
        raise InvalidInputError(
            f"{where}: nested lists of unequal lengths (every input must have the same shape)"
        ) from err
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise InvalidInputError(f"{where}: expected numbers only (found text, null or objects)")
    return arr


def v2_tensor(tensor: TensorInput, where: str = "inputs[0]") -> npt.NDArray[Any]:
    """The batch held by a v2 tensor, checked against its declared shape and datatype."""
    dtype = V2_DTYPES[tensor.datatype]
    if any(d < 0 for d in tensor.shape) or not tensor.shape:
        raise InvalidInputError(f"{where}.shape: expected non-negative sizes, got {tensor.shape}")
    arr = _array(tensor.data, f"{where}.data")
    expected = math.prod(tensor.shape)
    if arr.size != expected:
        raise InvalidInputError(
            f"{where}: shape {tensor.shape} holds {expected} values, but data has {arr.size}"
        )
    kind = arr.dtype.kind
    if dtype.kind in "iu":
        if kind == "f":
            raise InvalidInputError(
                f"{where}.data: {tensor.datatype} tensor holds non-integer numbers"
            )
        if arr.size and kind in "iu":
            info = np.iinfo(dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise InvalidInputError(
                    f"{where}.data: values outside the {tensor.datatype} range "
                    f"[{info.min}, {info.max}]"
                )
    elif dtype.kind == "b" and kind != "b":
        raise InvalidInputError(f"{where}.data: BOOL tensor holds non-boolean values")
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(dtype, copy=False).reshape(tensor.shape)
    if (
        dtype.kind == "f"
        and kind in "iuf"
        and not np.isfinite(out).all()
        and np.isfinite(arr).all()
    ):
        raise InvalidInputError(f"{where}.data: values overflow {tensor.datatype}")
    return out


def png(text: str, input_shape: tuple[int, ...], where: str) -> npt.NDArray[np.uint8]:
    """Decode a base64 PNG (optionally a ``data:image/png;base64,`` URL) to a pixel array."""
    from PIL import Image, UnidentifiedImageError

    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInputError(f"{where}: not valid base64 ({err})") from err
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format != "PNG":
                raise InvalidInputError(f"{where}: expected a PNG image, got {img.format}")
            if len(input_shape) == 2:
                img = img.convert("L")
            elif len(input_shape) == 3 and input_shape[-1] in (3, 4):
                img = img.convert("RGB" if input_shape[-1] == 3 else "RGBA")
            else:
                raise InvalidInputError(
                    f"{where}: images can only be sent to families whose inputs are images "
                    f"(H×W or H×W×C); this one takes {input_shape}"
                )
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise InvalidInputError(f"{where}: not a readable PNG image") from err
    if tuple(arr.shape) != tuple(input_shape):
        raise InvalidInputError(
            f"{where}: image is {arr.shape[1]}×{arr.shape[0]} pixels, expected "
            f"{input_shape[1]}×{input_shape[0]}"
        )
    return arr


def simple_inputs(inputs: list[list[Any] | str], input_shape: tuple[int, ...]) -> npt.NDArray[Any]:
    """The batch of a ``/v1/predict`` body (nested lists and/or base64 PNG strings)."""
    if not inputs:
        raise InvalidInputError("inputs: empty batch; send at least one input")
    if not any(isinstance(item, str) for item in inputs):
        return _array(inputs, "inputs")
    rows: list[npt.NDArray[Any]] = []
    for i, item in enumerate(inputs):
        where = f"inputs[{i}]"
        arr = png(item, input_shape, where) if isinstance(item, str) else _array(item, where)
        if tuple(arr.shape) != tuple(input_shape):
            raise InvalidInputError(
                f"{where}: expected shape {tuple(input_shape)}, got {arr.shape}"
            )
        rows.append(arr)
    return np.stack(rows)
