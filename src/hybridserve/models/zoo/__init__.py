"""Bundled model families: architectures, training recipes and committed weights."""
