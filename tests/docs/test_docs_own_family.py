"""A newcomer follows docs/own-family.md step by step: the toy family it builds (two torch
models, a YAML, .npz data), then the documented calibrate → profile → tune → serve, one HTTP
request, and the callables example. Every assertion is about what the guide says happens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docs.doc_blocks import DOCS, Block, PageRunner, extract

pytestmark = pytest.mark.e2e

GUIDE = DOCS / "own-family.md"


def test_the_guide_runs_start_to_end_and_the_server_answers(tmp_path: Path) -> None:
    blocks = extract(GUIDE)
    files = [b.file for b in blocks if b.file]
    assert files == ["my_models.py", "family.yaml"]  # the files the guide tells you to save

    runs = PageRunner(tmp_path / "reader").run_all(blocks)
    here = tmp_path / "reader"

    # step 2 wrote the weights and data the YAML names
    for rel in ("weights/small.safetensors", "weights/giant.safetensors", "data/val.npz"):
        assert (here / rel).is_file(), rel

    # step 4 wrote what the guide lists
    out = here / "toy-out"
    for name in ("calibration.json", "reliability.png", "profile.json", "policy-ap.json"):
        assert (out / name).is_file(), name
    policy = json.loads((out / "policy-ap.json").read_text())
    assert policy["format"] == "hybridserve/policy"
    assert policy["family"] == "toy"
    assert policy["chain"][-1] == "giant"
    assert len(policy["thresholds"]) == len(policy["chain"]) - 1

    # step 5: the one HTTP request got an answer per input, with the fields the guide names
    serve_run = next(r for r in runs if "hybridserve serve" in r.block.code)
    body = json.loads(serve_run.stdout.strip().splitlines()[-1])
    assert body["model"] == "toy"
    assert len(body["answers"]) == 2
    for answer in body["answers"]:
        assert answer["label_name"] in ("left", "right", "curve")
        assert 0.0 <= answer["confidence"] <= 1.0
        assert answer["model"] in policy["chain"]
        assert answer["path"][-1] == answer["model"]
    assert body["policy_version"] == 1

    # the callables example tuned a chain ending in the giant and served three inputs
    callables = runs[-1]
    assert "chain ('small', 'giant')" in callables.stdout or "chain ('giant',)" in callables.stdout
    assert len(callables.stdout.strip().splitlines()) == 1 + 3


def test_without_the_pythonpath_step_the_loader_error_is_one_line(tmp_path: Path) -> None:
    """The guide's reason for the export: without it the loaders cannot be imported."""
    blocks = [b for b in extract(GUIDE) if b.file or "make_split" in b.code]
    runner = PageRunner(tmp_path / "reader")
    runner.run_all(blocks)
    calibrate = Block(
        GUIDE, 0, "bash", "hybridserve calibrate --config family.yaml --workdir toy-out\n"
    )
    with pytest.raises(AssertionError) as err:
        PageRunner(tmp_path / "reader", env=runner.env).run(calibrate)
    message = str(err.value)
    assert "exit 2" in message
    assert "cannot import 'my_models'" in message
