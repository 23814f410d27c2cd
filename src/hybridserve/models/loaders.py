"""How a family YAML's ``loader`` becomes a ``Model``: torch ``module:function`` or a built-in.

Built-in loaders (each reads ``path``, relative to the YAML):

- ``onnx``: an ``.onnx`` file run by ONNX Runtime (``models.onnx_model``; the ``onnx`` extra);
- ``hf-image-classifier``: ``AutoModelForImageClassification`` + ``AutoImageProcessor`` from a
  local directory (``models.hf_classifier``; the ``gen`` extra);
- ``hf-text-classifier``: ``AutoModelForSequenceClassification`` + ``AutoTokenizer`` from a
  local directory, for families with ``input_kind: text``.

The optional dependencies are imported only when a family uses them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model
from hybridserve.models.torch_model import TorchModel, load_weights

if TYPE_CHECKING:
    from hybridserve.models.family import ModelEntry

ONNX = "onnx"
HF_IMAGE = "hf-image-classifier"
HF_TEXT = "hf-text-classifier"
#: Loaders that read ``path`` instead of importing ``module:function``.
LOADERS = (ONNX, HF_IMAGE, HF_TEXT)
#: Loaders whose own processor or tokenizer turns raw inputs into tensors.
_OWN_PREPROCESSING = (HF_IMAGE, HF_TEXT)


def loader_field_problem(
    loader: str, given: set[str], path: str | None, max_length: int | None
) -> str | None:
    """Why a model entry's fields do not fit its ``loader`` (None when they do); names a field."""
    if loader in LOADERS and "torchscript" in given:
        return f"torchscript: only torch loaders (module:function) take it, not {loader!r}"
    if loader not in LOADERS:
        if "path" in given:
            return f"path: only built-in loaders ({', '.join(LOADERS)}) read it; use 'weights'"
    else:
        if not path:
            return f"path: required by loader {loader!r}"
        if "weights" in given:
            return f"weights: loader {loader!r} reads its weights from 'path'"
        if loader in _OWN_PREPROCESSING and "preprocessing" in given:
            return f"preprocessing: loader {loader!r} preprocesses with the model's own processor"
    if max_length is not None and loader != HF_TEXT:
        return f"max_length: only loader {HF_TEXT!r} takes it"
    return None


def import_loader(spec: str) -> Callable[[], nn.Module]:
    """The function a ``module:function`` loader names."""
    module_name, func_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise HybridServeError(f"loader {spec!r}: cannot import {module_name!r} ({err})") from err
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise HybridServeError(f"loader {spec!r}: {module_name!r} has no function {func_name!r}")
    return fn  # type: ignore[no-any-return]


def _torch_model(
    entry: ModelEntry, base: Path, device: str, input_shape: tuple[int, ...]
) -> TorchModel:
    module = import_loader(entry.loader)()
    if not isinstance(module, nn.Module):
        raise HybridServeError(
            f"loader {entry.loader!r} returned {type(module).__name__}, not an nn.Module"
        )
    sha = load_weights(module, base / entry.weights) if entry.weights else None
    return TorchModel(
        entry.name,
        module,
        entry.preprocessing,
        device=device,
        input_shape=input_shape,
        weights_sha256=sha,
        torchscript=entry.torchscript,
    )


def build_model(entry: ModelEntry, base: Path, device: str, input_shape: tuple[int, ...]) -> Model:
    """The ``Model`` one validated entry declares, loaded onto ``device``."""
    if entry.loader not in LOADERS:
        return _torch_model(entry, base, device, input_shape)
    assert entry.path is not None  # the entry's validator requires it for built-in loaders
    path = base / entry.path
    if entry.loader == ONNX:
        from hybridserve.models.onnx_model import OnnxModel

        return OnnxModel(path, name=entry.name, preprocessing=entry.preprocessing, device=device)
    from hybridserve.models.hf_classifier import HFImageClassifier, HFTextClassifier

    if entry.loader == HF_IMAGE:
        return HFImageClassifier(path, name=entry.name, device=device)
    return HFTextClassifier(path, name=entry.name, device=device, max_length=entry.max_length)
