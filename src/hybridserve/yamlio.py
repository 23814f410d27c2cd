"""Reading the YAML files users write (families, clusters) with errors that name file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from pydantic import ValidationError

from hybridserve.errors import HybridServeError


def read_mapping(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping, or a ``HybridServeError`` naming the file."""
    if not path.is_file():
        raise HybridServeError(f"{path}: not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise HybridServeError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise HybridServeError(f"{path}: expected a mapping at the top level")
    return raw


def validation_message(source: object, err: ValidationError) -> str:
    """One line naming every invalid field (``models.2.loader: Field required; ...``)."""
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        problems.append(f"{where}: {msg}")
    return f"{source}: " + "; ".join(problems)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


NamedT = TypeVar("NamedT", bound=_Named)


def unique_names(entries: list[NamedT]) -> list[NamedT]:
    """``entries`` unchanged if their names are unique (a pydantic field validator's body)."""
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    return entries
