"""A loop k times faster than the policy (docs/protocol.md, section 7): MultiRateRuntime."""

from __future__ import annotations

import numpy as np
import pytest
from edge_helpers import ACT, OBS, LinearPolicy, running_server

from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import ControllerStatus, RobotController
from factoryfloor.edge_runtime.multirate import MultiRateRuntime
from factoryfloor.edge_runtime.spec import PolicySpec

SPEC = PolicySpec(task_id="test/Task-v0", robot="panda", control_rate_hz=20.0,
                  observation=OBS, action=ACT, model_sha256="ab" * 32)  # fmt: skip
K = 5  # a 100 Hz loop under a 20 Hz policy


class SlowPolicy(LinearPolicy):
    spec = SPEC


class PointRobot(RobotController):
    """Integrates the commands it gets: ``apply_step`` moves it by ``fraction * action``."""

    description = SPEC

    def __init__(self) -> None:
        self.position = np.zeros(2)
        self.steps: list[float] = []
        self.reads = self.brakes = 0

    def read_state(self) -> tuple[np.ndarray, bool]:
        self.reads += 1
        return np.full(6, 5.0, np.float32), self.reads == 1  # the policy answers 0.5, 0.5

    def apply_action(self, action: np.ndarray) -> None:
        raise AssertionError("a multi-rate loop applies steps, not whole actions")

    def apply_step(self, action: np.ndarray, fraction: float) -> None:
        self.position += fraction * action
        self.steps.append(fraction)

    def hold(self, action: np.ndarray) -> None:
        pass

    def brake(self) -> None:
        self.brakes += 1

    def status(self) -> ControllerStatus:
        return ControllerStatus(standstill=self.brakes > 0)


def test_each_action_is_spread_over_the_loop_cycles_of_one_policy_period():
    robot = PointRobot()
    with running_server(SlowPolicy()) as server:
        client = EdgeClient(server.endpoint)
        runtime = MultiRateRuntime(robot, client, K, hold_window_s=0.05)
        welcome = runtime.rearm()
        assert welcome["loop_rate_hz"] == K * SPEC.control_rate_hz
        (session,) = server.sessions.values()
        assert session.loop_rate_hz == 100.0
        report = runtime.run(max_cycles=200)  # 2 s of loop, 40 policy periods
        client.close()
    assert report.state == "RUNNING" and report.loop["rate_hz"] == pytest.approx(100.0)
    assert robot.reads == 40  # one observation every K-th cycle
    fresh = report.safety["fresh"]
    assert fresh >= 36 and report.client["counters"]["actions_accepted"] == fresh
    assert set(robot.steps) == {1.0 / K}
    # the robot moved by one whole action (0.5 per axis) per policy period it was commanded
    periods = len(robot.steps) / K
    assert np.allclose(robot.position, 0.5 * periods, rtol=1e-6)


def test_a_silent_server_brakes_after_the_hold_window_in_time():
    robot = PointRobot()
    policy = SlowPolicy()
    with running_server(policy) as server:
        client = EdgeClient(server.endpoint)
        runtime = MultiRateRuntime(robot, client, K, hold_window_s=0.03)
        runtime.rearm()
        runtime.run(max_cycles=20)
        server.stop_event.set()  # the server stops answering
        report = runtime.run(max_cycles=100)
        client.close()
    assert report.state == "FAULT" and "hold window" in report.reason
    # detected after one policy period (50 ms) plus the hold window (30 ms), not a loop period
    assert 0.05 + 0.03 - 0.002 <= report.fault_detected_after_s <= 0.05 + 0.03 + 0.05
    assert robot.brakes >= 1


def test_an_adapter_without_apply_step_or_a_bad_multiple_is_refused():
    class SingleRate(PointRobot):
        apply_step = RobotController.apply_step

    with running_server(SlowPolicy()) as server:
        client = EdgeClient(server.endpoint)
        with pytest.raises(ValueError, match="apply_step"):
            MultiRateRuntime(SingleRate(), client, K)
        for bad in (0, 101, True):
            with pytest.raises(ValueError, match=r"1\.\.100"):
                MultiRateRuntime(PointRobot(), client, bad)
        client.close()
