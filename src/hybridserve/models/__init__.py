"""Model adapters, families (bundled and user-declared) and cached logits."""

from hybridserve.models.base import Model, ModelInfo
from hybridserve.models.callable_model import CallableModel
from hybridserve.models.family import Family, FamilyConfig, load_family, read_config
from hybridserve.models.generative import (
    Generation,
    GenerationParams,
    GenerativeInfo,
    GenerativeModel,
    TokenLogprob,
)
from hybridserve.models.generative_family import GenerativeFamily, load_generative_family
from hybridserve.models.logits import LogitSet, family_logits
from hybridserve.models.preprocessing import Preprocessing
from hybridserve.models.torch_model import TorchModel

__all__ = [
    "CallableModel",
    "Family",
    "FamilyConfig",
    "Generation",
    "GenerationParams",
    "GenerativeFamily",
    "GenerativeInfo",
    "GenerativeModel",
    "LogitSet",
    "Model",
    "ModelInfo",
    "Preprocessing",
    "TokenLogprob",
    "TorchModel",
    "family_logits",
    "load_family",
    "load_generative_family",
    "read_config",
]
