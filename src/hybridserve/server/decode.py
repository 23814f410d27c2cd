"""Request bodies to numpy batches: KServe v2 tensors, nested lists, base64 PNG images.

Every failure is an ``InvalidInputError`` whose message names the field and the problem; the
engine then checks the batch against the family (shape, range, NaN). What a request declares
(how many inputs, a tensor's shape, an image's size) is checked before any data is converted,
so a small body cannot make the server build a huge array.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.runtime.errors import InvalidInputError
from hybridserve.runtime.inputs import check_count
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
#: The models take float32: a finite value beyond this would become infinite on the way in.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: A PNG starts with this signature and then its IHDR chunk (length, type, width, height).
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _array(values: Any, where: str) -> npt.NDArray[Any]:
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as err:
        raise InvalidInputError(
            f"{where}: nested lists of unequal lengths (every input must have the same shape)"
        ) from err
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise InvalidInputError(f"{where}: expected numbers only (found text, null or objects)")
    _check_fits_float32(arr, where)
    return arr


def _check_fits_float32(arr: npt.NDArray[Any], where: str) -> None:
    """Refuse finite values that float32 cannot hold (else the engine would call them infinite)."""
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= 4 or not arr.size:
        return
    with np.errstate(invalid="ignore"):
        too_big = np.isfinite(arr) & (np.abs(arr) > _FLOAT32_MAX)
    if too_big.any():
        value = float(arr[too_big].flat[0])
        raise InvalidInputError(
            f"{where}: value {value:g} is too large; inputs are 32-bit floats "
            f"(magnitude at most {_FLOAT32_MAX:.3g})"
        )


def _check_v2_shape(
    tensor: TensorInput, input_shape: tuple[int, ...], max_batch_size: int, where: str
) -> int:
    """The values ``tensor`` declares, checked against the family and the limit before parsing."""
    shape = tensor.shape
    if not shape or any(d < 0 for d in shape):
        raise InvalidInputError(f"{where}.shape: expected non-negative sizes, got {shape}")
    if tuple(shape[1:]) != tuple(input_shape):
        want = ", ".join(["N", *map(str, input_shape)])
        raise InvalidInputError(
            f"{where}.shape: expected [{want}] with the batch first, got {shape}"
        )
    if shape[0] == 0:
        raise InvalidInputError(f"{where}.shape: empty batch; send at least one input")
    check_count(shape[0], max_batch_size)
    expected = math.prod(shape)
    if len(tensor.data) not in (expected, shape[0]):  # flat, or nested with the batch first
        raise InvalidInputError(
            f"{where}: shape {shape} holds {expected} values, but data has {len(tensor.data)}"
        )
    return expected


def v2_tensor(
    tensor: TensorInput,
    input_shape: tuple[int, ...],
    max_batch_size: int,
    where: str = "inputs[0]",
) -> npt.NDArray[Any]:
    """The batch held by a v2 tensor, checked against its declared shape and datatype."""
    if tensor.datatype not in V2_DTYPES:
        raise InvalidInputError(
            f"{where}.datatype: this family takes numbers, not {tensor.datatype} "
            f"(one of {', '.join(V2_DTYPES)})"
        )
    dtype = V2_DTYPES[tensor.datatype]
    expected = _check_v2_shape(tensor, input_shape, max_batch_size, where)
    data: Any = tensor.data
    if isinstance(data, np.ndarray) and data.dtype == dtype and data.size == expected:
        # binary data: already the datatype's values (``binary.tensor_bytes`` counted them),
        # so no conversion, range or overflow check applies but float64's fit in float32
        _check_fits_float32(data, f"{where}.data")
        return data.reshape(tensor.shape)
    arr = _array(data, f"{where}.data")
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


def v2_texts(tensor: TensorInput, max_batch_size: int, where: str = "inputs[0]") -> list[Any]:
    """A text family's batch from a v2 ``BYTES`` tensor of shape ``[N]`` (or ``[N, 1]``): its
    strings, flat, for the engine to check one by one."""
    if tensor.datatype != "BYTES":
        raise InvalidInputError(
            f"{where}.datatype: this family takes text: send a BYTES tensor of strings, "
            f"not {tensor.datatype}"
        )
    shape = tensor.shape
    if len(shape) not in (1, 2) or any(d < 0 for d in shape) or shape[1:] not in ([], [1]):
        raise InvalidInputError(f"{where}.shape: expected [N] (one string per input), got {shape}")
    if shape[0] == 0:
        raise InvalidInputError(f"{where}.shape: empty batch; send at least one input")
    check_count(shape[0], max_batch_size)
    data: list[Any] = tensor.data
    if len(shape) == 2 and all(isinstance(d, list) and len(d) == 1 for d in data):
        data = [d[0] for d in data]  # nested [[text], ...]
    if len(data) != shape[0]:
        raise InvalidInputError(
            f"{where}: shape {shape} holds {shape[0]} strings, but data has {len(data)}"
        )
    return data


def png_size(raw: bytes, where: str) -> tuple[int, int]:
    """Width and height a PNG declares in its header, read before any pixel is decoded."""
    if len(raw) < 24 or raw[:8] != _PNG_SIGNATURE or raw[12:16] != b"IHDR":
        raise InvalidInputError(f"{where}: expected a PNG image (no PNG signature and header)")
    width, height = struct.unpack(">II", raw[16:24])
    return int(width), int(height)


def png(text: str, input_shape: tuple[int, ...], where: str) -> npt.NDArray[np.uint8]:
    """Decode a base64 PNG (optionally a ``data:image/png;base64,`` URL) to a pixel array."""
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) == 2:
        mode = "L"
    elif len(input_shape) == 3 and input_shape[-1] in (3, 4):
        mode = "RGB" if input_shape[-1] == 3 else "RGBA"
    else:
        raise InvalidInputError(
            f"{where}: images can only be sent to families whose inputs are images "
            f"(H×W or H×W×C); this one takes {input_shape}"
        )
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInputError(
            f"{where}: not valid base64 ({err}); this family takes images (base64 PNGs or "
            "nested lists of numbers), not text"
        ) from err
    width, height = png_size(raw, where)
    if (height, width) != tuple(input_shape[:2]):
        # refused on the declared size: a 518 KB PNG can declare 20000×20000 pixels
        raise InvalidInputError(
            f"{where}: image is {width}×{height} pixels, expected {input_shape[1]}×{input_shape[0]}"
        )
    try:
        with Image.open(io.BytesIO(raw), formats=("PNG",)) as img:
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise InvalidInputError(f"{where}: not a readable PNG image ({err})") from err
    return arr


def simple_inputs(
    inputs: list[list[Any] | str], input_shape: tuple[int, ...], max_batch_size: int
) -> npt.NDArray[Any]:
    """The batch of a ``/v1/predict`` body (nested lists and/or base64 PNG strings)."""
    if not inputs:
        raise InvalidInputError("inputs: empty batch; send at least one input")
    check_count(len(inputs), max_batch_size)
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


async def predict_inputs(
    inputs: list[list[Any] | str] | npt.NDArray[Any],
    input_shape: tuple[int, ...],
    max_batch_size: int,
) -> npt.NDArray[Any]:
    """``simple_inputs`` for the event loop: PNG bodies are decoded on a worker thread.

    An array (a ``.npy`` body) is already a batch: the engine checks its shape and values.
    """
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 0 or inputs.shape[0] == 0:
            raise InvalidInputError("inputs: empty batch; send at least one input")
        check_count(inputs.shape[0], max_batch_size)
        _check_fits_float32(inputs, "inputs")
        return inputs
    if any(isinstance(item, str) for item in inputs):
        check_count(len(inputs), max_batch_size)  # before a thread is even asked for
        return await asyncio.to_thread(simple_inputs, inputs, input_shape, max_batch_size)
    return simple_inputs(inputs, input_shape, max_batch_size)
