"""The systems a bench compares, each a policy served by the same runtime on the same cores.

``giant-only`` and every single model are one-model chains; ``cascade-ap``, ``cascade-eo`` and
``cascade-ap-noskip`` are the tuned policies; ``cascade-ap-maxprob`` is the AP policy tuned with
the max-prob rule (``policy-ap-maxprob.json``, which ``tune`` writes beside the chosen one), so a
learned rule is measured against it in the same run; ``oracle`` is computed from test logits,
or a generative family's cached test generations (each request answered by the cheapest model
that is right, else the giant), and bounds any router.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridserve.errors import HybridServeError
from hybridserve.models.logits import LogitSet
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.workdir import Workdir

CASCADES = {
    "cascade-ap": "ap",
    "cascade-ap-maxprob": "ap-maxprob",
    "cascade-eo": "eo",
    "cascade-ap-noskip": "ap-noskip",
}


def single_model_policy(
    template: CascadePolicy, model: str, calibrator: Mapping[str, Any]
) -> CascadePolicy:
    """A chain of one model: every request is answered by ``model``.

    Its rule is a fixed score whatever the template's (max-prob for classifiers, the ``min``
    aggregate for a generative family): a lone model's answer always stands, and a learned
    rule's state is fitted to the template's chain, not to this one. A generative model keeps
    its calibrator, whose token temperature its position decodes with.
    """
    generative = template.task == "generate"
    return CascadePolicy(
        family=template.family,
        chain=(model,),
        thresholds=(),
        calibrators=(dict(calibrator),),
        confidence="min" if generative else "maxprob",
        mode="manual",
        cost_source=template.cost_source,
        task=template.task,
    )


def system_policies(
    workdir: Workdir, family_names: tuple[str, ...], calibrators: Mapping[str, Mapping[str, Any]]
) -> dict[str, CascadePolicy]:
    """Policies of every served system, giant-only first, cascades last."""
    ap_path = workdir.policy("ap")
    if not ap_path.is_file():
        raise HybridServeError(f"{ap_path} not found: run `hybridserve tune --mode ap` first")
    template = CascadePolicy.load(ap_path)
    # the same family as the AP policy: a stale file of another family is refused, not served
    cascades = {
        name: CascadePolicy.load(workdir.policy(mode), family=template.family)
        for name, mode in CASCADES.items()
        if workdir.policy(mode).is_file()
    }
    giant = family_names[-1]
    systems = {"giant-only": single_model_policy(template, giant, calibrators[giant])}
    for name in family_names[:-1]:
        systems[name] = single_model_policy(template, name, calibrators[name])
    systems.update(cascades)
    return systems


def oracle(
    logits: LogitSet, energy_j: Mapping[str, float]
) -> tuple[float, float, dict[str, float]]:
    """Accuracy, energy per request and answer shares of the oracle router on ``logits``."""
    names = logits.names
    correct = np.stack([logits.logits[n].argmax(1) == logits.labels for n in names])  # M×N
    return oracle_of(correct, names, energy_j)


def oracle_of(
    correct: npt.NDArray[np.bool_], names: tuple[str, ...], energy_j: Mapping[str, float]
) -> tuple[float, float, dict[str, float]]:
    """The oracle on an M×N matrix of which model (rows, in ``names`` order) got which request
    right: each request goes to the cheapest model that is right, else to the giant (last)."""
    costs = np.array([energy_j[n] for n in names])
    order = np.argsort(costs, kind="stable")
    chosen: npt.NDArray[np.int64] = np.full(correct.shape[1], len(names) - 1, dtype=np.int64)
    undecided = np.ones(correct.shape[1], dtype=bool)
    for m in order:
        take = undecided & correct[m]
        chosen[take] = m
        undecided &= ~take
    accuracy = float(correct.any(axis=0).mean())
    energy = float(costs[chosen].mean())
    shares = {n: float((chosen == i).mean()) for i, n in enumerate(names)}
    return accuracy, energy, shares
