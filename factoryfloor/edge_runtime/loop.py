"""A fixed-rate loop on the monotonic clock that counts its deadline misses honestly.

Cycle ``k`` is due at ``t0 + k * period``. ``wait_next()`` sleeps until the next due time
(``time.sleep`` to ``spin_s`` before it, then a short busy-wait for precision) and reports
whether the previous cycle overran: its work ended after the next due time. Overrun cycles are
not made up by a burst: the loop skips to the next due time still ahead and counts every skipped
cycle as missed. The clock and the sleep are injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from factoryfloor.edge_runtime.metrics import LatencyStats


@dataclass
class LoopStats:
    """Timing of a loop so far.

    Attributes:
        cycles: Cycles run.
        overruns: Cycles whose work ended after the next cycle was due.
        skipped: Cycles never run because an overrun went past their due time.
        longest_miss_run: Most consecutive missed cycles (an overrun and the cycles it skipped).
        lateness: How late each cycle started after its due time (s).
    """

    cycles: int = 0
    overruns: int = 0
    skipped: int = 0
    longest_miss_run: int = 0
    current_miss_run: int = 0

    def __post_init__(self) -> None:
        self.lateness = LatencyStats()

    @property
    def missed(self) -> int:
        """Cycles that missed their deadline: overruns plus skipped cycles."""
        return self.overruns + self.skipped

    @property
    def miss_rate(self) -> float:
        """Missed cycles over the cycles that were due."""
        return self.missed / max(1, self.cycles + self.skipped)


class FixedRateLoop:
    """Paces a control loop at ``rate_hz``.

    Args:
        rate_hz: Cycles per second.
        clock: Monotonic clock in seconds.
        sleep: Sleep function (s).
        spin_s: Busy-wait this long before each due time instead of sleeping (s).
    """

    def __init__(
        self,
        rate_hz: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        spin_s: float = 0.0002,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz={rate_hz}: use a positive rate")
        self.period_s = 1.0 / rate_hz
        self.clock, self.sleep, self.spin_s = clock, sleep, spin_s
        self.stats = LoopStats()
        self.next_due_s: float | None = None

    def wait_next(self) -> tuple[float, bool]:
        """Wait for the next cycle; returns (its due time (s), whether the last cycle overran)."""
        now = self.clock()
        if self.next_due_s is None:
            self.next_due_s = now
            overran = False
        else:
            overran = now > self.next_due_s
            if overran:
                skipped = int((now - self.next_due_s) // self.period_s) + 1  # due times passed
                self.next_due_s += skipped * self.period_s
                self._missed(skipped)
            else:
                self.stats.current_miss_run = 0
            self._sleep_until(self.next_due_s)
        due = self.next_due_s
        self.stats.lateness.add(max(0.0, self.clock() - due))
        self.stats.cycles += 1
        self.next_due_s = due + self.period_s
        return due, overran

    def _missed(self, skipped: int) -> None:
        self.stats.overruns += 1
        self.stats.skipped += skipped
        self.stats.current_miss_run += 1 + skipped
        self.stats.longest_miss_run = max(self.stats.longest_miss_run, self.stats.current_miss_run)

    def _sleep_until(self, due_s: float) -> None:
        remaining = due_s - self.clock()
        if remaining > self.spin_s:
            self.sleep(remaining - self.spin_s)
        while self.clock() < due_s:
            pass
