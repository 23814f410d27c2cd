"""ONNX family members: export of bundled torch members, label agreement, sizes, YAML errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnx

from hybridserve.errors import HybridServeError
from hybridserve.models import load_family, read_config
from hybridserve.models.family import bundled_config_path
from hybridserve.models.onnx_export import export_family
from hybridserve.models.onnx_model import MACS_KEY, OnnxModel, estimate_macs

pytestmark = pytest.mark.unit

SMALL = ("linear", "mlp")
N_IMAGES = 300


def _small_torch_family(folder: Path) -> Path:
    """The bundled family's two smallest members, in a YAML of their own."""
    source = bundled_config_path("fashion-mnist")
    doc = yaml.safe_load(source.read_text())
    doc["models"] = [
        {**m, "weights": str(source.parent / m["weights"])}
        for m in doc["models"]
        if m["name"] in SMALL
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "family.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx")
    torch_yaml = _small_torch_family(root / "torch")
    return torch_yaml, export_family(root / "onnx", config=torch_yaml, name="small-onnx")


def test_export_writes_a_family_yaml_that_validates(exported: tuple[Path, Path]) -> None:
    _, onnx_yaml = exported
    cfg = read_config(onnx_yaml)
    assert cfg.family == "small-onnx"
    assert [(m.name, m.loader, m.path) for m in cfg.models] == [
        ("linear", "onnx", "linear.onnx"),
        ("mlp", "onnx", "mlp.onnx"),
    ]
    assert cfg.data.val == cfg.data.test == "builtin"
    assert cfg.models[0].preprocessing.shape == (1, 28, 28)
    assert cfg.input_range == (0.0, 255.0)


def test_onnx_members_give_the_torch_labels(exported: tuple[Path, Path]) -> None:
    torch_yaml, onnx_yaml = exported
    tf, of = load_family(config=torch_yaml), load_family(config=onnx_yaml)
    x = tf.split("test").x[:N_IMAGES]
    for t, o in zip(tf.models, of.models, strict=True):
        assert isinstance(o, OnnxModel)
        lt, lo = t.predict_logits(x), o.predict_logits(x)
        assert lo.shape == (N_IMAGES, 10) and lo.dtype == np.float32
        agree = float((lt.argmax(1) == lo.argmax(1)).mean())
        assert agree >= 0.999, f"{t.name}: {agree:.2%} of labels agree"
        np.testing.assert_allclose(lo, lt, atol=1e-3)
    # the batch axis is dynamic: one image and an odd batch both run
    assert of.models[1].predict_logits(x[:1]).shape == (1, 10)
    assert of.models[1].predict_logits(x[:7]).shape == (7, 10)


def test_sizes_match_the_torch_members(exported: tuple[Path, Path]) -> None:
    torch_yaml, onnx_yaml = exported
    tf, of = load_family(config=torch_yaml), load_family(config=onnx_yaml)
    for t, o in zip(tf.models, of.models, strict=True):
        assert isinstance(o, OnnxModel)
        assert o.macs_source == "export"
        assert o.info == t.info
        # the estimate from Gemm shapes alone agrees with the count made at export
        assert estimate_macs(o._proto) == t.info.macs


def test_graph_estimate_without_export_metadata(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    _, onnx_yaml = exported
    proto = onnx.load_model(str(onnx_yaml.parent / "mlp.onnx"))
    del proto.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save_model(proto, str(plain))
    model = OnnxModel(plain)
    assert model.name == "plain" and model.macs_source == "graph"
    assert model.info.macs == 784 * 256 + 256 * 10
    assert model.info.params == 784 * 256 + 256 + 256 * 10 + 10


def test_fingerprint_follows_the_file_bytes(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, onnx_yaml = exported
    a = OnnxModel(onnx_yaml.parent / "linear.onnx", name="m")
    proto = onnx.load_model(str(onnx_yaml.parent / "linear.onnx"))
    onnx.helper.set_model_props(proto, {MACS_KEY: "1"})
    other = tmp_path / "linear.onnx"
    onnx.save_model(proto, str(other))
    assert OnnxModel(other, name="m").fingerprint != a.fingerprint


def test_load_errors_are_one_line(tmp_path: Path, exported: tuple[Path, Path]) -> None:
    with pytest.raises(HybridServeError, match="ONNX file not found"):
        OnnxModel(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(HybridServeError, match="junk") as info:
        OnnxModel(junk)
    assert "\n" not in str(info.value)
    with pytest.raises(HybridServeError, match="device must be cpu, cuda or cuda:N"):
        OnnxModel(exported[1].parent / "linear.onnx", device="tpu")


def test_cuda_without_the_cuda_provider_is_a_clear_error(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(HybridServeError, match=r"CUDAExecutionProvider.*onnxruntime-gpu"):
        OnnxModel(exported[1].parent / "linear.onnx", device="cuda")


def _write(tmp_path: Path, model: dict[str, object]) -> Path:
    doc = {
        "family": "f",
        "input_shape": [4],
        "data": {"val": "v.npz", "test": "t.npz"},
        "models": [model, {"name": "b", "loader": "onnx", "path": "b.onnx"}],
    }
    path = tmp_path / "family.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"name": "a", "loader": "onnx"}, r"models\.0: .*path: required by loader 'onnx'"),
        (
            {"name": "a", "loader": "onnx", "path": "a.onnx", "weights": "a.safetensors"},
            r"models\.0: .*weights: loader 'onnx' reads its weights from 'path'",
        ),
        (
            {"name": "a", "loader": "pkg:fn", "path": "a.onnx"},
            r"models\.0: .*path: only built-in loaders",
        ),
        (
            {"name": "a", "loader": "onnx", "path": "a.onnx", "max_length": 8},
            r"models\.0: .*max_length: only loader 'hf-text-classifier'",
        ),
        ({"name": "a", "loader": "onnxx", "path": "a.onnx"}, r"models\.0\.loader: .*onnx, hf-"),
        (
            {"name": "a", "loader": "hf-image-classifier", "path": "d", "preprocessing": {}},
            r"models\.0: .*preprocessing: loader 'hf-image-classifier'",
        ),
        (
            {"name": "a", "loader": "hf-text-classifier", "path": "d"},
            r"models\.0\.loader: 'hf-text-classifier' needs 'input_kind: text'",
        ),
    ],
)
def test_yaml_errors_name_the_field(tmp_path: Path, model: dict[str, object], message: str) -> None:
    with pytest.raises(HybridServeError, match=message) as info:
        read_config(_write(tmp_path, model))
    assert "\n" not in str(info.value)


def test_existing_torch_form_still_validates() -> None:
    cfg = read_config(bundled_config_path("fashion-mnist"))
    assert all(m.path is None and m.weights for m in cfg.models)


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from hybridserve.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_export_cli(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch_yaml, _ = exported
    code, out, err = _run_cli(
        ["export", "onnx", "--config", str(torch_yaml), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 0, err
    assert str(tmp_path / "o" / "family.yaml") in out
    assert read_config(tmp_path / "o" / "family.yaml").family == "fashion-mnist-onnx"
    assert sorted(p.name for p in (tmp_path / "o").glob("*.onnx")) == ["linear.onnx", "mlp.onnx"]
    code, _, err = _run_cli(
        ["export", "onnx", "--family", "fashion-mnist", "--config", str(torch_yaml), "--out", "x"],
        capsys,
    )
    assert code == 2 and "either --family or --config" in err
