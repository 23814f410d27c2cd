"""Binary request bodies: the KServe v2 binary tensor extension and raw ``.npy`` batches.

A v2 binary body (``Inference-Header-Content-Length: N``) is N bytes of the JSON inference
request, then the raw little-endian bytes of every input whose ``parameters`` carry
``binary_data_size``, in input order, as Triton and KServe accept (a ``BYTES`` element is a 4-byte
little-endian length and then its bytes: text families take them). Framing errors (a length header
that is not a number or points past the body, bytes missing or left over) are 400; a tensor whose
bytes do not match its shape and datatype is 422. Everything is checked against the header's
declared sizes before any array is built.
"""

from __future__ import annotations

import io
import math
import struct
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

    A read-only view of the body where the machine is little-endian (no copy: the engine's
    checks make the float32 batch the models get, writable, in one pass).
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
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)


#: A BYTES element's length prefix: 4 bytes, little-endian.
_LENGTH = struct.Struct("<I")


def bytes_elements(raw: memoryview, shape: list[int], where: str) -> list[bytes]:
    """The elements of a binary ``BYTES`` tensor: each is a 4-byte little-endian length and
    then that many bytes, and ``raw`` must hold exactly ``shape``'s count of them."""
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"{where}.shape: expected non-negative sizes, got {shape}")
    count = math.prod(shape)
    if count * _LENGTH.size > len(raw):
        # checked before anything is read: a small body cannot declare a huge count
        raise InvalidInputError(
            f"{where}: shape {shape} of BYTES takes at least {count * _LENGTH.size} bytes "
            f"(a 4-byte length per element), but binary_data_size is {len(raw)}"
        )
    items: list[bytes] = []
    offset = 0
    for i in range(count):
        if offset + _LENGTH.size > len(raw):
            raise InvalidInputError(
                f"{where}: BYTES element {i} has no 4-byte length "
                f"({len(raw) - offset} bytes of the tensor left)"
            )
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + size > len(raw):
            raise InvalidInputError(
                f"{where}: BYTES element {i} declares {size} bytes, "
                f"but {len(raw) - offset} are left in the tensor"
            )
        items.append(bytes(raw[offset : offset + size]))
        offset += size
    if offset != len(raw):
        raise InvalidInputError(
            f"{where}: {len(raw) - offset} bytes left after the {count} BYTES elements "
            f"of shape {shape}"
        )
    return items


#: Parsed ``.npy`` headers by their bytes: a client sends the same few over and over, and
#: parsing one (``ast.literal_eval``) cost more than the rest of the body's decoding.
_NPY_HEADERS: dict[bytes, tuple[tuple[int, ...], bool, np.dtype[Any]]] = {}
_NPY_HEADERS_MAX = 256
_NPY_MAGIC = b"\x93NUMPY"


def _cached_header(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int] | None:
    """A header seen before: its shape, order, dtype and where the data starts."""
    if len(raw) < 12 or raw[:6] != _NPY_MAGIC:
        return None
    if raw[6] == 1:
        end = 10 + int.from_bytes(raw[8:10], "little")
    elif raw[6] == 2:
        end = 12 + int.from_bytes(raw[8:12], "little")
    else:
        return None
    if end > len(raw):
        return None  # numpy's reader says what is wrong
    hit = _NPY_HEADERS.get(raw[:end])
    return None if hit is None else (*hit, end)


def _read_header(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """Shape, order, dtype and data offset of a ``.npy`` body, read by numpy."""
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
    end = fp.tell()
    if len(_NPY_HEADERS) < _NPY_HEADERS_MAX:
        _NPY_HEADERS[raw[:end]] = (shape, fortran, dtype)
    return shape, fortran, dtype, end


def npy_batch(raw: bytes) -> npt.NDArray[Any]:
    """The array of a ``.npy`` body (numbers only: pickled objects are refused).

    The header's shape and dtype are checked against the bytes that follow before any array is
    made: ``np.load`` would allocate whatever a 100-byte body declares. The array is a
    read-only view of the body (the engine's checks make the models' float32 copy).
    """
    shape, fortran, dtype, end = _cached_header(raw) or _read_header(raw)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise InvalidInputError(f"inputs: expected a numeric .npy array, got {dtype}")
    data = memoryview(raw)[end:]
    want = math.prod(shape) * dtype.itemsize
    if len(data) != want:
        raise MalformedBodyError(
            f"not a readable .npy body (its header declares {want} bytes of data, "
            f"the body holds {len(data)})"
        )
    arr: npt.NDArray[Any] = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")
