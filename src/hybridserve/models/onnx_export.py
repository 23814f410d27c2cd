"""``hybridserve export onnx``: write a torch family's members as ONNX files plus their YAML.

Uses torch's TorchScript-based exporter (``dynamo=False``): it needs nothing beyond torch, while
the newer ``torch.export`` exporter also needs ``onnxscript``. The batch axis is dynamic, the
module is exported in eval mode (batch norms folded into their convolutions), and the MACs that
``models.macs`` counts on the torch module are stored in the file's metadata, so the ONNX
family reports the same MACs. The written ``family.yaml`` keeps the source's labels, input
shape, range, preprocessing and data entries (``builtin`` stays ``builtin``; ``.npz`` paths
are rewritten relative to the output folder).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from hybridserve.errors import HybridServeError
from hybridserve.models.family import FamilyConfig, build_family, family_path, read_config
from hybridserve.models.macs import count_macs
from hybridserve.models.torch_model import TorchModel

#: Opset of the written files; ONNX Runtime 1.16+ runs it.
OPSET = 17


def export_module(module: torch.nn.Module, input_shape: tuple[int, ...], macs: int) -> bytes:
    """ONNX bytes of ``module`` for inputs of ``input_shape`` (batch excluded), batch dynamic."""
    import onnx

    module = module.eval().to("cpu")
    dummy = torch.zeros((2, *input_shape))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        target = Path(tmp) / "model.onnx"
        # the TorchScript exporter is deprecated in favour of one that needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (dummy,),
            target,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
        proto = onnx.load_model(str(target))
    from hybridserve.models.onnx_model import MACS_KEY

    onnx.helper.set_model_props(proto, {MACS_KEY: str(int(macs))})
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def _data_entry(spec: str, source_dir: Path, out: Path) -> str:
    if spec == "builtin":
        return spec
    return os.path.relpath((source_dir / spec).resolve(), out.resolve())


def export_family(
    out: Path,
    family: str = "fashion-mnist",
    config: Path | None = None,
    name: str | None = None,
) -> Path:
    """Export every member of a torch family to ``out/<member>.onnx``; return the new YAML.

    The ONNX family is called ``name`` (default ``<family>-onnx``): policies record the family
    they were tuned for, and the ONNX one is served and tuned on its own.
    """
    source = family_path(family, config)
    cfg: FamilyConfig = read_config(source)
    fam = build_family(cfg, source.parent, "cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for entry, model in zip(cfg.models, fam.models, strict=True):
        if not isinstance(model, TorchModel):
            raise HybridServeError(
                f"{source}: model {entry.name!r} (loader {entry.loader!r}) is not a torch "
                "module; only torch members can be exported to ONNX"
            )
        shape = tuple(model.preprocessing.shape or cfg.input_shape)
        macs = count_macs(model.module, shape)
        (out / f"{entry.name}.onnx").write_bytes(export_module(model.module, shape, macs))
        pre = entry.preprocessing.model_dump(exclude_defaults=True, exclude={"channels_last"})
        item: dict[str, Any] = {"name": entry.name, "loader": "onnx", "path": f"{entry.name}.onnx"}
        if pre:
            item["preprocessing"] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in pre.items()
            }
        entries.append(item)
    doc: dict[str, Any] = {"family": name or f"{cfg.family}-onnx"}
    if cfg.labels:
        doc["labels"] = list(cfg.labels)
    doc["input_shape"] = list(cfg.input_shape)
    if cfg.input_range is not None:
        doc["input_range"] = list(cfg.input_range)
    doc["data"] = {
        "val": _data_entry(cfg.data.val, source.parent, out),
        "test": _data_entry(cfg.data.test, source.parent, out),
    }
    doc["models"] = entries
    path = out / "family.yaml"
    header = (
        f"# Exported from {cfg.family} by `hybridserve export onnx`; each model is an ONNX file.\n"
    )
    path.write_text(
        header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None)
    )
    return path
