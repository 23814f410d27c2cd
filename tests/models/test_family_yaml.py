"""Family YAML: a valid family loads; each mistake is one clear error naming its field or file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from tiny_family import INPUT_DIM, N_CLASSES, big_state, small_state

from hybridserve.errors import HybridServeError
from hybridserve.models import load_family, read_config
from hybridserve.models.family import bundled_config_path

pytestmark = pytest.mark.unit


def edit(path: Path, change: Any) -> Path:
    """Apply ``change(config_dict)`` to the YAML at ``path`` in place."""
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_tiny_family_loads(tiny_family_yaml: Path) -> None:
    family = load_family(config=tiny_family_yaml)
    assert family.name == "tiny" and family.names == ("small", "big")
    assert family.giant.name == "big" and family.model("small").name == "small"
    assert family.label_names == ("a", "b", "c") and family.input_shape == (INPUT_DIM,)
    val = family.split("val")
    assert val.x.shape == (2000, INPUT_DIM) and val.y.max() < N_CLASSES
    # The weights were loaded: big computes x @ TRUE_W exactly, small 4× that.
    x = val.x[:5]
    np.testing.assert_allclose(
        family.model("small").predict_logits(x), 4 * family.giant.predict_logits(x), rtol=1e-4
    )


def test_labels_default_to_class_indices(tiny_family_yaml: Path) -> None:
    edit(tiny_family_yaml, lambda c: c.pop("labels"))
    assert load_family(config=tiny_family_yaml).label_names == ("0", "1", "2")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c.update(colour="red"), "colour: unknown field"),
        (lambda c: c["models"][1].update(size="xl"), r"models\.1\.size: unknown field"),
        (
            lambda c: c["models"][0].update(preprocessing={"gamma": 2}),
            r"models\.0\.preprocessing\.gamma: unknown field",
        ),
        (lambda c: c["data"].update(train="t.npz"), r"data\.train: unknown field"),
        (lambda c: c.pop("input_shape"), "input_shape: Field required"),
        (lambda c: c.update(models=c["models"][:1]), "models: List should have at least 2"),
        (lambda c: c["models"][1].update(name="small"), "model names must be unique"),
        (lambda c: c["models"][0].update(loader="no_colon"), "module:function"),
        (lambda c: c["models"][0].update(preprocessing={"std": 0}), "std: Input should be"),
    ],
)
def test_config_errors_name_the_field(tiny_family_yaml: Path, change: Any, match: str) -> None:
    edit(tiny_family_yaml, change)
    with pytest.raises(HybridServeError, match=match) as info:
        load_family(config=tiny_family_yaml)
    assert str(info.value).startswith(str(tiny_family_yaml))
    assert "\n" not in str(info.value)


def test_missing_weights_file_names_the_path(tiny_family_yaml: Path) -> None:
    (tiny_family_yaml.parent / "big.safetensors").unlink()
    with pytest.raises(HybridServeError, match="weights file not found") as info:
        load_family(config=tiny_family_yaml)
    assert str(tiny_family_yaml.parent / "big.safetensors") in str(info.value)


def test_weights_of_the_wrong_shape(tiny_family_yaml: Path) -> None:
    save_file(big_state(), str(tiny_family_yaml.parent / "small.safetensors"))
    with pytest.raises(HybridServeError, match=r"small\.safetensors does not fit the model"):
        load_family(config=tiny_family_yaml)


@pytest.mark.parametrize("filename", ["small.safetensors", "small.pt"])
def test_corrupt_weights_file(tiny_family_yaml: Path, filename: str) -> None:
    (tiny_family_yaml.parent / filename).write_bytes(b"garbage" * 20)
    edit(tiny_family_yaml, lambda c: c["models"][0].update(weights=filename))
    with pytest.raises(HybridServeError, match="is not a readable state dict") as info:
        load_family(config=tiny_family_yaml)
    assert str(tiny_family_yaml.parent / filename) in str(info.value)


def test_torch_pt_state_dicts_load_too(tiny_family_yaml: Path) -> None:
    torch.save(small_state(2.0), tiny_family_yaml.parent / "small.pt")
    edit(tiny_family_yaml, lambda c: c["models"][0].update(weights="small.pt"))
    family = load_family(config=tiny_family_yaml)
    x = family.split("test").x[:3]
    np.testing.assert_allclose(
        family.model("small").predict_logits(x), 2 * family.giant.predict_logits(x), rtol=1e-4
    )


def test_npz_with_wrong_shapes_is_refused(tiny_family_yaml: Path) -> None:
    np.savez(
        tiny_family_yaml.parent / "val.npz", x=np.zeros((4, INPUT_DIM + 1)), y=np.zeros(4, int)
    )
    family = load_family(config=tiny_family_yaml)
    with pytest.raises(HybridServeError, match=r"val.npz: 'x' rows have shape \(7,\)"):
        family.split("val")


def test_npz_labels_outside_the_label_list(tiny_family_yaml: Path) -> None:
    np.savez(tiny_family_yaml.parent / "test.npz", x=np.zeros((2, INPUT_DIM)), y=np.array([0, 3]))
    with pytest.raises(HybridServeError, match=r"labels in 'y' must lie in \[0, 2\]"):
        load_family(config=tiny_family_yaml).split("test")


@pytest.mark.parametrize(
    "loader, match",
    [
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("tiny_family:nothing", "has no function 'nothing'"),
        ("tiny_family:not_a_module", "returned str, not an nn.Module"),
    ],
)
def test_bad_loaders(tiny_family_yaml: Path, loader: str, match: str) -> None:
    edit(tiny_family_yaml, lambda c: c["models"][0].update(loader=loader))
    with pytest.raises(HybridServeError, match=match):
        load_family(config=tiny_family_yaml)


def test_missing_invalid_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(HybridServeError, match="family config not found"):
        read_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: [unclosed\n")
    with pytest.raises(HybridServeError, match="not valid YAML"):
        read_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(HybridServeError, match="mapping at the top level"):
        read_config(bad)


def test_bundled_family_config_is_valid() -> None:
    config = read_config(bundled_config_path("fashion-mnist"))
    assert [m.name for m in config.models] == ["linear", "mlp", "cnn-small", "cnn", "vgg"]
    assert config.data.val == "builtin" and len(config.labels or []) == 10
    with pytest.raises(HybridServeError, match="unknown bundled family 'cifar'"):
        bundled_config_path("cifar")
