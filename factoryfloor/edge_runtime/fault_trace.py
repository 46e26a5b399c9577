"""Why a control loop faulted: the last cycles' timings, and who was late against which window.

``ControllerRuntime`` keeps a ``CycleTrace`` of its last few cycles (a bounded deque, a few
clock reads per cycle). When FAULT latches, ``explain`` turns them into one sentence: whether
the controller's own cycle started late (its process did not get the CPU), its own work took
long, or the policy server's answer did not arrive within the window, and by how much.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

TRACE_CYCLES = 8


class CycleTrace(NamedTuple):
    """One control cycle's timings (ms), relative to its due time.

    A NamedTuple, not a dataclass: one is made every control cycle, on the hot path.

    Attributes:
        gap_ms: Time since the previous cycle began (ms): about one period, unless the loop
            stalled (skipped cycles are re-aligned to the next due time).
        started_late_ms: When the cycle began its work, after its due time (ms).
        work_ms: Reading the state and sending the observation (ms).
        waited_ms: Waiting for the policy's answer (ms).
        answered: Whether a valid action arrived in time.
        state: The safety layer's decision (``RUNNING``, ``HOLD``, ``BRAKING``, ...).
        since_fresh_ms: Time since the last fresh action was applied, at the decision (ms).
    """

    gap_ms: float
    started_late_ms: float
    work_ms: float
    waited_ms: float
    answered: bool
    state: str
    since_fresh_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        """Rounded, JSON-ready values."""
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in self._asdict().items()}


def explain(
    trace: Sequence[CycleTrace],
    period_ms: float,
    hold_window_ms: float,
    late_answer_ms: float | None = None,
) -> str:
    """One sentence: who was late, by how much, against which window.

    Args:
        trace: The last cycles, oldest first; the last one is the faulting cycle.
        period_ms: Control period (ms).
        hold_window_ms: The safety layer's hold window (ms).
        late_answer_ms: Round trip of the answer that came after the fault, if one came (ms).
    """
    if not trace:
        return "no cycle was traced"
    last = trace[-1]
    window = period_ms + hold_window_ms
    window_text = (
        f"window {window:.0f} ms = {period_ms:.0f} ms period + {hold_window_ms:.0f} ms hold"
    )
    since = f"{last.since_fresh_ms:.1f} ms" if last.since_fresh_ms is not None else "ever"
    stalled = last.gap_ms - period_ms
    if stalled > hold_window_ms / 2:
        who = (
            f"the controller was late: its loop ran no cycle for {last.gap_ms:.1f} ms "
            f"({stalled:.1f} ms more than a period; its process did not get the CPU)"
        )
    elif last.started_late_ms > hold_window_ms / 2 or last.work_ms > hold_window_ms / 2:
        who = (
            f"the controller was late: its cycle started {last.started_late_ms:.1f} ms after "
            f"its due time and its own work took {last.work_ms:.1f} ms (its process did not get "
            "the CPU)"
        )
    elif late_answer_ms is not None:
        who = (
            f"the policy server was late: its answer came after {late_answer_ms:.1f} ms; the "
            f"controller started on time ({last.started_late_ms:.1f} ms late) and waited "
            f"{last.waited_ms:.1f} ms"
        )
    else:
        who = (
            f"no answer came from the policy server (the controller started "
            f"{last.started_late_ms:.1f} ms late and waited {last.waited_ms:.1f} ms)"
        )
    return f"no valid action for {since} ({window_text}): {who}"
