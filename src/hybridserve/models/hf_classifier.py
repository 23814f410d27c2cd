"""Adapters for Hugging Face image and text classifiers saved in local directories.

``HFImageClassifier``: ``AutoModelForImageClassification`` with its ``AutoImageProcessor``; the
family's raw inputs (H×W×C or H×W pixel arrays, as the API takes them) go through the processor
(resize, rescale, normalise) and the model. ``HFTextClassifier``:
``AutoModelForSequenceClassification`` with its ``AutoTokenizer``; inputs are a 1-D array of
strings. Both load with ``local_files_only=True``: a missing or incomplete directory is a
one-line ``HybridServeError``, never a download. Needs ``transformers`` (the ``gen`` extra).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model, ModelInfo
from hybridserve.models.macs import count_macs_of_call

try:
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise HybridServeError(
        "Hugging Face classifiers need transformers: pip install 'hybridserve[gen]'"
    ) from err

#: A saved tokenizer writes at least one of these.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")
#: Files whose bytes identify a saved model (weights, config, processor, tokenizer).
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _directory_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in _FINGERPRINT_SUFFIXES:
            digest.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


class _HFClassifier(Model):
    """Shared loading, device, size and fingerprint of the two adapters."""

    #: which file a subclass's processor needs, and what to call it in errors
    _processor_files: tuple[str, ...] = ()
    _processor_kind = "processor"

    def __init__(self, path: str | Path, *, name: str | None, device: str) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        if not self.path.is_dir():
            raise HybridServeError(f"model {self.name!r}: directory not found: {self.path}")
        if not (self.path / "config.json").is_file():
            raise HybridServeError(f"model {self.name!r}: no config.json in {self.path}")
        if not any((self.path / f).is_file() for f in self._processor_files):
            raise HybridServeError(
                f"model {self.name!r}: no {self._processor_kind} in {self.path} "
                f"(none of {', '.join(self._processor_files)})"
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise HybridServeError(f"model {self.name!r}: device {device!r} but CUDA is missing")
        self._device = device
        self._info: ModelInfo | None = None
        self._digest = _directory_digest(self.path)

    def _load(self, loader: Any, what: str) -> Any:
        try:
            return loader.from_pretrained(
                str(self.path), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise HybridServeError(
                f"model {self.name!r}: cannot load {what} from {self.path} ({_one_line(err)})"
            ) from err

    def _load_model(self, loader: Any, what: str) -> Any:
        # Any: transformers' own annotations of `.to` and friends trip mypy --strict.
        model = cast(Any, self._load(loader, what))
        model.to(self._device).eval()
        return model

    @property
    def device(self) -> str:
        return self._device

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{self._digest}"

    def _size(self, model: torch.nn.Module, probe: Any) -> ModelInfo:
        params = sum(int(p.numel()) for p in model.parameters())
        nbytes = sum(int(p.numel()) * p.element_size() for p in model.parameters())
        nbytes += sum(int(b.numel()) * b.element_size() for b in model.buffers())
        macs = count_macs_of_call(model, lambda: model(**probe))
        return ModelInfo(params=params, macs=macs, weight_bytes=nbytes)

    def _logits(self, model: Any, inputs: Any) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            out = model(**{k: v.to(self._device) for k, v in inputs.items()}).logits
        return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)


class HFImageClassifier(_HFClassifier):
    """An image classifier and its image processor from the local directory ``path``."""

    _processor_files = ("preprocessor_config.json",)
    _processor_kind = "image processor (preprocessor_config.json)"

    def __init__(self, path: str | Path, *, name: str | None = None, device: str = "cpu") -> None:
        super().__init__(path, name=name, device=device)
        self.processor: Any = self._load(AutoImageProcessor, "an image processor")
        self.model: Any = self._load_model(AutoModelForImageClassification, "an image classifier")
        self._channels = int(getattr(self.model.config, "num_channels", 3))

    def _images(self, batch: npt.NDArray[np.generic]) -> list[npt.NDArray[np.float32]]:
        """Per-image H×W×C float arrays (gray H×W images repeated to the model's channels)."""
        arr = np.asarray(batch, dtype=np.float32)
        if arr.ndim == 3:  # N×H×W: gray
            arr = np.repeat(arr[..., None], self._channels, axis=-1)
        if arr.ndim != 4:
            raise HybridServeError(
                f"model {self.name!r}: expected images N×H×W×C or N×H×W, got shape {arr.shape}"
            )
        return list(arr)

    def _process(self, batch: npt.NDArray[np.generic]) -> Any:
        # channels last is what the API's images are; the processor guesses wrong on tiny ones
        return self.processor(
            images=self._images(batch), return_tensors="pt", input_data_format="channels_last"
        )

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            size = self.processor.size
            height = int(size.get("height") or size.get("shortest_edge") or 224)
            width = int(size.get("width") or size.get("shortest_edge") or 224)
            probe = self._process(np.zeros((1, height, width, self._channels), np.float32))
            self._info = self._size(self.model, probe)
        return self._info

    def predict_logits(self, batch: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        return self._logits(self.model, self._process(batch))


class HFTextClassifier(_HFClassifier):
    """A sequence classifier and its tokenizer from the local directory ``path``.

    Inputs are a 1-D array of strings; texts longer than ``max_length`` tokens are truncated.
    Numbers (the cost probes send zeros) are classified as their decimal text.
    """

    _processor_files = _TOKENIZER_FILES
    _processor_kind = "tokenizer"

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        device: str = "cpu",
        max_length: int | None = None,
    ) -> None:
        super().__init__(path, name=name, device=device)
        self.tokenizer: Any = self._load(AutoTokenizer, "a tokenizer")
        self.model: Any = self._load_model(AutoModelForSequenceClassification, "a text classifier")
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise HybridServeError(
                    f"model {self.name!r}: its tokenizer has no pad or end-of-text token, so "
                    "texts of different lengths cannot share a batch"
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        positions = getattr(self.model.config, "max_position_embeddings", None)
        limits = [
            n
            for n in (max_length, positions, self.tokenizer.model_max_length)
            if isinstance(n, int) and n > 0
        ]
        # without a limit in the YAML, long texts are cut at 512 tokens (BERT's own limit)
        self.max_length = min(limits) if max_length is not None else min([*limits, 512])

    @staticmethod
    def texts(batch: npt.NDArray[np.generic] | list[str]) -> list[str]:
        """The batch as a list of strings (bytes decoded as UTF-8, numbers formatted)."""
        arr = np.asarray(batch)
        if arr.ndim != 1:
            raise HybridServeError(f"text inputs must be a 1-D array of strings, got {arr.shape}")
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.tolist()]

    def _encode(self, texts: list[str], padding: bool | str = True) -> Any:
        return self.tokenizer(
            texts,
            padding=padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )

    @property
    def info(self) -> ModelInfo:
        """Sizes; MACs are those of one text of ``max_length`` tokens (an upper bound)."""
        if self._info is None:
            probe = self._encode([""], padding="max_length")
            self._info = self._size(self.model, probe)
        return self._info

    def predict_logits(self, batch: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        return self._logits(self.model, self._encode(self.texts(batch)))
