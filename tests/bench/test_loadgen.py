"""Load generator: arrival processes, open and closed loops against fake targets."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from hybridserve.bench.loadgen import arrival_gaps, closed_loop, open_loop, request_order

pytestmark = pytest.mark.unit


class EchoTarget:
    """Answers with the first pixel as the label; fails when the pixel is 99."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def predict(self, batch: np.ndarray) -> list[dict[str, Any]]:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            label = int(batch[0, 0])
            if label == 99:
                raise RuntimeError("boom")
            return [{"label": label, "model": "m", "path": ["m"]}]
        finally:
            self.in_flight -= 1


def _data(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((n, 2), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % 5
    x[:, 0] = y
    x[::2, 0] = (y[::2] + 1) % 5  # half the answers are wrong
    return x, y


def test_poisson_gaps_have_the_requested_mean_rate() -> None:
    gaps = arrival_gaps(200.0, 20_000, seed=1)
    assert gaps.mean() == pytest.approx(1 / 200.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


def test_gamma_gaps_have_the_requested_coefficient_of_variation() -> None:
    gaps = arrival_gaps(100.0, 20_000, process="gamma", cv=3.0, seed=2)
    assert gaps.mean() == pytest.approx(0.01, rel=0.08)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)


def test_bad_arrival_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate_rps"):
        arrival_gaps(0.0, 10)
    with pytest.raises(ValueError, match="unknown arrival process"):
        arrival_gaps(1.0, 10, process="uniform")


def test_closed_loop_keeps_concurrency_and_counts_correctness() -> None:
    target = EchoTarget(delay_s=0.002)
    x, y = _data()
    run = asyncio.run(closed_loop(target, x, y, concurrency=8, duration_s=5.0, max_requests=200))
    assert len(run.records) == 200 == target.calls
    assert target.max_in_flight == 8
    done = run.completed
    assert len(done) == 200
    # half the inputs carry a wrong label: correctness is counted per request, not assumed
    assert 0.3 < np.mean([r.correct for r in done]) < 0.7
    assert all(r.done_s >= r.sent_s for r in done)


def test_open_loop_sends_without_waiting_and_records_errors() -> None:
    target = EchoTarget(delay_s=0.05)
    x, y = _data()
    x[:, 0] = 99  # every request fails
    run = asyncio.run(
        open_loop(target, x, y, rate_rps=400.0, duration_s=0.5, max_requests=100, seed=3)
    )
    assert run.records, "requests were sent"
    assert not run.completed
    assert all(r.error.startswith("RuntimeError") for r in run.records)
    # open loop: many requests overlap because nobody waits for answers
    assert target.max_in_flight > 5
    assert run.wall_s < 3.0


def test_request_order_is_a_seeded_pass_over_every_input() -> None:
    one_pass = request_order(100, 100, seed=4)
    assert sorted(one_pass.tolist()) == list(range(100))
    assert np.array_equal(one_pass, request_order(100, 100, seed=4))
    longer = request_order(100, 250, seed=4)
    assert np.array_equal(longer[:100], one_pass) and np.array_equal(longer[100:200], one_pass)


def test_closed_loop_default_sends_each_input_once() -> None:
    target = EchoTarget()
    x, y = _data(40)
    run = asyncio.run(closed_loop(target, x, y, concurrency=4, duration_s=10.0, max_requests=40))
    assert len(run.records) == 40
    labels_seen = sorted(int(r.correct) for r in run.records)
    assert sum(labels_seen) == sum(int(x[i, 0]) == int(y[i]) for i in range(40))


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_progress_is_reported_in_steps_that_add_up_to_every_request(mode: str) -> None:
    x, y = _data(200)
    steps: list[int] = []
    common: dict[str, Any] = {"duration_s": 30, "max_requests": 200, "on_progress": steps.append}
    if mode == "closed":
        run = asyncio.run(closed_loop(EchoTarget(), x, y, concurrency=8, **common))
    else:
        run = asyncio.run(open_loop(EchoTarget(), x, y, rate_rps=20_000.0, **common))
    assert sum(steps) == len(run.records) == 200
    # a bar update per request would be metered as serving work: updates come in steps
    assert len(steps) < 20
