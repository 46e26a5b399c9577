"""ControllerRuntime end to end with a stand-in robot: bad actions from the server are met by the
safety layer (NaN, out of limits, too old), and the loop reports what happened."""

from __future__ import annotations

import time

import numpy as np
from edge_helpers import ACT, OBS, LinearPolicy, running_server

from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import (
    ControllerRuntime,
    ControllerStatus,
    RobotController,
)
from factoryfloor.edge_runtime.spec import PolicySpec


class RecordingRobot(RobotController):
    """Records every command; stands still as soon as it brakes."""

    description = PolicySpec(
        task_id="test/Task-v0", robot="panda", control_rate_hz=100.0, observation=OBS, action=ACT
    )

    def __init__(self) -> None:
        self.applied: list[np.ndarray] = []
        self.held = self.brakes = 0

    def read_state(self) -> tuple[np.ndarray, bool]:
        return np.full(6, 5.0, np.float32), not self.applied

    def apply_action(self, action: np.ndarray) -> None:
        self.applied.append(action.copy())

    def hold(self, action: np.ndarray) -> None:
        self.held += 1

    def brake(self) -> None:
        self.brakes += 1

    def status(self) -> ControllerStatus:
        return ControllerStatus(standstill=self.brakes > 0)


def run(policy, cycles=50, **server_config):
    robot = RecordingRobot()
    with running_server(policy, **server_config) as server:
        client = EdgeClient(server.endpoint)
        runtime = ControllerRuntime(robot, client, hold_window_s=0.02)
        runtime.rearm()
        report = runtime.run(max_cycles=cycles)
        client.close()
    return robot, report


def test_a_healthy_policy_runs_every_cycle_at_the_rate():
    robot, report = run(LinearPolicy(), cycles=50)
    assert report.state == "RUNNING" and report.loop["cycles"] == 50
    # every cycle gets its action in time unless the machine stalls the server for > 8 ms
    assert len(robot.applied) == report.safety["fresh"] >= 45
    # obs 5.0 -> action 0.5 each, within limits, so nothing is clipped
    assert np.allclose(robot.applied[-1], 0.5) and report.safety["clipped"] == 0


def test_non_finite_actions_are_treated_as_missing_then_brake_and_latch():
    class NanPolicy(LinearPolicy):
        def act_batch(self, sessions, obs):
            return np.full((len(obs), 2), np.nan, np.float32)

    robot, report = run(NanPolicy())
    assert report.state == "FAULT" and "non-finite" in report.reason
    assert robot.applied == [] and robot.brakes >= 1
    assert report.safety["nonfinite"] == 3


def test_out_of_limit_actions_are_clipped_and_persistent_clipping_brakes():
    class WildPolicy(LinearPolicy):
        def act_batch(self, sessions, obs):
            return np.full((len(obs), 2), 7.0, np.float32)

    robot, report = run(WildPolicy(), cycles=100)
    assert report.state == "FAULT" and "clipped 25 cycles" in report.reason
    assert len(robot.applied) == 24 and all(np.all(a == 1.0) for a in robot.applied)


def test_actions_older_than_the_max_age_are_refused_and_the_robot_brakes():
    robot, report = run(LinearPolicy(delay_s=0.004), max_action_age_ms=2.0)  # late, not lost
    assert report.state == "FAULT" and "hold window" in report.reason
    assert robot.applied == []
    assert report.client["counters"].get("actions_too_old", 0) >= 1


def test_fault_detection_time_is_the_period_plus_the_hold_window():
    class Silent(LinearPolicy):
        calls = 0

        def act_batch(self, sessions, obs):
            Silent.calls += 1
            if Silent.calls > 10:
                time.sleep(0.5)  # the server goes silent after 10 answers
            return super().act_batch(sessions, obs)

    robot, report = run(Silent(), cycles=40)
    assert report.state == "FAULT" and len(robot.applied) <= 10
    # detected one period plus the hold window after the last fresh action (+ scheduling slack;
    # the lower bound allows 2 ms: the fresh action is stamped when applied, the check at a
    # cycle's start)
    assert 0.01 + 0.02 - 0.002 <= report.fault_detected_after_s <= 0.01 + 0.02 + 0.03
    # the report keeps the last cycles; the faulting one got no answer
    assert report.trace and report.trace[-1]["state"] == "BRAKING"
    assert not report.trace[-1]["answered"] and report.trace[0]["answered"]


def test_a_slow_cycle_keeps_back_more_of_the_period_so_a_late_server_cannot_make_it_miss():
    """The wait for the answer ends early enough for the cycle's own (measured) work."""

    class SlowRobot(RecordingRobot):
        def apply_action(self, action: np.ndarray) -> None:
            super().apply_action(action)
            t_end = time.monotonic() + 0.004  # 4 ms of the 10 ms period after the answer
            while time.monotonic() < t_end:
                pass

    robot = SlowRobot()
    with running_server(LinearPolicy()) as server:
        client = EdgeClient(server.endpoint)
        runtime = ControllerRuntime(robot, client, hold_window_s=0.02)
        period = runtime.loop.period_s
        early = runtime.safety.hold_deadline_s - 1.0  # a due time far from the hold deadline
        assert runtime.wait_until(early) == early + 0.8 * period  # the 20% floor at first
        runtime.rearm()
        runtime.run(max_cycles=10)
        client.close()
    assert len(robot.applied) >= 1
    assert runtime.tail_s >= 0.004  # the work after the wait was measured
    due = runtime.safety.hold_deadline_s - 1.0  # a due time far from the hold deadline
    reserve = due + period - runtime.wait_until(due)
    assert reserve >= 0.004  # ... and kept back from the wait (at most half the period)
    assert reserve <= 0.5 * period + 1e-9  # (monotonic seconds: rounding of ~1e-12)
