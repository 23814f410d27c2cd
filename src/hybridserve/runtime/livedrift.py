"""Drift handling in the live engine: shadow → detect → guard → re-tune → swap.

The same order of operations as the offline reference ``drift.replay.replay_adaptive``, on live
traffic:

1. **watch**: every request's first-model logits feed the monitor's signature test (free: the
   engine reports the outputs its first position computed anyway); a seeded share
   (``EngineConfig.shadow_fraction``) of inputs answered before the giant is queued for a shadow
   check (``runtime.shadowrun``: after the answer went out, at low priority, dropped when the
   queue is full). A check feeds the disagreement CUSUM, the per-model agreement and the
   label-free accuracy estimate.
2. **alarm**: either detector crosses its threshold. A warning is logged and counted; with
   ``drift_guard="giant"`` a giant-only policy is swapped in (``Engine.swap_policy``: versioned
   and atomic per request), with ``"none"`` the cascade keeps serving. From then on every answer
   is queued for a shadow check, which makes it a complete *pair* (every model's logits).
3. **re-tune**: after ``drift_min_pairs`` pairs gathered since the alarm (and a ``CostTable``),
   ``drift.retune`` fits a new policy in a worker thread (feedback labels win over the giant's
   answers), it is swapped in, the monitor is refitted on the same pairs, and watching resumes.
   A re-tune that fails is logged and tried again after as many pairs more.

Each swap the controller makes is reported to ``on_swap`` (the server saves the policy in its
workdir as ``POST /v1/policy`` does). Requests get an id (``Result.request_id``) kept in a
bounded registry, so ``feedback`` can attach true labels to answers: they are counted against
what was served, and, where the input was shadow-checked since the alarm, become the re-tune's
labels. Known limit: a user's ``POST /v1/policy`` during a guard is overridden by the re-tune.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridserve.drift.monitor import GUARD, WATCH, DriftMonitor
from hybridserve.drift.retune import giant_only, retune
from hybridserve.drift.shadow import AccuracyEstimator, ShadowSampler
from hybridserve.errors import HybridServeError
from hybridserve.runtime.errors import UnknownRequestError
from hybridserve.runtime.job import Result
from hybridserve.runtime.shadowrun import ShadowItem, ShadowRunner
from hybridserve.tuning.costs import CostTable
from hybridserve.tuning.policy import CascadePolicy

log = logging.getLogger(__name__)

#: the cascade keeps serving after an alarm (``drift_guard="none"``) while pairs are gathered
ALARM = "alarm"
STATES = (WATCH, ALARM, GUARD)

#: called after each swap the controller makes: (version, policy, reason)
OnSwap = Callable[[int, CascadePolicy, str], None]


class _SwappingEngine(Protocol):
    @property
    def policy_version(self) -> int: ...

    async def swap_policy(self, policy: Any) -> int: ...


class LiveDrift:
    """The live drift controller of one engine (module docstring)."""

    def __init__(
        self,
        monitor: DriftMonitor,
        *,
        costs: CostTable | None = None,
        shadow_fraction: float = 0.025,
        guard: str = "giant",
        min_pairs: int = 200,
        margin_pt: float = 0.3,
        queue_rows: int = 256,
        batch_rows: int = 32,
        registry_size: int = 100_000,
        window: int = 500,
        seed: int = 0,
    ) -> None:
        if not hasattr(monitor, "policy_"):
            raise HybridServeError("monitor: expected a fitted DriftMonitor (call fit first)")
        if guard not in ("giant", "none"):
            raise HybridServeError(f"drift_guard: expected 'giant' or 'none', got {guard!r}")
        self.monitor = monitor
        self.costs = costs
        self.guard = guard
        self.min_pairs = min_pairs
        self.margin_pt = margin_pt
        self.queue_rows = queue_rows
        self.batch_rows = batch_rows
        self.registry_size = registry_size
        self.window = window
        self.sampler = ShadowSampler(shadow_fraction, seed)
        self.state_ = WATCH
        self.on_swap: OnSwap | None = None
        self.estimator = AccuracyEstimator(window_model=monitor.window_accuracy_)
        self.estimator.threshold_ = monitor.estimator_.threshold_
        self.estimate_: float | None = None
        self._answers_in_window = 0
        self._ids = itertools.count(1)
        #: request id → (served labels, answering models, policy version)
        self._requests: OrderedDict[str, tuple[list[int], list[str], int]] = OrderedDict()
        #: versions routed by the monitored policy (only their traffic is watched)
        self._watched: set[int] = {1}
        self._monitored: CascadePolicy = monitor.policy_
        self._pairs: dict[str, list[npt.NDArray[np.float32]]] = {}
        self._pair_of: dict[tuple[str, int], int] = {}
        self._feedback: dict[int, int] = {}
        self._feedback_seen: deque[bool] = deque(maxlen=window)
        self._feedback_total = 0
        self._next_retune = min_pairs
        self._tasks: set[asyncio.Task[None]] = set()
        self._retuning = False
        self.alarms = 0
        self.retunes = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.engine: _SwappingEngine | None = None
        self.runner: ShadowRunner | None = None
        self.models: tuple[str, ...] = ()

    # ------------------------------------------------------------------ lifecycle
    def start(self, engine: _SwappingEngine, positions: Sequence[Any]) -> None:
        """Begin with ``engine`` (whose first version is the monitored policy) and its
        positions (the shadow checks run on their replicas)."""
        served = getattr(engine, "policy", None)
        if served is not self._monitored:
            if served != self._monitored:
                raise HybridServeError(
                    "monitor: fitted for another policy than the engine serves; fit it on the "
                    "engine's policy"
                )
            self._monitored = served  # the same policy: identity makes the hot check cheap
        self.engine = engine
        self.models = tuple(p.name for p in positions)
        self._watched = {engine.policy_version}
        self._pairs = {m: [] for m in self.models}
        self.runner = ShadowRunner(
            positions, self._on_pairs, queue_rows=self.queue_rows, batch_rows=self.batch_rows
        )
        self.runner.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.stop()

    # ------------------------------------------------------------------ engine hooks
    def new_request_id(self) -> str:
        return f"r{next(self._ids)}"

    def first_outputs(self, policy: object, logits: npt.NDArray[Any]) -> None:
        """The first chain model's logits on a batch (free); only the monitored policy's."""
        if (
            self.state_ == WATCH
            and policy is self._monitored
            and self.monitor.observe_first(logits)
        ):
            self._alarm("signature")

    def giant_outputs(self, scores: npt.NDArray[Any], logits: npt.NDArray[Any]) -> None:
        """The giant's answers on a batch (any policy version, the guard's too): the
        estimate's ``A_giant`` reads their confidences and logits."""
        for q, row in zip(np.asarray(scores).tolist(), np.asarray(logits), strict=True):
            self.estimator.giant_answer(float(q), row)

    def answered(self, x: npt.NDArray[Any], result: Result, request_id: str) -> Result:
        """Note a request's answers, pick its shadow checks; returns it with its id."""
        self._remember(request_id, result)
        last = len(result.chain) - 1
        flags = self.sampler.draw(len(result))
        collecting = self.state_ != WATCH
        watched = result.policy_version in self._watched
        for row, (m, lab) in enumerate(zip(result.model_index, result.labels, strict=True)):
            early = m < last
            if collecting or (early and flags[row]):
                item = ShadowItem(
                    x[row], lab, result.chain[m], result.policy_version, request_id, row
                )
                if self.runner is not None and self.runner.offer(item):
                    continue
            if watched and early:
                self.estimator.early_answer(None)
        self._answers_in_window += len(result)
        if self._answers_in_window >= self.window:
            self.estimate_ = self.estimator.estimate()
            self.estimator.next_window()
            self._answers_in_window = 0
        # built field by field: dataclasses.replace costs more than the rest of this method
        return Result(
            result.labels,
            result.confidence,
            result.model_index,
            result.visited,
            result.latency_ms,
            result.chain,
            result.policy_version,
            request_id,
        )

    def _remember(self, request_id: str, result: Result) -> None:
        models = [result.chain[m] for m in result.model_index]
        self._requests[request_id] = (list(result.labels), models, result.policy_version)
        while len(self._requests) > self.registry_size:
            self._requests.popitem(last=False)

    # ------------------------------------------------------------------ shadow results
    async def _on_pairs(
        self, items: list[ShadowItem], logits: dict[str, npt.NDArray[np.float32]]
    ) -> None:
        mon = self.monitor
        chain = mon.policy_.chain
        giant = logits[self.models[-1]]
        labels = giant.argmax(axis=1)
        q = mon.policy_.probabilities(len(chain) - 1, giant)
        for i, it in enumerate(items):
            agrees = bool(it.said == int(labels[i]))
            if self.state_ == WATCH and it.version in self._watched and it.model in chain:
                self.estimator.early_answer(float(q[i, it.said]))
                if mon.observe_shadow(chain.index(it.model), agrees):
                    self._alarm("disagreement")
            if self.state_ != WATCH:
                self._add_pair(it, {m: v[i] for m, v in logits.items()})
        if self.state_ != WATCH and self._pair_count() >= self._next_retune:
            self._maybe_retune()

    def _pair_count(self) -> int:
        return len(self._pairs[self.models[-1]]) if self.models else 0

    def _add_pair(self, item: ShadowItem, rows: Mapping[str, npt.NDArray[np.float32]]) -> None:
        index = self._pair_count()
        for m in self.models:
            self._pairs[m].append(rows[m])
        self._pair_of[(item.request_id, item.row)] = index

    # ------------------------------------------------------------------ alarm → guard → re-tune
    def _alarm(self, detector: str) -> None:
        if self.state_ != WATCH:
            return
        self.alarms += 1
        self.state_ = GUARD if self.guard == "giant" else ALARM
        self._pairs = {m: [] for m in self.models}
        self._pair_of.clear()
        self._feedback.clear()
        self._next_retune = self.min_pairs
        self._event("alarm", detector=detector)
        log.warning(
            "drift alarm (%s detector) after %d requests; %s",
            detector,
            self.monitor.requests_,
            "guard: every request to the giant" if self.guard == "giant" else "no guard",
        )
        if self.guard == "giant":
            self._spawn(self._swap(self._giant_only(), "guard"))

    def _giant_only(self) -> CascadePolicy:
        return giant_only(self._monitored)

    def _maybe_retune(self) -> None:
        if self._retuning:
            return
        if self.costs is None:
            if self._next_retune == self.min_pairs:
                log.warning("drift: no cost table, so no re-tune; the guard stays in force")
            self._next_retune = self._pair_count() + self.min_pairs
            return
        self._retuning = True
        pairs = {m: np.stack(v) for m, v in self._pairs.items()}
        feedback = dict(self._feedback)
        self._spawn(self._retune(pairs, feedback))

    async def _retune(
        self, pairs: dict[str, npt.NDArray[np.float32]], feedback: dict[int, int]
    ) -> None:
        assert self.costs is not None
        n = int(pairs[self.models[-1]].shape[0])
        try:
            new = await asyncio.to_thread(
                retune,
                self._monitored,
                pairs,
                self.costs,
                feedback=feedback,
                margin_pt=self.margin_pt,
                min_pairs=self.min_pairs,
            )
            fresh = await asyncio.to_thread(self._refit, new, pairs)
        except HybridServeError as err:
            log.warning("drift: re-tune on %d pairs failed (%s); trying again later", n, err)
            self._next_retune = n + self.min_pairs
            self._retuning = False
            return
        version = await self._swap(new, "retune")
        self._retuning = False
        if version is None:
            return
        self.retunes += 1
        if fresh is not None:
            self.monitor = fresh
            self.estimator.window_model = fresh.window_accuracy_
            self._monitored = new
            self._watched = {version}
        else:  # the new policy answers everything at the giant: nothing to watch
            self._watched = set()
        self.state_ = WATCH
        self._pairs = {m: [] for m in self.models}
        self._pair_of.clear()
        self._feedback.clear()

    def _refit(
        self, policy: CascadePolicy, pairs: Mapping[str, npt.NDArray[Any]]
    ) -> DriftMonitor | None:
        m = self.monitor
        fresh = DriftMonitor(
            shadow_fraction=m.shadow_fraction,
            alpha=m.alpha,
            horizon=m.horizon,
            signature_window=m.signature_window,
            signature_tail=m.signature_tail,
            disagreement_ratio=m.disagreement_ratio,
            random_state=m.random_state,
        )
        try:
            return fresh.fit(policy, {c: pairs[c] for c in policy.chain}, shift_sets=m.shift_sets_)
        except HybridServeError:
            return None

    async def _swap(self, policy: CascadePolicy, reason: str) -> int | None:
        assert self.engine is not None
        try:
            version = await self.engine.swap_policy(policy)
        except HybridServeError as err:
            log.error("drift: %s swap refused: %s", reason, err)
            return None
        self._event(reason, version=version, chain=list(policy.chain))
        log.warning("drift: %s policy swapped in as version %d", reason, version)
        if self.on_swap is not None:
            self.on_swap(version, policy, reason)
        return version

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _event(self, what: str, **details: Any) -> None:
        self.events.append({"event": what, "request": self.monitor.requests_, **details})

    # ------------------------------------------------------------------ feedback
    def feedback(self, request_id: str, labels: Sequence[int], n_classes: int) -> int:
        """True ``labels`` (one per input) of request ``request_id``; returns how many became
        re-tune labels. Raises ``UnknownRequestError`` or ``HybridServeError`` (bad labels)."""
        served = self.check_feedback(request_id, labels, n_classes)
        used = 0
        for row, (y, s) in enumerate(zip(labels, served, strict=True)):
            self._feedback_seen.append(int(y) == s)
            self._feedback_total += 1
            pair = self._pair_of.get((request_id, row))
            if pair is not None:
                self._feedback[pair] = int(y)
                used += 1
        return used

    def check_feedback(self, request_id: str, labels: Sequence[int], n_classes: int) -> list[int]:
        """The served labels of ``request_id`` if ``labels`` fit it; raises otherwise."""
        known = self._requests.get(request_id)
        if known is None:
            raise UnknownRequestError(
                f"id: unknown request {request_id!r} (never served, or older than the last "
                f"{self.registry_size} requests)"
            )
        served = known[0]
        if len(labels) != len(served):
            raise HybridServeError(
                f"labels: request {request_id!r} had {len(served)} inputs, got {len(labels)} labels"
            )
        bad = [y for y in labels if not 0 <= int(y) < n_classes]
        if bad:
            raise HybridServeError(f"labels: {bad[0]} is not a class index 0..{n_classes - 1}")
        return served

    # ------------------------------------------------------------------ reports
    def state(self) -> dict[str, Any]:
        """What ``GET /v1/policy`` and the metrics show."""
        runner = self.runner.state() if self.runner is not None else {}
        seen = self._feedback_seen
        return {
            "state": self.state_,
            "guard": self.guard,
            "alarms": self.alarms,
            "retunes": self.retunes,
            "watched_versions": sorted(self._watched),
            "pairs": self._pair_count(),
            "retune_at_pairs": self._next_retune if self.state_ != WATCH else None,
            "shadow_fraction": self.sampler.fraction,
            "shadow": runner,
            "estimated_accuracy": self.estimate_
            if self.estimate_ is not None
            else self.estimator.estimate(),
            "feedback": {
                "labels": self._feedback_total,
                "served_accuracy": float(np.mean(seen)) if seen else None,
            },
            "monitor": self.monitor.state(),
            "events": list(self.events),
        }
