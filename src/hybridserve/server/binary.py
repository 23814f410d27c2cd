"""Binary request bodies: the KServe v2 binary tensor extension and raw ``.npy`` batches.

A v2 binary body (``Inference-Header-Content-Length: N``) is N bytes of the JSON inference
request, then the raw little-endian bytes of every input whose ``parameters`` carry
``binary_data_size``, in input order, as Triton and KServe accept. Framing errors (a length header
that is not a number or points past the body, bytes missing or left over) are 400; a tensor whose
bytes do not match its shape and datatype is 422. Everything is checked against the header's
declared sizes before any array is built.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib import format as npy_format

from hybridserve.errors import HybridServeError
from hybridserve.runtime.errors import InvalidInputError

#: The header a v2 binary body declares its JSON part's length in.
HEADER_LENGTH = "inference-header-content-length"
#: Media types answered from the body's bytes rather than JSON.
NPY = "application/x-npy"
OCTET_STREAM = "application/octet-stream"


class MalformedBodyError(HybridServeError):
    """A body whose framing is broken (answered 400)."""


def header_length(value: str | None, body_size: int) -> int:
    """The JSON header's length, checked against the body that holds it."""
    if value is None:
        raise MalformedBodyError(
            f"a binary ({OCTET_STREAM}) body needs an Inference-Header-Content-Length header "
            "giving the length of its JSON part"
        )
    try:
        n = int(value.strip())
    except ValueError:
        raise MalformedBodyError(
            f"Inference-Header-Content-Length must be a whole number of bytes, got {value!r}"
        ) from None
    if n < 0 or n > body_size:
        raise MalformedBodyError(
            f"Inference-Header-Content-Length is {n}, but the body holds {body_size} bytes"
        )
    return n


def _binary_size(tensor: Any, where: str) -> int | None:
    """The ``binary_data_size`` an input declares (None: its values are in the JSON)."""
    if not isinstance(tensor, dict):
        return None  # the request model then says what is wrong with it
    params = tensor.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInputError(
            f"{where}.parameters.binary_data_size: expected a non-negative whole number of "
            f"bytes, got {size!r}"
        )
    if "data" in tensor:
        raise InvalidInputError(f"{where}: has both data and binary_data_size; send one")
    return size


def split_binary_inputs(header: Any, blob: memoryview) -> dict[int, memoryview]:
    """The raw bytes of each binary input of a parsed v2 ``header``, by input index.

    The inputs without ``data`` get an empty placeholder so the request model validates them;
    the caller swaps in the arrays ``tensor_bytes`` builds.
    """
    inputs = header.get("inputs") if isinstance(header, dict) else None
    if not isinstance(inputs, list):
        return {}  # the request model says what is wrong
    parts: dict[int, memoryview] = {}
    offset = 0
    for i, tensor in enumerate(inputs):
        size = _binary_size(tensor, f"inputs[{i}]")
        if size is None:
            continue
        if offset + size > len(blob):
            raise MalformedBodyError(
                f"inputs[{i}]: binary_data_size {size} runs past the body "
                f"({len(blob) - offset} bytes of tensor data left)"
            )
        parts[i] = blob[offset : offset + size]
        tensor["data"] = []
        offset += size
    if offset != len(blob):
        raise MalformedBodyError(
            f"the body holds {len(blob) - offset} bytes after the declared tensors "
            "(binary_data_size must add up to the body length minus the JSON header)"
        )
    return parts


def tensor_bytes(
    raw: memoryview, shape: list[int], dtype: np.dtype[Any], datatype: str, where: str
) -> npt.NDArray[Any]:
    """A flat array of the little-endian values in ``raw``, which must hold exactly ``shape``.

    A copy in native byte order: a view would be read-only (the body is ``bytes``), which torch
    warns about when the batch reaches a model.
    """
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"{where}.shape: expected non-negative sizes, got {shape}")
    want = math.prod(shape) * dtype.itemsize
    if len(raw) != want:
        raise InvalidInputError(
            f"{where}: shape {shape} of {datatype} takes {want} bytes, "
            f"but binary_data_size is {len(raw)}"
        )
    if dtype.kind == "b" and len(raw) and np.frombuffer(raw, np.uint8).max() > 1:
        # a BOOL element is one byte, 0 or 1: anything else is not a boolean
        raise InvalidInputError(f"{where}: BOOL tensor holds bytes other than 0 and 1")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)


def npy_batch(raw: bytes) -> npt.NDArray[Any]:
    """The array of a ``.npy`` body (numbers only: pickled objects are refused).

    The header's shape and dtype are checked against the bytes that follow before any array is
    made: ``np.load`` would allocate whatever a 100-byte body declares.
    """
    fp = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"format version {version} (numeric arrays are 1.0 or 2.0)")
    except (ValueError, OSError, EOFError) as err:
        raise MalformedBodyError(f"not a readable .npy body ({err})") from err
    if dtype.hasobject or dtype.kind not in "biuf":
        raise InvalidInputError(f"inputs: expected a numeric .npy array, got {dtype}")
    data = memoryview(raw)[fp.tell() :]
    want = math.prod(shape) * dtype.itemsize
    if len(data) != want:
        raise MalformedBodyError(
            f"not a readable .npy body (its header declares {want} bytes of data, "
            f"the body holds {len(data)})"
        )
    arr: npt.NDArray[Any] = np.frombuffer(data, dtype=dtype)
    # a copy: writable, C order, its own memory (the body is read-only bytes)
    out: npt.NDArray[Any] = arr.reshape(shape, order="F" if fortran else "C").copy()
    return out
