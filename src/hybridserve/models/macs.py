"""Count multiply-accumulates per input of a ``torch.nn.Module`` with forward hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(int(p.numel()) for p in module.parameters())


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass of one input of ``input_shape`` (no batch dimension).

    Counts convolutions and linear layers, which dominate; pooling, norms and activations are
    a few percent at most and are left out.
    """
    return count_macs_of_call(module, lambda: module(torch.zeros((1, *input_shape))))


def count_macs_of_call(module: nn.Module, call: Callable[[], object]) -> int:
    """MACs of the Conv2d and Linear layers of ``module`` during ``call()`` (one forward pass,
    e.g. of a tokenised text or a processed image), in eval mode under ``inference_mode``."""
    total = 0

    def hook(layer: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kernel = layer.in_channels // layer.groups
            for k in layer.kernel_size:
                kernel *= int(k)
            total += int(output.numel()) * kernel
        elif isinstance(layer, nn.Linear):
            total += int(output.numel()) * layer.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            call()
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return total
