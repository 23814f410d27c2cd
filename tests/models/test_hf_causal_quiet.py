"""HFCausalLM loads without transformers' "Loading weights" progress bars, and leaves the
progress-bar setting as it found it (other code's bars are not its business)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from transformers.utils import logging as hf_logging

from hybridserve.models.hf_causal import HFCausalLM
from models.tiny_lms import save_tiny

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("bars_on", [True, False])
def test_loading_prints_no_progress_bar(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], bars_on: bool
) -> None:
    path = save_tiny(tmp_path / "lm", "gpt2")
    was_on = hf_logging.is_progress_bar_enabled()
    try:
        if bars_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        else:
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        capfd.readouterr()  # save_pretrained's own bars
        HFCausalLM(path)
        out, err = capfd.readouterr()
        assert "Loading weights" not in out + err
        assert hf_logging.is_progress_bar_enabled() is bars_on
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        else:
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
