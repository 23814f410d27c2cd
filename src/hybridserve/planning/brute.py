"""Brute force for tiny instances (tests): the best λ over every placement, by enumeration.

It shares only the configurations with the MILP, not its formulation: it enumerates every
vector of replica counts per configuration that fits the cluster's totals, visits them by λ
(best first), and accepts the first one that packs onto the devices, found by exhaustive
backtracking (each replica's stages on distinct devices; interchangeable devices and replicas
tried once). Exponential: keep it to a few devices, models and batch sizes.
"""

from __future__ import annotations

from itertools import combinations

from hybridserve.errors import HybridServeError
from hybridserve.planning.instance import Instance

#: Slack on Σ utilisation ≤ 1, as in ``Layout``.
TOL = 1e-9


def _vectors(inst: Instance, limit: int) -> list[tuple[int, ...]]:
    cfgs = inst.configs
    cap = inst.options.max_replicas_per_device
    n_t = {t: sum(d.type == t for d in inst.devices) for t in inst.cluster.types}
    util_left = {t: float(n) for t, n in n_t.items()}
    mem_left = {t: float(sum(d.memory_bytes for d in inst.devices if d.type == t)) for t in n_t}
    stages_left = {(m, t): cap * n_t[t] for m in inst.models for t in n_t}
    out: list[tuple[int, ...]] = []
    r: list[int] = []

    def rec(i: int) -> None:
        if len(out) > limit:
            raise HybridServeError(f"brute force: more than {limit} count vectors; too large")
        if i == len(cfgs):
            out.append(tuple(r))
            return
        c = cfgs[i]
        t, s = c.device_type, c.num_stages
        k = 0
        while True:
            r.append(k)
            rec(i + 1)
            r.pop()
            u, mem, key = s * c.stage_utilisation, s * c.stage_memory_bytes, (c.model, t)
            if util_left[t] < u - TOL or mem_left[t] < mem or stages_left[key] < s:
                break
            util_left[t] -= u
            mem_left[t] -= mem
            stages_left[key] -= s
            k += 1
        util_left[t] += k * s * c.stage_utilisation
        mem_left[t] += k * s * c.stage_memory_bytes
        stages_left[(c.model, t)] += k * s

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
            -inst.configs[ci].num_stages
            * max(inst.configs[ci].stage_utilisation, inst.configs[ci].stage_memory_bytes / largest)
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
            and free_mem[d] >= c.stage_memory_bytes
            and free_util[d] >= c.stage_utilisation - TOL
            and per_model[(c.model, d)] < cap
        ]
        seen: set[tuple[object, ...]] = set()
        for pick in combinations(ok, c.num_stages):
            if same_as_prev and pick < prev:
                continue  # replicas of one configuration are interchangeable
            key = tuple(sorted(state(d) for d in pick))
            if key in seen:
                continue  # interchangeable devices in the same state
            seen.add(key)
            for d in pick:
                free_mem[d] -= c.stage_memory_bytes
                free_util[d] -= c.stage_utilisation
                per_model[(c.model, d)] += 1
            found = rec(i + 1, pick)
            for d in pick:
                free_mem[d] += c.stage_memory_bytes
                free_util[d] += c.stage_utilisation
                per_model[(c.model, d)] -= 1
            if found:
                return True
        return False

    return rec(0, ())


def brute_force_lambda(inst: Instance, limit: int = 500_000) -> float:
    """The largest λ any placement of ``inst`` achieves (0 if no placement holds every model)."""
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
