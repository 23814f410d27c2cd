"""A torch module as a frozen, inference-optimised TorchScript trace (``torchscript: true``).

``torch.jit.optimize_for_inference`` freezes the traced graph (weights become constants), folds
batch norms into the convolutions before them, fuses convolution + activation and, on the CPU,
runs convolutions through oneDNN with pre-packed weights. A traced call also runs the whole graph
in C++ with the GIL released, instead of one Python call per layer. The outputs equal the eager
module's up to float rounding (reordered sums); docs/measurements.md has the speed-up measured
on the bundled family.

Tracing records the operations run on an example batch, so it is only right for modules whose
operations do not depend on the input's values (plain feed-forward networks, as ``nn.Sequential``
stacks are). That is why it is opt-in per model in the family YAML.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from hybridserve.errors import HybridServeError

log = logging.getLogger(__name__)


def optimized_trace(
    name: str, module: nn.Module, example: torch.Tensor, probe: torch.Tensor
) -> nn.Module | torch.jit.ScriptModule:
    """``module`` (in eval mode) traced on ``example`` and optimised for inference.

    The example should hold at least 2 inputs, so that no size-1 batch dimension is baked into
    the graph. The trace is then checked against the module on ``example``, ``probe`` and
    ``-probe`` (give the probe another batch size and values unlike the example's). Raises
    ``HybridServeError`` naming the model when the module cannot be traced or its trace computes
    something else; a torch without TorchScript (it is deprecated) gets the eager module back,
    with a warning.
    """
    module = module.eval()
    if not hasattr(torch.jit, "optimize_for_inference"):  # a torch without TorchScript
        log.warning("model %s: this torch has no TorchScript; serving the eager module", name)
        return module
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer warns about Python values it had to freeze (the checks below catch a
            # trace that froze the wrong ones); torch marks TorchScript deprecated in favour
            # of torch.compile, which needs a C++ compiler at run time
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
            optimized = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            pairs = [(module(x), optimized(x)) for x in (example, probe, -probe)]
    except Exception as err:  # the tracer raises many types (RuntimeError, TypeError, ...)
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise HybridServeError(f"model {name!r}: torchscript: cannot trace it ({first})") from err
    for want, got in pairs:
        if not isinstance(got, torch.Tensor) or not isinstance(want, torch.Tensor):
            raise HybridServeError(f"model {name!r}: torchscript: the module must return a tensor")
        scale = max(float(want.abs().max()) if want.numel() else 0.0, 1.0)
        if got.shape != want.shape or not torch.allclose(
            got.float(), want.float(), rtol=1e-3, atol=1e-4 * scale
        ):
            raise HybridServeError(
                f"model {name!r}: torchscript: the trace does not compute what the module does "
                "(control flow on input values?); set torchscript: false"
            )
    return optimized
