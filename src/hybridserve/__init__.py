"""hybridserve: serve a family of model sizes as one confidence-based cascade."""

__version__ = "0.1.0"
