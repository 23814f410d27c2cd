"""Adapter for a classifier saved as an ONNX file, run with ONNX Runtime.

The file takes the preprocessed tensor (the family YAML's ``preprocessing`` applies first, as
for a torch module) with a dynamic batch dimension, and returns N×K logits. Size figures come
from the graph itself: parameters and weight bytes from its initializers; MACs from the
``hybridserve.macs`` metadata entry that ``hybridserve export onnx`` writes (counted on the torch
module by ``models.macs``), else estimated from the shapes of its Gemm, MatMul and Conv nodes.
Needs the ``onnx`` extra (``onnxruntime``, ``onnx``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.models.base import Model, ModelInfo
from hybridserve.models.preprocessing import Preprocessing

try:
    import onnx
    import onnxruntime as ort
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise HybridServeError(
        "ONNX models need the 'onnx' extra: pip install 'hybridserve[onnx]'"
    ) from err

#: Metadata key holding MACs per input, counted on the source torch module at export.
MACS_KEY = "hybridserve.macs"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def providers_for(device: str, name: str) -> list[str]:
    """ONNX Runtime execution providers for a torch-style ``device`` string."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise HybridServeError(
                f"model {name!r}: device {device!r} needs onnxruntime's CUDAExecutionProvider, "
                f"but this onnxruntime has only {available} (pip install onnxruntime-gpu)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise HybridServeError(f"model {name!r}: device must be cpu, cuda or cuda:N, got {device!r}")


def _initializer_sizes(graph: Any) -> tuple[int, int]:
    """Floating-point parameters and bytes of all initializers (int shape constants: bytes only)."""
    params = nbytes = 0
    for init in graph.initializer:
        numel = math.prod(int(d) for d in init.dims)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        nbytes += numel * dtype.itemsize
        if dtype.kind == "f":
            params += numel
    return params, nbytes


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Per-input shape (batch dimension dropped) of every value whose shape inference knows."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    out: dict[str, tuple[int, ...]] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 1 and all(d.HasField("dim_value") for d in dims[1:]):
            out[value.name] = tuple(int(d.dim_value) for d in dims[1:])
    for init in graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)  # weights: keep every dimension
    return out


def estimate_macs(model: Any) -> int:
    """MACs per input from Gemm, MatMul and Conv nodes (element-wise ops left out, as in
    ``models.macs``); a node whose shapes inference cannot tell is skipped."""
    shapes = _shapes(model)
    weights = {init.name for init in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type == "Conv" and node.input[1] in shapes:
            kernel = shapes[node.input[1]]  # (C_out, C_in / groups, k...)
            total += math.prod(out) * math.prod(kernel[1:])
        elif node.op_type == "Gemm" and node.input[1] in shapes:
            w = shapes[node.input[1]]
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            total += math.prod(out) * (w[1] if trans_b else w[0])
        elif node.op_type == "MatMul" and node.input[1] in weights:
            total += math.prod(out) * shapes[node.input[1]][-2]
    return int(total)


class OnnxModel(Model):
    """An ONNX classifier run by an ONNX Runtime session on CPU or CUDA."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        preprocessing: Preprocessing | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        if not self.path.is_file():
            raise HybridServeError(f"model {self.name!r}: ONNX file not found: {self.path}")
        # channels_last is a torch memory layout; ONNX Runtime takes plain NCHW arrays
        pre = preprocessing or Preprocessing()
        self.preprocessing = pre.model_copy(update={"channels_last": False})
        self._device = device
        raw = self.path.read_bytes()
        self._sha256 = hashlib.sha256(raw).hexdigest()
        try:
            self._proto = onnx.load_model_from_string(raw)
        except Exception as err:  # protobuf raises its own DecodeError
            raise HybridServeError(
                f"model {self.name!r}: {self.path} is not a readable ONNX file ({_one_line(err)})"
            ) from err
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = max(int(threads), 1)
        try:
            self.session = ort.InferenceSession(
                raw, sess_options=options, providers=providers_for(device, self.name)
            )
        except HybridServeError:
            raise
        except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph types
            raise HybridServeError(
                f"model {self.name!r}: ONNX Runtime cannot load {self.path} ({_one_line(err)})"
            ) from err
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise HybridServeError(
                f"model {self.name!r}: {self.path} takes {len(inputs)} inputs {names}; "
                "a family member takes exactly one tensor"
            )
        self._input = inputs[0].name
        self._info: ModelInfo | None = None

    @property
    def device(self) -> str:
        return self._device

    @property
    def macs_source(self) -> str:
        """``export`` (counted on the torch module) or ``graph`` (estimated from node shapes)."""
        return "export" if self._metadata_macs() is not None else "graph"

    def _metadata_macs(self) -> int | None:
        for prop in self._proto.metadata_props:
            if prop.key == MACS_KEY and prop.value.isdigit():
                return int(prop.value)
        return None

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            params, nbytes = _initializer_sizes(self._proto.graph)
            macs = self._metadata_macs()
            if macs is None:
                macs = estimate_macs(self._proto)
            self._info = ModelInfo(params=params, macs=macs, weight_bytes=nbytes)
        return self._info

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{self._sha256}"

    def predict_logits(self, batch: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        x = self.preprocessing.to_tensor(batch, "cpu").contiguous().numpy()
        try:
            (logits, *_) = self.session.run(None, {self._input: x})
        except Exception as err:  # onnxruntime's own error types
            raise HybridServeError(
                f"model {self.name!r}: ONNX Runtime failed on a batch of shape {x.shape} "
                f"({_one_line(err)})"
            ) from err
        out = np.asarray(logits, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise HybridServeError(
                f"model {self.name!r}: {self.path} returned shape {out.shape}; "
                f"expected ({len(batch)}, num_classes)"
            )
        return np.ascontiguousarray(out)
