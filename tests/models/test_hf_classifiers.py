"""Hugging Face image and text classifiers from local directories, through calibrate and tune.

Tiny random-weight ViT and BERT models are saved into temporary directories
(``models/tiny_classifiers.py``); the socket layer refuses connections, so a hub download fails
the test.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("transformers")

from hybridserve.calibration import run_calibration
from hybridserve.data.text import load_jsonl_split
from hybridserve.errors import HybridServeError
from hybridserve.models import load_family, read_config
from hybridserve.models.hf_classifier import HFImageClassifier, HFTextClassifier
from hybridserve.tuning.tune import run_tune
from hybridserve.workdir import Workdir
from models.tiny_classifiers import (
    IMAGE_SIZE,
    N_CLASSES,
    random_images,
    write_image_family,
    write_text_family,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_network")]


@pytest.fixture(scope="module")
def image_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return write_image_family(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="module")
def text_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return write_text_family(tmp_path_factory.mktemp("bert"))


def test_image_classifier_runs_the_processor_then_the_model(image_yaml: Path) -> None:
    family = load_family(config=image_yaml)
    small, giant = family.models
    assert isinstance(giant, HFImageClassifier)
    x = random_images(5, 9)
    # the processor resizes the API's 12×12 images to the model's 8×8 and normalises them
    pixels = giant.processor(images=list(x.astype(np.float32)), return_tensors="pt")
    assert tuple(pixels["pixel_values"].shape) == (5, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.inference_mode():
        expected = giant.model(pixel_values=pixels["pixel_values"]).logits.numpy()
    got = giant.predict_logits(x)
    assert got.shape == (5, N_CLASSES) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # the server hands the batch over as float32: same answer as the raw uint8 pixels
    np.testing.assert_allclose(giant.predict_logits(x.astype(np.float32)), got, atol=1e-6)
    assert 0 < small.info.params < giant.info.params
    assert 0 < small.info.macs < giant.info.macs
    assert giant.info.weight_bytes == 4 * giant.info.params
    assert small.fingerprint != giant.fingerprint


def test_image_family_calibrates_tunes_and_serves(image_yaml: Path, tmp_path: Path) -> None:
    from hybridserve.backends.local import engine_from_workdir
    from runtime.cascade_fixtures import simulate
    from server.app_harness import app_client

    family = load_family(config=image_yaml)
    wd = Workdir(tmp_path / "wd")
    report = run_calibration(family, wd, progress=False)
    assert [m.name for m in report.models] == ["small", "giant"]
    policy = run_tune(wd, "ap", config=image_yaml, deferral="maxprob")
    assert policy.family == "tiny-vit" and policy.giant == "giant"
    x = family.split("test").x[:12]
    sim = simulate(policy, family, x)
    engine = engine_from_workdir(wd.root, family_config=image_yaml, batch_size=8)

    async def ask() -> list[dict[str, object]]:
        async with engine, app_client(engine) as client:
            r = await client.post("/v1/predict", json={"inputs": x.tolist()})
            assert r.status_code == 200, r.text
            answers: list[dict[str, object]] = r.json()["answers"]
            return answers

    answers = asyncio.run(ask())
    assert [a["label"] for a in answers] == sim.labels.tolist()
    assert [a["model"] for a in answers] == sim.model
    assert {a["label_name"] for a in answers} <= {"a", "b", "c"}


def test_text_family_reads_npz_and_jsonl(text_yaml: Path) -> None:
    cfg = read_config(text_yaml)
    assert cfg.input_kind == "text" and cfg.input_shape == ()
    family = load_family(config=text_yaml)
    assert family.input_kind == "text"
    val, test = family.split("val"), family.split("test")
    assert val.x.dtype.kind == test.x.dtype.kind == "U"
    assert val.x.ndim == test.x.ndim == 1 and len(test) == len(test.y)
    small, giant = family.models
    assert isinstance(giant, HFTextClassifier)
    assert giant.max_length == 16 and small.max_length == 32  # YAML, else the position limit
    logits = giant.predict_logits(test.x[:4])
    assert logits.shape == (4, N_CLASSES)
    # one text scores the same alone as in a padded batch
    np.testing.assert_allclose(giant.predict_logits(test.x[1:2]), logits[1:2], atol=1e-5)
    # texts past max_length are truncated, not refused
    assert giant.predict_logits(np.array(["the cat sat " * 40])).shape == (1, N_CLASSES)
    assert 0 < small.info.macs < giant.info.macs


def test_text_inputs_as_bytes_and_numbers() -> None:
    texts = HFTextClassifier.texts(np.array([b"caf\xc3\xa9", b"dog"]))
    assert texts == ["café", "dog"]
    assert HFTextClassifier.texts(np.zeros(2, np.float32)) == ["0.0", "0.0"]
    with pytest.raises(HybridServeError, match="1-D array of strings"):
        HFTextClassifier.texts(np.zeros((2, 3)))


def test_text_family_calibrates_and_tunes(text_yaml: Path, tmp_path: Path) -> None:
    family = load_family(config=text_yaml)
    wd = Workdir(tmp_path / "wd")
    report = run_calibration(family, wd, progress=False)
    giant = report.models[-1]
    assert giant.name == "giant"
    policy = run_tune(wd, "eo", 5.0, config=text_yaml, deferral="maxprob")
    assert policy.family == "tiny-bert" and policy.chain[-1] == "giant"
    # the cached logits hold the test split's jsonl rows in order
    logits = np.load(wd.logits_dir / "tiny-bert-test.npz")
    np.testing.assert_allclose(
        logits["logits/giant"][:3], family.giant.predict_logits(family.split("test").x[:3]),
        atol=1e-5,
    )  # fmt: skip


def test_missing_pieces_are_one_line_errors(tmp_path: Path, image_yaml: Path) -> None:
    with pytest.raises(HybridServeError, match="directory not found"):
        HFImageClassifier(tmp_path / "nope")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((image_yaml.parent / "giant" / "config.json").read_text())
    with pytest.raises(HybridServeError, match=r"no image processor .*preprocessor_config") as e:
        HFImageClassifier(bare)
    assert "\n" not in str(e.value)
    with pytest.raises(HybridServeError, match="no tokenizer"):
        HFTextClassifier(bare)


def test_text_family_yaml_refuses_tensor_loaders(tmp_path: Path) -> None:
    doc = {
        "family": "t",
        "input_kind": "text",
        "data": {"val": "v.jsonl", "test": "t.jsonl"},
        "models": [
            {"name": "a", "loader": "onnx", "path": "a.onnx"},
            {"name": "b", "loader": "hf-text-classifier", "path": "b"},
        ],
    }
    path = tmp_path / "family.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HybridServeError, match=r"models\.0\.loader: a text family"):
        read_config(path)
    doc["models"][0] = {"name": "a", "loader": "hf-text-classifier", "path": "a"}
    doc["input_shape"] = [4]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HybridServeError, match=r"input_shape: a text family takes \[\]"):
        read_config(path)


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"text": "a", "label": 0}) + "\n\n" + json.dumps({"text": "b", "label": 3})
    )
    assert len(load_jsonl_split(path, "val")) == 2
    with pytest.raises(HybridServeError, match=r"d\.jsonl:3: 'label' 3 must be ≥ 0, at most 2"):
        load_jsonl_split(path, "val", num_classes=3)
    path.write_text('{"text": 5, "label": 0}\n')
    with pytest.raises(HybridServeError, match=r"d\.jsonl:1: expected an object with a string"):
        load_jsonl_split(path, "val")
    path.write_text("{oops\n")
    with pytest.raises(HybridServeError, match=r"d\.jsonl:1: not valid JSON"):
        load_jsonl_split(path, "val")


def test_serving_resolves_a_text_family(text_yaml: Path) -> None:
    from hybridserve.serving import resolve_family

    # served like any family since the engine checks text inputs (tests/server/...text_family)
    cfg, path, user = resolve_family(None, text_yaml)
    assert (cfg.family, cfg.input_kind, path, user) == ("tiny-bert", "text", text_yaml, True)
