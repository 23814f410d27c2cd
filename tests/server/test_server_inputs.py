"""What a request declares is checked before its data is decoded; messages give the real reason."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import threading
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hybridserve.runtime import inputs
from hybridserve.server import decode
from runtime.cascade_fixtures import make_inputs
from server.app_harness import app_client, make_engine

pytestmark = pytest.mark.integration


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def declared_png(width: int, height: int, color_type: int = 0, idat: bytes | None = None) -> str:
    """A small base64 PNG whose header declares ``width × height`` (gray 0, RGB 2) pixels.

    Its pixel data is one compressed row: only a decoder that trusts the header allocates the
    whole image.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    raw = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)) if idat is None else idat)
        + _chunk(b"IEND", b"")
    )
    return base64.b64encode(raw).decode()


def real_png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _post(path: str, body: Any) -> tuple[int, dict[str, Any]]:
    async def go() -> tuple[int, dict[str, Any]]:
        async with app_client(make_engine()) as client:
            r = await client.post(path, json=body)
            ok = await client.post("/v1/predict", json={"inputs": make_inputs(2).tolist()})
            assert ok.status_code == 200, ok.text  # serving goes on
            return r.status_code, r.json()

    return asyncio.run(go())


def _v2(shape: list[int], datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}


# ---------------------------------------------------------------------- PNG images


@pytest.mark.parametrize(
    ("width", "height", "color_type"),
    [(20000, 20000, 0), (13000, 13000, 2)],
    ids=["bomb-20000-gray", "13000-rgb"],
)
def test_a_png_declaring_a_huge_size_is_refused_from_its_header(
    width: int, height: int, color_type: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    real_open = Image.open

    def spy_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", spy_open)
    status, body = _post("/v1/predict", {"inputs": [declared_png(width, height, color_type)]})
    assert status == 422, body
    assert body["error"] == f"inputs[0]: image is {width}×{height} pixels, expected 4×4"
    assert opened == []  # refused before PIL read a byte of it


def test_a_png_of_the_right_size_but_broken_data_is_a_422() -> None:
    status, body = _post("/v1/predict", {"inputs": [declared_png(4, 4, idat=b"not zlib data")]})
    assert status == 422, body
    assert body["error"].startswith("inputs[0]: not a readable PNG image")


def test_inputs_are_counted_against_the_limit_before_any_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[str] = []
    real_png_decoder = decode.png

    def spy(text: str, *args: Any) -> Any:
        decoded.append(text)
        return real_png_decoder(text, *args)

    monkeypatch.setattr(decode, "png", spy)
    image = real_png(make_inputs(1)[0])
    status, body = _post("/v1/predict", {"inputs": [image] * 9})  # the limit is 8
    assert status == 422, body
    assert body["error"] == "inputs: batch of 9 inputs is larger than the limit of 8"
    assert decoded == []


def test_png_bodies_are_decoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real_png_decoder = decode.png

    def spy(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return real_png_decoder(*args)

    monkeypatch.setattr(decode, "png", spy)
    x = make_inputs(2, seed=3)

    async def go() -> int:
        async with app_client(make_engine()) as client:
            r = await client.post("/v1/predict", json={"inputs": [real_png(x[0]), real_png(x[1])]})
            assert r.status_code == 200, r.text
            return threading.get_ident()

    loop_thread = asyncio.run(go())
    assert len(threads) == 2
    assert loop_thread not in threads


# ---------------------------------------------------------------------- KServe v2 tensors


@pytest.mark.parametrize(
    ("shape", "data_len", "message"),
    [
        ([9, 4, 4], 9 * 16, "inputs: batch of 9 inputs is larger than the limit of 8"),
        ([10**9, 4, 4], 16, "inputs: batch of 1000000000 inputs is larger than the limit of 8"),
        (
            [1, 10**6],
            16,
            "inputs[0].shape: expected [N, 4, 4] with the batch first, got [1, 1000000]",
        ),
        ([1, 4, 4], 10**5, "inputs[0]: shape [1, 4, 4] holds 16 values, but data has 100000"),
    ],
    ids=["over-the-limit", "huge-batch", "wrong-input-shape", "data-longer-than-shape"],
)
def test_v2_declared_shape_is_checked_before_the_data_is_parsed(
    shape: list[int], data_len: int, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real_array = decode._array

    def spy(values: Any, where: str) -> Any:
        parsed.append(where)
        return real_array(values, where)

    monkeypatch.setattr(decode, "_array", spy)
    status, body = _post("/v2/models/tiny/infer", _v2(shape, "UINT8", [0] * data_len))
    assert status == 422, body
    assert body["error"] == message
    assert "inputs[0].data" not in parsed


# ---------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/v2/models/tiny/infer",
            _v2([0, 4, 4], "UINT8", []),
            "inputs[0].shape: empty batch; send at least one input",
        ),
        (
            "/v1/predict",
            {"inputs": [[[1e308] + [0] * 3] + [[0] * 4] * 3]},
            "inputs: value 1e+308 is too large; inputs are 32-bit floats "
            "(magnitude at most 3.4e+38)",
        ),
        (
            "/v2/models/tiny/infer",
            _v2([1, 4, 4], "FP64", [0] * 15 + [-1e308]),
            "inputs[0].data: value -1e+308 is too large; inputs are 32-bit floats "
            "(magnitude at most 3.4e+38)",
        ),
    ],
    ids=["empty-uint8-batch", "1e308-v1", "1e308-fp64-v2"],
)
def test_422_messages_give_the_real_reason(path: str, body: Any, message: str) -> None:
    status, reply = _post(path, body)
    assert status == 422, reply
    assert reply["error"] == message


def test_the_server_counts_inputs_with_the_runtimes_one_batch_limit_check() -> None:
    # one message and one status for "too many inputs", whichever side counts them first
    assert decode.check_count is inputs.check_count
    with pytest.raises(inputs.BatchTooLargeError, match=r"batch of 9 inputs .* limit of 8"):
        inputs.check_batch(np.zeros((9, 2), np.float32), (2,), None, 8)
