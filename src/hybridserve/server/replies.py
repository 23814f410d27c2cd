"""The inference routes' work once a body is decoded: the batch to the engine, its answer as bytes.

The FastAPI routes (JSON bodies) and the raw binary routes (``server/binroute.py``) share it, so
a request is checked and answered alike whatever its body's format. A v2 request may ask for its
outputs as binary data, as the KServe v2 binary tensor extension has it (Triton's
``parameters.binary_data_output``, or ``binary_data`` on a requested output): those outputs'
values then follow the JSON header as raw little-endian bytes, ``BYTES`` elements each behind a
4-byte length, and the header's length is the ``Inference-Header-Content-Length`` response header.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from hybridserve.runtime.answers import answer_dicts
from hybridserve.runtime.contract import ServingEngine
from hybridserve.runtime.errors import InvalidInputError
from hybridserve.runtime.job import Result
from hybridserve.server.binary import HEADER_LENGTH, OCTET_STREAM
from hybridserve.server.decode import predict_inputs, v2_tensor, v2_texts
from hybridserve.server.schemas import InferRequest

JSON = "application/json"
#: The v2 outputs, in reply order, and their datatypes.
OUTPUTS: dict[str, str] = {
    "label": "INT64",
    "label_name": "BYTES",
    "confidence": "FP64",
    "model": "BYTES",
}


class Reply(NamedTuple):
    """A 200 answer: its body, media type and any extra headers."""

    body: bytes
    media_type: str = JSON
    headers: dict[str, str] | None = None


def _dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def predict_reply(eng: ServingEngine, inputs: list[Any] | npt.NDArray[Any]) -> Reply:
    """``/v1/predict``: a batch of nested lists, PNGs, texts or a ``.npy`` array, answered."""
    x: Any
    if eng.family.input_kind == "text":
        x = inputs  # strings: the engine checks each (non-empty, length)
    else:
        x = await predict_inputs(inputs, eng.family.input_shape, eng.config.max_batch_size)
    result = await eng.predict_result(x)
    out: dict[str, object] = {
        "model": eng.family.name,
        "answers": answer_dicts(result, eng.family.label_names),
        "policy_version": result.policy_version,
    }
    if result.request_id is not None:  # drift handling on: the id feedback names
        out["id"] = result.request_id
    return Reply(_dumps(out))


def v2_batch(eng: ServingEngine, body: InferRequest) -> Any:
    """The batch a v2 request's one input tensor holds, checked against the family."""
    if len(body.inputs) != 1:
        raise InvalidInputError(
            f"inputs: expected exactly one input tensor, got {len(body.inputs)}"
        )
    tensor, limit = body.inputs[0], eng.config.max_batch_size
    if eng.family.input_kind == "text":
        return v2_texts(tensor, limit)
    return v2_tensor(tensor, eng.family.input_shape, limit)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{where}: expected true or false, got {value!r}")
    return value


def binary_outputs(body: InferRequest) -> frozenset[str]:
    """The outputs the request asks for as binary data (none: the reply is all JSON).

    ``parameters.binary_data_output`` sets every output's default; a requested output's own
    ``parameters.binary_data`` overrides it. Every output is answered either way.
    """
    default = _flag((body.parameters or {}).get("binary_data_output", False), "parameters")
    wanted = set(OUTPUTS) if default else set()
    for j, out in enumerate(body.outputs or ()):
        params = out.parameters or {}
        if "binary_data" in params and out.name in OUTPUTS:
            if _flag(params["binary_data"], f"outputs[{j}].parameters.binary_data"):
                wanted.add(out.name)
            else:
                wanted.discard(out.name)
    return frozenset(wanted)


def _encode(datatype: str, values: Sequence[Any]) -> bytes:
    """An output's values as the binary extension carries them (little-endian)."""
    if datatype == "INT64":
        return struct.pack(f"<{len(values)}q", *values)
    if datatype == "FP64":
        return struct.pack(f"<{len(values)}d", *values)
    encoded = [v.encode() for v in values]  # BYTES: each element behind its 4-byte length
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def infer_reply(
    eng: ServingEngine, body: InferRequest, result: Result, binary: frozenset[str]
) -> Reply:
    """The v2 answer to ``body``: JSON, or a JSON header and then the ``binary`` outputs' bytes."""
    names = eng.family.label_names
    columns: dict[str, Sequence[Any]] = {
        "label": result.labels,
        "label_name": [names[lab] for lab in result.labels],
        "confidence": result.confidence,
        "model": [result.chain[m] for m in result.model_index],
    }
    n = [len(result)]
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype in OUTPUTS.items():
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": n}
        if name in binary:
            blobs.append(_encode(datatype, columns[name]))
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = columns[name]
        outputs.append(tensor)
    head: dict[str, Any] = {"model_name": eng.family.name, "id": body.id, "outputs": outputs}
    if not binary:  # the same answers as objects; a binary reply keeps to the v2 outputs
        head["answers"] = answer_dicts(result, names)
    head["policy_version"] = result.policy_version
    if result.request_id is not None:
        head["request_id"] = result.request_id
    if not binary:
        return Reply(_dumps(head))
    raw = _dumps(head)
    return Reply(b"".join((raw, *blobs)), OCTET_STREAM, {HEADER_LENGTH: str(len(raw))})


async def infer(eng: ServingEngine, body: InferRequest) -> Reply:
    """A v2 request (its tensor's values decoded, from JSON or binary data), answered."""
    binary = binary_outputs(body)  # a malformed parameter is refused before the engine works
    result = await eng.predict_result(v2_batch(eng, body))
    return infer_reply(eng, body, result, binary)


def read_binary_reply(payload: bytes, header_length: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A binary reply's JSON header and every output's values (a client's side, for tests)."""
    head = orjson.loads(payload[:header_length])
    values: dict[str, Any] = {}
    offset = header_length
    for out in head["outputs"]:
        if "data" in out:
            values[out["name"]] = out["data"]
            continue
        size = out["parameters"]["binary_data_size"]
        raw = payload[offset : offset + size]
        offset += size
        if out["datatype"] == "BYTES":
            items, i = [], 0
            while i < len(raw):
                (n,) = struct.unpack_from("<I", raw, i)
                items.append(raw[i + 4 : i + 4 + n].decode())
                i += 4 + n
            values[out["name"]] = items
        else:
            dtype = "<i8" if out["datatype"] == "INT64" else "<f8"
            values[out["name"]] = np.frombuffer(raw, dtype=dtype).tolist()
    return head, values
