"""Threshold tuning: the cascade policy, its simulator, and the AP/EO searchers."""

from hybridserve.tuning.confidence import Confidence, get_confidence
from hybridserve.tuning.costs import CostTable, ModelCost, costs_from_profile, quick_costs
from hybridserve.tuning.policy import CascadePolicy, SkipRule, identity_calibrator
from hybridserve.tuning.search import APSearch, EOSearch, ThresholdSearch
from hybridserve.tuning.simulate import SimulationResult, simulate, simulate_confidences

__all__ = [
    "APSearch",
    "CascadePolicy",
    "Confidence",
    "CostTable",
    "EOSearch",
    "ModelCost",
    "SimulationResult",
    "SkipRule",
    "ThresholdSearch",
    "costs_from_profile",
    "get_confidence",
    "identity_calibrator",
    "quick_costs",
    "simulate",
    "simulate_confidences",
]
