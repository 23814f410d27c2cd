"""What a Ray actor loads: one model of a family by reference, and its pipeline parts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridserve.backends.ray_family import FamilyRef, part_function, run_in_chunks
from hybridserve.backends.ray_replicas import RemoteModel
from hybridserve.data.fashion_mnist import load_eval_split
from hybridserve.errors import HybridServeError
from hybridserve.models import CallableModel
from hybridserve.models.torch_model import TorchModel, load_weights
from hybridserve.models.zoo import fashion_mnist as zoo

pytestmark = pytest.mark.unit

BUNDLED = FamilyRef("fashion-mnist")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_eval_split("test").x[:40]


def test_a_ref_is_small_and_picklable_and_loads_only_the_named_model(images: np.ndarray) -> None:
    ref = pickle.loads(pickle.dumps(BUNDLED))
    model = ref.load_model("mlp")
    module = zoo.mlp()
    sha = load_weights(module, BUNDLED.path.parent / "mlp.safetensors")
    entry = BUNDLED.read().models[1]
    expected = TorchModel(
        "mlp", module, entry.preprocessing, weights_sha256=sha, torchscript=entry.torchscript
    )
    assert model.name == "mlp"
    assert model.fingerprint == expected.fingerprint
    np.testing.assert_array_equal(model.predict_logits(images), expected.predict_logits(images))


def test_info_has_labels_input_shape_and_names_without_loading_models() -> None:
    info = BUNDLED.info()
    assert (info.name, info.input_shape, info.input_range) == ("fashion-mnist", (28, 28), (0, 255))
    assert info.label_names[0] == "T-shirt/top" and len(info.label_names) == 10
    assert info.names == BUNDLED.model_names()
    assert BUNDLED.model_names()[:2] == ("linear", "mlp")
    assert all(isinstance(m, RemoteModel) for m in info.models)  # stubs: no weights here


def test_info_counts_classes_when_the_yaml_has_no_labels(tiny_family_yaml: Path) -> None:
    text = tiny_family_yaml.read_text()
    assert "labels:\n- a\n- b\n- c\n" in text
    path = tiny_family_yaml.parent / "nolabels.yaml"
    path.write_text(text.replace("labels:\n- a\n- b\n- c\n", ""))
    assert FamilyRef("tiny", str(path)).info().label_names == ("0", "1", "2")


@pytest.mark.parametrize(("name", "parts"), [("mlp", 2), ("cnn-small", 3), ("linear", 1)])
def test_chained_part_functions_equal_the_whole_model(
    images: np.ndarray, name: str, parts: int
) -> None:
    model = BUNDLED.load_model(name)
    whole = model.predict_logits(images)
    h = images
    for k in range(parts):
        fresh = BUNDLED.load_model(name)  # each part runs in its own actor with its own copy
        h = part_function(fresh, k, parts, "cpu")(h)
        assert isinstance(h, np.ndarray)
    assert h.dtype == np.float32
    np.testing.assert_allclose(h, whole, rtol=1e-5, atol=1e-5)


def test_run_in_chunks_keeps_to_the_batch_size() -> None:
    seen: list[int] = []

    def fn(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return x * 2

    out = run_in_chunks(fn, np.arange(10), 4)
    assert seen == [4, 4, 2]
    np.testing.assert_array_equal(out, np.arange(10) * 2)


def test_errors_name_the_problem() -> None:
    with pytest.raises(HybridServeError, match="has no model 'nope'"):
        BUNDLED.load_model("nope")
    plain = CallableModel("plain", lambda x: np.zeros((len(x), 2), dtype=np.float32))
    with pytest.raises(HybridServeError, match="only torch models can be cut"):
        part_function(plain, 0, 2, "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(HybridServeError, match="no CUDA device"):
            BUNDLED.load_model("linear", "cuda:0")
