"""The bundled family's training entry point, on a few synthetic images (no data set needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridserve.data.fashion_mnist import Split
from hybridserve.models.zoo import train

pytestmark = pytest.mark.unit


def _split(name: str, n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    return Split(name=name, x=x, y=y, index=np.arange(n, dtype=np.int64))


def test_only_one_model_trains_with_the_seed_of_its_place_in_the_family(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train, "load_train", lambda directory=None: _split("train", 256, 0))
    monkeypatch.setattr(train, "load_eval_split", lambda name: _split(name, 64, 1))
    threads = torch.get_num_threads()
    try:
        manifest = train.train_family(tmp_path, only=["mlp"], epochs=1, threads=1)
    finally:
        torch.set_num_threads(threads)
    # mlp is the family's second model: seed 0 + 1, whether or not the others train too
    assert manifest["mlp"]["seed"] == 1
    assert manifest["mlp"]["epochs"] == 1
    assert (tmp_path / "mlp.safetensors").is_file()
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest


def test_a_student_learns_from_the_teacher_trained_in_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train, "load_train", lambda directory=None: _split("train", 128, 0))
    monkeypatch.setattr(train, "load_eval_split", lambda name: _split(name, 32, 1))
    real = train.teacher_logits
    seen: list[tuple[str, bool]] = []

    def spy(name: str, out_dir: Path, x: torch.Tensor) -> torch.Tensor:
        # the teacher's weights from this run must already be on disk when the student starts
        seen.append((name, (out_dir / f"{name}.safetensors").is_file()))
        logits = real(name, out_dir, x)
        assert logits.shape == (x.shape[0], 10)
        return logits

    monkeypatch.setattr(train, "teacher_logits", spy)
    threads = torch.get_num_threads()
    try:
        # the student is listed first; the teacher still trains before it
        manifest = train.train_family(tmp_path, only=["cnn-small", "vgg"], epochs=1, threads=1)
    finally:
        torch.set_num_threads(threads)
    assert seen == [("vgg", True)]
    assert manifest["cnn-small"]["teacher"] == "vgg"
    assert "teacher" not in manifest["vgg"]


def test_a_missing_teacher_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hybridserve.errors import HybridServeError
    from hybridserve.models import family

    monkeypatch.setattr(family, "bundled_config_path", lambda name: tmp_path / "none" / "f.yaml")
    with pytest.raises(HybridServeError, match="teacher 'vgg'"):
        train.teacher_logits("vgg", tmp_path, torch.zeros(2, 1, 28, 28))


def test_distillation_loss_blends_labels_and_the_softened_teacher() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=gen)
    labels = torch.randint(0, 10, (16,), generator=gen)
    cross_entropy = torch.nn.functional.cross_entropy(logits, labels)
    plain = train.Recipe(epochs=1, lr=1e-3)
    assert torch.equal(train._loss(logits, labels, None, plain), cross_entropy)
    # a student that already matches its teacher pays only the label term's share
    student = train.Recipe(epochs=1, lr=1e-3, teacher="vgg", distill_weight=0.7)
    matched = train._loss(logits, labels, logits.clone(), student)
    assert torch.allclose(matched, 0.3 * cross_entropy, atol=1e-6)
    other = torch.randn(16, 10, generator=gen)
    assert float(train._loss(logits, labels, other, student)) > float(matched)


def test_the_bundled_recipes_name_teachers_of_the_family() -> None:
    for name, recipe in train.RECIPES.items():
        assert recipe.teacher is None or (
            recipe.teacher in train.ARCHITECTURES and recipe.teacher != name
        )
