"""Brute force for tiny instances (tests): the best λ over every placement, by enumeration.

It shares only the configurations with the MILP, not its formulation. Without time shares it
enumerates every vector of replica counts per configuration that fits the cluster's totals,
visits them by λ (best first), and accepts the first one that packs onto the devices, found by
exhaustive backtracking (each replica's parts on distinct devices; interchangeable devices and
replicas tried once).

With time shares (``brute_force_lambda`` picks by the configurations) the integer decisions are
where the copies sit; the shares are then an LP. It enumerates every multiset of pipelined
replicas (share 1) that packs, then per device every *maximal* multiset of time-shared copies
(memory, the per-model cap, and at most ⌈budget/u⌉ copies of a configuration: more can only
add idle copies, and a copy never lowers λ, so a non-maximal multiset is never better than a
maximal one containing it). For every combination of devices' multisets it bounds λ by the
copies' flat-out capacity and by the cluster's total time at each model's cheapest copy, and
solves the per-copy share LP (``scipy.optimize.linprog``) best bound first until no bound beats
the best λ found. Exponential: keep it to a few devices, models and batch sizes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import combinations, product

import numpy as np
from scipy.optimize import linprog

from hybridserve.errors import HybridServeError
from hybridserve.planning.instance import Config, Instance

#: Slack on Σ utilisation ≤ 1, as in ``Layout``.
TOL = 1e-9


def _vectors(inst: Instance, limit: int) -> list[tuple[int, ...]]:
    cfgs = inst.configs
    cap = inst.options.max_replicas_per_device
    n_t = {t: sum(d.type == t for d in inst.devices) for t in inst.cluster.types}
    util_left = {t: float(n) for t, n in n_t.items()}
    mem_left = {t: float(sum(d.memory_bytes for d in inst.devices if d.type == t)) for t in n_t}
    parts_left = {(m, t): cap * n_t[t] for m in inst.models for t in n_t}
    out: list[tuple[int, ...]] = []
    r: list[int] = []

    def rec(i: int) -> None:
        if len(out) > limit:
            raise HybridServeError(f"brute force: more than {limit} count vectors; too large")
        if i == len(cfgs):
            out.append(tuple(r))
            return
        c = cfgs[i]
        t, s = c.device_type, c.num_parts
        k = 0
        while True:
            r.append(k)
            rec(i + 1)
            r.pop()
            u, mem, key = s * c.part_utilisation, s * c.part_memory_bytes, (c.model, t)
            if util_left[t] < u - TOL or mem_left[t] < mem or parts_left[key] < s:
                break
            util_left[t] -= u
            mem_left[t] -= mem
            parts_left[key] -= s
            k += 1
        util_left[t] += k * s * c.part_utilisation
        mem_left[t] += k * s * c.part_memory_bytes
        parts_left[(c.model, t)] += k * s

    rec(0)
    return out


def _packs(inst: Instance, counts: tuple[int, ...]) -> bool:
    devs = inst.devices
    cap = inst.options.max_replicas_per_device
    free_mem = [float(d.memory_bytes) for d in devs]
    free_util = [1.0] * len(devs)
    per_model = {(m, d): 0 for m in inst.models for d in range(len(devs))}
    reps = [ci for ci, n in enumerate(counts) for _ in range(n)]
    largest = max(d.memory_bytes for d in devs)
    reps.sort(
        key=lambda ci: (
            -inst.configs[ci].num_parts
            * max(inst.configs[ci].part_utilisation, inst.configs[ci].part_memory_bytes / largest)
        )
    )

    def state(d: int) -> tuple[object, ...]:
        models = tuple(per_model[(m, d)] for m in inst.models)
        return (
            devs[d].type,
            devs[d].memory_bytes,
            round(free_mem[d]),
            round(free_util[d], 9),
            models,
        )

    def rec(i: int, prev: tuple[int, ...]) -> bool:
        if i == len(reps):
            return True
        c = inst.configs[reps[i]]
        same_as_prev = i > 0 and reps[i - 1] == reps[i]
        ok = [
            d
            for d in range(len(devs))
            if devs[d].type == c.device_type
            and free_mem[d] >= c.part_memory_bytes
            and free_util[d] >= c.part_utilisation - TOL
            and per_model[(c.model, d)] < cap
        ]
        seen: set[tuple[object, ...]] = set()
        for pick in combinations(ok, c.num_parts):
            if same_as_prev and pick < prev:
                continue  # replicas of one configuration are interchangeable
            key = tuple(sorted(state(d) for d in pick))
            if key in seen:
                continue  # interchangeable devices in the same state
            seen.add(key)
            for d in pick:
                free_mem[d] -= c.part_memory_bytes
                free_util[d] -= c.part_utilisation
                per_model[(c.model, d)] += 1
            found = rec(i + 1, pick)
            for d in pick:
                free_mem[d] += c.part_memory_bytes
                free_util[d] += c.part_utilisation
                per_model[(c.model, d)] -= 1
            if found:
                return True
        return False

    return rec(0, ())


def brute_force_lambda(inst: Instance, limit: int = 500_000) -> float:
    """The largest λ any placement of ``inst`` achieves (0 if no placement holds every model)."""
    if any(c.time_shared for c in inst.configs):
        return _shared_lambda(inst, limit)
    scored = []
    for vec in _vectors(inst, limit):
        cap = dict.fromkeys(inst.models, 0.0)
        for ci, n in enumerate(vec):
            c = inst.configs[ci]
            cap[c.model] += n * c.throughput_rps
        lam = min(cap[m] / inst.reach[m] for m in inst.models)
        if lam > 0:
            scored.append((lam, vec))
    scored.sort(key=lambda x: -x[0])
    for lam, vec in scored:
        if _packs(inst, vec):
            return lam
    return 0.0


# ---------------------------------------------------------------------------- time shares
def _pipelines(inst: Instance) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
    """Every multiset of pipelined replicas (config, devices) that packs at share 1."""
    devs = inst.devices
    cap = inst.options.max_replicas_per_device
    free_mem = [float(d.memory_bytes) for d in devs]
    free_util = [1.0] * len(devs)
    count = {(m, d): 0 for m in inst.models for d in range(len(devs))}
    moves = [
        (c.index, pick)
        for c in inst.configs
        if c.num_parts > 1
        for pick in combinations(
            [d for d in range(len(devs)) if devs[d].type == c.device_type], c.num_parts
        )
    ]
    chosen: list[tuple[int, tuple[int, ...]]] = []

    def rec(start: int) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
        yield list(chosen)
        for k in range(start, len(moves)):  # non-decreasing move index: each multiset once
            ci, pick = moves[k]
            c = inst.configs[ci]
            if any(
                free_mem[d] < c.part_memory_bytes
                or free_util[d] < c.part_utilisation - TOL
                or count[(c.model, d)] >= cap
                for d in pick
            ):
                continue
            for d in pick:
                free_mem[d] -= c.part_memory_bytes
                free_util[d] -= c.part_utilisation
                count[(c.model, d)] += 1
            chosen.append((ci, pick))
            yield from rec(k)
            chosen.pop()
            for d in pick:
                free_mem[d] += c.part_memory_bytes
                free_util[d] += c.part_utilisation
                count[(c.model, d)] -= 1

    yield from rec(0)


def _device_options(
    cfgs: list[Config], mem: float, budget: float, room: dict[str, int]
) -> list[tuple[int, ...]]:
    """Maximal copy counts per configuration of ``cfgs`` on one device."""
    # at most ⌈budget/u⌉ copies of each (none without time left: a copy could only idle)
    limit = [max(math.ceil(budget / c.part_utilisation - 1e-9), 0) for c in cfgs]
    if budget <= TOL:
        limit = [0] * len(cfgs)
    out: list[tuple[int, ...]] = []
    vec = [0] * len(cfgs)

    def can_add(j: int, mem_left: float, left: dict[str, int]) -> bool:
        c = cfgs[j]
        return vec[j] < limit[j] and c.part_memory_bytes <= mem_left and left[c.model] > 0

    def rec(i: int, mem_left: float, left: dict[str, int]) -> None:
        if i == len(cfgs):
            if not any(can_add(j, mem_left, left) for j in range(len(cfgs))):
                out.append(tuple(vec))
            return
        c = cfgs[i]
        by_mem = int(mem_left // c.part_memory_bytes) if c.part_memory_bytes > 0 else limit[i]
        for k in range(min(limit[i], by_mem, left[c.model]), -1, -1):
            vec[i] = k
            rec(i + 1, mem_left - k * c.part_memory_bytes, {**left, c.model: left[c.model] - k})
        vec[i] = 0

    rec(0, mem, dict(room))
    return out


def _share_lp(
    inst: Instance,
    copies: list[tuple[int, Config, int]],
    budget: list[float],
    fixed: dict[str, float],
) -> float:
    """λ of copies ``(device, config, count)`` with shares free, on top of ``fixed`` capacity."""
    models = list(inst.models)
    n = len(copies)
    a = np.zeros((len(budget) + len(models), n + 1))
    b = np.zeros(len(budget) + len(models))
    for k, (d, c, _) in enumerate(copies):
        a[d, k] = c.part_utilisation
        a[len(budget) + models.index(c.model), k] = -c.throughput_rps
    b[: len(budget)] = budget
    for i, m in enumerate(models):
        a[len(budget) + i, n] = inst.reach[m]
        b[len(budget) + i] = fixed[m]
    cost = np.zeros(n + 1)
    cost[n] = -1.0
    bounds = [(0.0, float(cnt)) for _, _, cnt in copies] + [(0.0, None)]
    res = linprog(cost, A_ub=a, b_ub=b, bounds=bounds, method="highs")
    return float(res.x[n]) if res.status == 0 else 0.0


def _shared_lambda(inst: Instance, limit: int) -> float:
    devs = inst.devices
    cap = inst.options.max_replicas_per_device
    models = list(inst.models)
    reach = np.array([inst.reach[m] for m in models])
    shared = [c for c in inst.configs if c.time_shared]
    best = 0.0
    for items in _pipelines(inst):
        mem = [float(d.memory_bytes) for d in devs]
        budget = [1.0] * len(devs)
        room = [dict.fromkeys(models, cap) for _ in devs]
        fixed = dict.fromkeys(models, 0.0)
        for ci, pick in items:
            c = inst.configs[ci]
            fixed[c.model] += c.throughput_rps
            for d in pick:
                mem[d] -= c.part_memory_bytes
                budget[d] -= c.part_utilisation
                room[d][c.model] -= 1
        budget = [max(x, 0.0) for x in budget]
        cfgs = [[c for c in shared if c.device_type == d.type] for d in devs]
        options = [_device_options(cfgs[d], mem[d], budget[d], room[d]) for d in range(len(devs))]
        if math.prod(len(o) for o in options) > limit:
            raise HybridServeError(f"brute force: more than {limit} combinations; too large")
        # devices in the same state take their options in non-decreasing order (symmetry)
        state = [(d.type, mem[i], budget[i], tuple(room[i].values())) for i, d in enumerate(devs)]
        scored = []
        for pick in product(*(range(len(o)) for o in options)):
            if any(
                state[i] == state[j] and pick[i] > pick[j]
                for i in range(len(devs))
                for j in range(i + 1, len(devs))
            ):
                continue
            rate = np.array([fixed[m] for m in models])
            cheapest = np.full(len(models), np.inf)  # device-seconds per request
            copies = []
            for d, k in enumerate(pick):
                for c, cnt in zip(cfgs[d], options[d][k], strict=True):
                    if cnt:
                        i = models.index(c.model)
                        rate[i] += cnt * c.throughput_rps
                        cheapest[i] = min(cheapest[i], c.part_utilisation / c.throughput_rps)
                        copies.append((d, c, cnt))
            bound = float(np.min(rate / reach))
            if not any(fixed.values()):  # all time-shared: total time bounds λ too
                bound = min(bound, sum(budget) / float(np.sum(reach * cheapest)))
            if bound > 0:
                scored.append((bound, copies))
        scored.sort(key=lambda x: -x[0])
        for bound, copies in scored:
            if bound <= best * (1 + 1e-9):
                break
            best = max(best, _share_lp(inst, copies, budget, fixed))
    return best
