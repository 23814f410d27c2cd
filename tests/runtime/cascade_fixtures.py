"""Tiny cascades for runtime and server tests, and an independent numpy simulation of routing.

Imported as ``runtime.cascade_fixtures`` (the tests folder is on ``sys.path``, see conftest).
The simulation re-implements temperature scaling, max-prob confidence, thresholds and skips
with plain numpy, so a test comparing it to the engine checks the runtime, not the policy
against itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from hybridserve.models import CallableModel, Family, Model, Preprocessing, TorchModel
from hybridserve.planning import Plan
from hybridserve.tuning import CascadePolicy, SkipRule

SHAPE = (4, 4)
LABELS = ("ant", "bee", "cat")
FAMILY = "tiny"
NAMES = ("small", "medium", "giant")
#: Temperature of each chain model's calibrator.
TEMPERATURES = (1.5, 0.8, 1.0)


def tiny_models(seed: int = 0) -> list[TorchModel]:
    """Three random MLPs on 4×4 images with pixels 0..255 (the giant is a 3-layer Sequential)."""
    torch.manual_seed(seed)
    out = []
    for name, hidden in zip(NAMES, (4, 8, 16), strict=True):
        module = nn.Sequential(
            nn.Flatten(), nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, len(LABELS))
        )
        prep = Preprocessing(scale=4 / 255, mean=0.5, std=0.5)
        out.append(TorchModel(name, module, prep, input_shape=SHAPE))
    return out


def make_family(models: list[Model] | None = None) -> Family:
    return Family(
        name=FAMILY,
        models=tuple(models or tiny_models()),
        label_names=LABELS,
        input_shape=SHAPE,
        input_range=(0.0, 255.0),
    )


def make_inputs(n: int, seed: int = 1) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def temperature(t: float) -> dict[str, Any]:
    return {"kind": "temperature", "state": {"n_classes": len(LABELS), "temperature": t}}


def _softmax(z: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def make_policy(family: Family, x: npt.NDArray[Any]) -> CascadePolicy:
    """Thresholds at each model's median confidence on ``x``; a skip small→giant below its 25 %.

    So on ``x`` every path occurs: small; small→medium; small→medium→giant; small→giant.
    """
    conf = [
        _softmax(m.predict_logits(x) / t).max(axis=1)
        for m, t in zip(family.models, TEMPERATURES, strict=True)
    ]
    thresholds = (float(np.median(conf[0])), float(np.median(conf[1])))
    skip = SkipRule(NAMES[0], float(np.quantile(conf[0], 0.25)), NAMES[2])
    return CascadePolicy(
        family=FAMILY,
        chain=NAMES,
        thresholds=thresholds,
        calibrators=tuple(temperature(t) for t in TEMPERATURES),
        skips=(skip,),
        mode="manual",
    )


@dataclass(frozen=True)
class Simulated:
    labels: npt.NDArray[np.int64]
    model: list[str]
    path: list[tuple[str, ...]]
    confidence: npt.NDArray[np.float64]


def tiny_median_policy(family: Family, x: npt.NDArray[Any]) -> CascadePolicy:
    """The tiny family's ``small → big`` cascade (``small`` calibrated by T=4): ``small``
    answers the more confident half of ``x``."""
    small = family.model("small").predict_logits(x)
    conf = _softmax(small / 4.0).max(axis=1)
    return CascadePolicy(
        family="tiny",
        chain=("small", "big"),
        thresholds=(float(np.median(conf)),),
        calibrators=(temperature(4.0), temperature(1.0)),
    )


def simulate(policy: CascadePolicy, family: Family, x: npt.NDArray[Any]) -> Simulated:
    """Route ``x`` through ``policy`` with plain numpy (temperature calibrators, max-prob)."""
    n = len(x)
    temps = [float(c["state"].get("temperature", 1.0)) for c in policy.calibrators]
    probs = [
        _softmax(family.model(name).predict_logits(x) / t)
        for name, t in zip(policy.chain, temps, strict=True)
    ]
    labels = np.zeros(n, dtype=np.int64)
    conf_out = np.zeros(n)
    model: list[str] = []
    paths: list[tuple[str, ...]] = []
    skips = {s.at: s for s in policy.skips}
    for r in range(n):
        i, path = 0, []
        while True:
            name = policy.chain[i]
            path.append(name)
            c = probs[i][r].max()
            last = i == len(policy.chain) - 1
            if last or c >= policy.thresholds[i]:
                labels[r] = int(probs[i][r].argmax())
                conf_out[r] = c
                model.append(name)
                break
            rule = skips.get(name)
            i = policy.chain.index(rule.to) if rule and c < rule.below else i + 1
        paths.append(tuple(path))
    return Simulated(labels, model, paths, conf_out)


def one_replica_plan(
    chain: tuple[str, ...] = NAMES, batch_size: int = 8, max_wait_ms: float = 2.0
) -> Plan:
    return Plan.default(FAMILY, chain, batch_size=batch_size, max_wait_ms=max_wait_ms)


class Gate:
    """A model wrapper that blocks every batch until ``open()`` (to fill queues on purpose)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.calls = 0

    def open(self) -> None:
        self.event.set()

    def wrap(self, model: Model) -> CallableModel:
        def fn(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
            self.calls += 1
            if not self.event.wait(timeout=30):
                raise TimeoutError("gate never opened")
            return model.predict_logits(x)

        return CallableModel(model.name, fn)


#: Pixel value that makes ``failing`` raise (any input holding it fails its whole batch).
POISON = 13


def failing(model: Model, calls: list[int] | None = None) -> CallableModel:
    """``model``, except that a batch holding a pixel equal to ``POISON`` raises."""

    def fn(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        if calls is not None:
            calls.append(len(x))
        if (np.asarray(x) == POISON).any():
            raise RuntimeError("poisoned batch")
        return model.predict_logits(x)

    return CallableModel(model.name, fn)


def counting(model: Model, calls: list[int]) -> CallableModel:
    """``model``, noting each batch's size in ``calls``."""

    def fn(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        calls.append(len(x))
        return model.predict_logits(x)

    return CallableModel(model.name, fn)


def clean_inputs(n: int, seed: int = 1) -> npt.NDArray[np.uint8]:
    """Inputs without the poison value."""
    x = make_inputs(n, seed)
    x[x == POISON] = POISON + 1
    return x


Wrapper = Callable[[Model], Model]
