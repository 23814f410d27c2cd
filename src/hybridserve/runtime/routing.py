"""Policy versions: every request is routed entirely by the policy in force when it was accepted.

A ``Routing`` is one version of the served policy: the policy, its chain, and where each chain
model is served (the engine position of each chain index). A request's ``Job`` holds its
``Routing`` from acceptance to answer, so a swap changes the routing of new requests only; the
old version lives as long as some request still holds it (plain reference counting: the engine
itself keeps only the current one; a position may also keep its last batch's inputs until its
next batch).

The hot path stays one identity check per chunk in a batch: ``group_by_routing`` returns the
batch as one group when all its chunks share a version (always, outside a swap). Only a batch
that mixes requests from both sides of a swap is split, by version, into groups that are each
routed by their own policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridserve.runtime.job import Chunk
    from hybridserve.runtime.position import RoutingPolicy


@dataclass(eq=False)
class Routing:
    """Version ``version`` of the policy: its chain and the engine position serving each model."""

    version: int
    policy: RoutingPolicy
    chain: tuple[str, ...]
    #: engine position of each chain index
    slots: tuple[int, ...]
    #: chain index of each engine position this version routes through
    index: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, version: int, policy: RoutingPolicy, served: Sequence[str]) -> Routing:
        """Version ``version`` of ``policy`` on an engine serving models ``served`` (in
        position order); raises ``KeyError`` naming the first chain model not served."""
        chain = tuple(policy.chain)
        slots = tuple(served.index(m) if m in served else _missing(m) for m in chain)
        return cls(version, policy, chain, slots, {s: i for i, s in enumerate(slots)})


def _missing(model: str) -> int:
    raise KeyError(model)


def group_by_routing(chunks: list[Chunk]) -> list[tuple[Routing, list[Chunk]]]:
    """A batch's chunks grouped by policy version (one group unless a swap is under way)."""
    first = chunks[0].routing
    if all(c.routing is first for c in chunks):
        return [(_known(first), chunks)]
    groups: dict[int, tuple[Routing, list[Chunk]]] = {}
    for chunk in chunks:
        groups.setdefault(id(chunk.routing), (_known(chunk.routing), []))[1].append(chunk)
    return list(groups.values())


def _known(routing: Routing | None) -> Routing:
    if routing is None:
        raise ValueError("an input reached a position without a policy version")
    return routing
