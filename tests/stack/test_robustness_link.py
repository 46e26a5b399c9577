"""The simulated wire of the robustness report follows the edge runtime's hold and age rules."""

from __future__ import annotations

import numpy as np
import pytest

from factoryfloor.edge_runtime.safety import SafetyConfig, SafetyLayer, State
from factoryfloor.stack.robustness.link import LinkModel, SimulatedLink

PERIOD = 0.040  # 25 Hz, the tasks' control rate


def _safety(hold_window_s: float = 0.020) -> SafetyLayer:
    config = SafetyConfig(
        low=-np.ones(2, np.float32), high=np.ones(2, np.float32),
        max_change=np.full(2, 2.0, np.float32), control_period_s=PERIOD,
        hold_window_s=hold_window_s,
    )  # fmt: skip
    return SafetyLayer(config)


class Script(LinkModel):
    """Delays (s) or losses (None) in order: a link whose every answer the test chooses."""

    def __init__(self, delays: list[float | None]) -> None:
        super().__init__()
        object.__setattr__(self, "_delays", list(delays))

    def arrival_delay_s(self, rng: np.random.Generator) -> float | None:
        return self._delays.pop(0)  # type: ignore[attr-defined, no-any-return]


def _run(model: LinkModel, cycles: int, hold_window_s: float = 0.020, max_age_s: float = 0.050):
    """States and the answer index applied per cycle (answer k's value is k)."""
    safety = _safety(hold_window_s)
    link = SimulatedLink(model, safety, PERIOD, max_age_s, np.random.default_rng(0))
    states, applied = [], []
    for k in range(cycles):
        now = k * PERIOD
        if safety.state in (State.BRAKING, State.FAULT):
            decision = safety.decide(now, None)
        else:
            action, at = link.exchange(now, np.array([k / 100, 0.0], np.float32))
            decision = safety.decide(at, action)
        states.append(decision.state)
        applied.append(None if decision.command is None else round(decision.command[0] * 100))
    return states, applied, link.counts


def test_a_prompt_answer_is_applied_in_its_own_cycle():
    states, applied, counts = _run(LinkModel(latency_s=0.001), 5)
    assert states == [State.RUNNING] * 5 and applied == [0, 1, 2, 3, 4]
    assert counts["taken"] == 5 and counts["lost"] == 0


def test_one_period_late_answers_run_one_cycle_behind():
    # each answer misses its own cycle's deadline (0.8 period) and is taken in the next one,
    # 40 ms old, under the 50 ms max age: the cell runs one period behind, never braking
    states, applied, _ = _run(LinkModel(latency_s=PERIOD), 6)
    assert states[0] is State.ARMED and states[1:] == [State.RUNNING] * 5
    assert applied[1:] == [0, 1, 2, 3, 4]


def test_two_periods_late_is_too_old_and_brakes_as_the_runtime_does():
    states, _, _ = _run(LinkModel(latency_s=2 * PERIOD), 4)
    assert State.BRAKING in states
    longer = _run(LinkModel(latency_s=2 * PERIOD), 6, hold_window_s=0.1, max_age_s=0.1)
    assert State.BRAKING not in longer[0] and longer[1][-1] == 3  # 2 cycles behind


def test_one_lost_answer_spends_a_20_ms_hold_window_at_25_hz():
    # the hold deadline (last fresh + period + hold window) passes before the next answer
    states, _, counts = _run(Script([0.001, None, 0.001, 0.001]), 4)
    assert states[:2] == [State.RUNNING, State.BRAKING] and counts["lost"] == 1
    # with a hold window longer than a period the cell holds the last command, then goes on
    states, applied, _ = _run(Script([0.001, None, 0.001, 0.001]), 4, hold_window_s=0.05)
    assert states == [State.RUNNING, State.HOLD, State.RUNNING, State.RUNNING]
    assert applied == [0, 0, 2, 3]


def test_answers_that_overtake_each_other_leave_the_older_one_stale():
    # answer 0 comes after answer 1 (both late): the newer one is taken, the older dropped
    states, applied, counts = _run(
        Script([0.075, 0.030, 0.001, 0.001]), 4, hold_window_s=0.05, max_age_s=0.08
    )
    assert applied[1] == 1 and counts["stale"] == 1
    assert states[2:] == [State.RUNNING, State.RUNNING]


def test_the_default_link_and_its_bounds():
    rng = np.random.default_rng(1)
    assert LinkModel().arrival_delay_s(rng) == 0.0
    lost = [LinkModel(drop_rate=0.25).arrival_delay_s(rng) is None for _ in range(4000)]
    assert np.mean(lost) == pytest.approx(0.25, abs=0.03)
    delays = [LinkModel(0.01, 0.02).arrival_delay_s(rng) for _ in range(2000)]
    assert min(delays) >= 0.01 and max(delays) <= 0.03  # type: ignore[type-var, operator]
    for bad in ({"latency_s": -1.0}, {"jitter_s": float("nan")}, {"drop_rate": 1.5}):
        with pytest.raises(ValueError):
            LinkModel(**bad)  # type: ignore[arg-type]
