"""A text family's input checks: one non-empty string per input, at most so many characters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from hybridserve.runtime.errors import BatchTooLargeError, InvalidInputError
from hybridserve.runtime.inputs import (
    WARMUP_TEXT,
    check_family_batch,
    check_texts,
    example_input,
)

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Spec:
    input_kind: str
    input_shape: tuple[int, ...] = ()
    input_range: tuple[float, float] | None = None


def test_lists_unicode_object_and_bytes_arrays_become_object_arrays_of_str() -> None:
    for batch in (
        ["the cat", "dög"],
        np.array(["the cat", "dög"]),
        np.array(["the cat", "dög"], dtype=object),
        [b"the cat", "dög".encode()],
    ):
        out = check_texts(batch, max_batch_size=4, max_chars=10)
        assert out.dtype == object and out.shape == (2,)
        assert out.tolist() == ["the cat", "dög"]
        assert all(type(t) is str for t in out)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ("one string", "not a string"),
        ([], "empty batch"),
        (np.zeros(3, np.float32), r"takes text .*got numbers \(float32\)"),
        (np.array([["a", "b"]]), r"1-D list .*shape \(1, 2\)"),
        (["ok", ""], r"inputs\[1\]: empty text"),
        (["ok", " \n\t"], r"inputs\[1\]: empty text"),
        (["x" * 11], r"inputs\[0\]: text of 11 characters is longer than the limit of 10"),
        (["ok", 3], r"inputs\[1\]: .*got a number"),
        ([None], r"inputs\[0\]: .*got null"),
        ([[1.0, 2.0]], r"inputs\[0\]: .*got a list"),
        ([b"\xff\xfe"], r"inputs\[0\]: bytes that are not UTF-8"),
        (5, "expected a list of strings"),
    ],
)
def test_bad_text_batches_name_the_input_and_the_problem(batch: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_texts(batch, max_batch_size=4, max_chars=10)


def test_too_many_texts_is_the_batch_limit() -> None:
    with pytest.raises(BatchTooLargeError, match="larger than the limit of 2"):
        check_texts(["a", "b", "c"], max_batch_size=2, max_chars=10)


def test_the_family_kind_picks_the_check_and_the_warm_up_input() -> None:
    text, tensor = Spec("text"), Spec("tensor", (2,), (0.0, 255.0))
    assert check_family_batch(["hi"], text, 4, 10).tolist() == ["hi"]
    with pytest.raises(InvalidInputError, match="takes text"):
        check_family_batch(np.ones((1, 2)), text, 4, 10)
    out = check_family_batch([[1, 2]], tensor, 4, 10)
    assert out.dtype == np.float32 and out.shape == (1, 2)
    with pytest.raises(InvalidInputError, match="expected numbers"):
        check_family_batch(["hi"], tensor, 4, 10)
    warm = example_input(text)
    assert warm.shape == () and warm.item() == WARMUP_TEXT
    # the engine's warm-up repeats the example into a batch
    assert np.repeat(warm[None], 3, axis=0).tolist() == [WARMUP_TEXT] * 3
    assert example_input(tensor).tolist() == [0.0, 0.0]
