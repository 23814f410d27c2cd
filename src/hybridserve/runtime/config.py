"""Settings of the serving engine (batch sizes and waits are the plan's, not set here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    """Limits and knobs of one ``Engine``; every field has a unit in its name or is a count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_size: int = Field(
        1024,
        ge=1,
        description="inputs (rows) each position may hold waiting; a full entry one refuses work",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="deadline of one predict() call, queueing included"
    )
    max_batch_size: int = Field(256, ge=1, description="most inputs one predict() call may carry")
    batch_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "watchdog of one model call on one batch, far above any normal batch: past it the "
            "batch's requests fail (504) and the replica is abandoned and replaced"
        ),
    )
    max_text_chars: int = Field(
        10_000,
        ge=1,
        description="text families: most characters one input may hold (longer ones get 422); "
        "the models truncate to their token limit anyway",
    )
    warmup: bool = Field(True, description="run one batch per replica before reporting ready")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="how long stop() waits for accepted requests to finish"
    )
    energy_interval_s: float = Field(
        1.0, gt=0, description="period of the background energy sampler (off the hot path)"
    )
    energy: bool = Field(True, description="account joules per device when a meter is available")
    tune_gc_at_start: bool = Field(
        False,
        description=(
            "when ready, freeze every object alive (imports, models) out of the garbage "
            "collector's reach and collect the young generation less often "
            "(hybridserve.process.tune_gc_for_serving); process-wide, so off for library use, "
            "on in the CLI's serve and bench"
        ),
    )
    cpu_threads_per_replica: int | None = Field(
        None,
        ge=1,
        description=(
            "torch intra-op threads of each replica thread on the CPU (each has its own "
            "OpenMP team); None: sized by the plan, ⌈time_share × torch's thread count⌉ "
            "(a whole-CPU replica keeps torch's default)"
        ),
    )
    drift: bool = Field(
        False,
        description=(
            "drift handling (runtime.livedrift): shadow checks, detectors, guard, live re-tune; "
            "needs a fitted DriftMonitor passed to the engine"
        ),
    )
    shadow_fraction: float = Field(
        0.025,
        ge=0,
        le=1,
        description="share of inputs answered before the giant that get a shadow check "
        "(the drift bench keeps the extra energy under 10 % at 2.5 %)",
    )
    shadow_queue_rows: int = Field(
        256, ge=1, description="shadow inputs waiting at most; more are dropped and counted"
    )
    drift_guard: Literal["giant", "none"] = Field(
        "giant", description="on a drift alarm: 'giant' swaps in a giant-only policy; 'none' not"
    )
    drift_min_pairs: int = Field(
        200, ge=10, description="shadow pairs gathered after an alarm before a live re-tune"
    )
    drift_margin_pt: float = Field(
        0.3, ge=0, description="the re-tune's allowed disagreement with the giant, in points"
    )
