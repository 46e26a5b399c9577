"""A FAULT explained: who was late (the controller's loop, its own work, or the server)."""

from __future__ import annotations

from factoryfloor.edge_runtime.fault_trace import CycleTrace, explain


def cycle(**kw) -> CycleTrace:
    base = {"gap_ms": 40.0, "started_late_ms": 0.1, "work_ms": 1.0, "waited_ms": 20.0,
            "answered": False, "state": "BRAKING", "since_fresh_ms": 61.0}  # fmt: skip
    return CycleTrace(**{**base, **kw})


def test_a_late_server_is_named_with_its_answer_time_and_the_window():
    text = explain([cycle(answered=True, state="RUNNING"), cycle()], 40.0, 20.0, 75.3)
    assert text.startswith("no valid action for 61.0 ms (window 60 ms = 40 ms period + 20 ms hold)")
    assert "the policy server was late: its answer came after 75.3 ms" in text


def test_a_stalled_controller_loop_is_named():
    text = explain([cycle(gap_ms=117.0, waited_ms=0.0, since_fresh_ms=117.1)], 40.0, 20.0, 42.5)
    assert "the controller was late: its loop ran no cycle for 117.0 ms (77.0 ms more" in text


def test_slow_controller_work_and_a_silent_server():
    assert "its own work took 30.0 ms" in explain([cycle(work_ms=30.0)], 40.0, 20.0)
    assert "no answer came from the policy server" in explain([cycle()], 40.0, 20.0)
    assert explain([], 40.0, 20.0) == "no cycle was traced"
