"""The fixed-rate loop paces on the monotonic clock and counts misses (fake clock)."""

from __future__ import annotations

import pytest

from factoryfloor.edge_runtime.loop import FixedRateLoop


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def make_loop(rate_hz: float = 100.0) -> tuple[FixedRateLoop, FakeClock]:
    clock = FakeClock()
    loop = FixedRateLoop(rate_hz, clock=clock, sleep=clock.sleep, spin_s=0.0)
    return loop, clock


def test_cycles_are_due_every_period_with_no_drift():
    loop, clock = make_loop(100.0)
    dues = []
    for _ in range(5):
        due, overran = loop.wait_next()
        dues.append(due)
        assert not overran
        clock.t += 0.003  # 3 ms of work per 10 ms cycle
    assert dues == pytest.approx([100.0 + 0.01 * k for k in range(5)])
    assert loop.stats.missed == 0 and loop.stats.miss_rate == 0.0


def test_an_overrun_is_counted_and_skipped_cycles_are_not_made_up():
    loop, clock = make_loop(100.0)
    loop.wait_next()
    clock.t += 0.035  # work overran 3 more due times
    due, overran = loop.wait_next()
    assert overran and due == pytest.approx(100.04)
    assert loop.stats.overruns == 1 and loop.stats.skipped == 3
    assert loop.stats.missed == 4 and loop.stats.longest_miss_run == 4
    assert loop.stats.miss_rate == pytest.approx(4 / (2 + 3))
    clock.t += 0.001
    assert loop.wait_next() == (pytest.approx(100.05), False)
    assert loop.stats.current_miss_run == 0


def test_rate_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        FixedRateLoop(0.0)
