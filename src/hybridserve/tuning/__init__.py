"""Threshold tuning: the cascade policy, its simulator, and the AP/EO searchers."""

from hybridserve.tuning.confidence import Confidence, get_confidence
from hybridserve.tuning.policy import CascadePolicy, SkipRule, identity_calibrator

__all__ = ["CascadePolicy", "Confidence", "SkipRule", "get_confidence", "identity_calibrator"]
