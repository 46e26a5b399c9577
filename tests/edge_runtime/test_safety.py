"""The safety layer implements every controller-side row of the fault model (fake clock)."""

from __future__ import annotations

import numpy as np
import pytest

from factoryfloor.edge_runtime.safety import SafetyConfig, SafetyLayer, State
from factoryfloor.robots import get_robot_spec, robot_names

PERIOD, HOLD = 0.04, 0.02


def layer(**overrides) -> SafetyLayer:
    cfg = {
        "low": -np.ones(4, np.float32), "high": np.ones(4, np.float32),
        "max_change": np.full(4, 2.0, np.float32), "control_period_s": PERIOD,
        "hold_window_s": HOLD, **overrides,
    }  # fmt: skip
    return SafetyLayer(SafetyConfig(**cfg))


A = np.array([0.5, -0.5, 0.1, 1.0], np.float32)


def test_fresh_actions_run_and_a_missing_one_is_held_within_the_window():
    s = layer()
    assert s.decide(0.0, A).state is State.RUNNING
    d = s.decide(PERIOD, None)  # one missing action: hold the last one
    assert d.state is State.HOLD and np.array_equal(d.command, A)
    assert s.decide(PERIOD + HOLD, None).state is State.HOLD  # still inside the window
    assert s.decide(2 * PERIOD, A).state is State.RUNNING  # a fresh action: back to RUNNING


def test_hold_window_spent_brakes_then_standstill_latches_fault_until_rearm():
    s = layer()
    s.decide(0.0, A)
    d = s.decide(PERIOD + HOLD + 1e-6, None)
    assert d.state is State.BRAKING and d.command is None and "hold window" in d.reason
    assert s.brake_started_s == pytest.approx(PERIOD + HOLD + 1e-6)
    assert s.decide(0.1, A).state is State.BRAKING  # fresh actions do not stop braking
    s.standstill(0.2)
    assert s.state is State.FAULT and s.counters.faults == 1
    assert s.decide(0.3, A).state is State.FAULT  # latched
    s.rearm(1.0)
    assert s.state is State.ARMED
    assert s.decide(1.0, A).state is State.RUNNING


def test_no_action_ever_after_arming_brakes_too():
    s = layer()
    assert s.decide(0.01, None).state is State.ARMED  # stands still (zero command)
    assert np.array_equal(s.decide(0.02, None).command, np.zeros(4))
    assert s.decide(PERIOD + HOLD + 0.001, None).state is State.BRAKING


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_are_missing_and_k_in_a_row_brake(bad):
    s = layer(nonfinite_limit=3)
    s.decide(0.0, A)
    broken = A.copy()
    broken[1] = bad
    for i in (1, 2):
        d = s.decide(i * 0.001, broken)
        assert d.state is State.HOLD and np.array_equal(d.command, A)  # the last good one
    assert s.decide(0.003, broken).state is State.BRAKING
    assert s.counters.nonfinite == 3 and "non-finite" in s.reason


def test_a_good_action_resets_the_non_finite_run():
    s = layer(nonfinite_limit=2)
    s.decide(0.0, A)
    nan = np.full(4, np.nan, np.float32)
    for t in range(11):  # nan, good, nan, good, ...: never 2 in a row
        s.decide(t * 0.01, nan if t % 2 else A)
    assert s.state is State.RUNNING and s.counters.nonfinite == 5


def test_out_of_limit_actions_are_clipped_and_flagged_and_persistent_clipping_brakes():
    s = layer(clip_limit=3)
    d = s.decide(0.0, np.array([2.0, -3.0, 0.0, 1.0], np.float32))
    assert d.clipped and np.array_equal(d.command, [1.0, -1.0, 0.0, 1.0])
    assert not s.decide(0.01, A).clipped  # ends the run
    for t in (0.02, 0.03):
        assert s.decide(t, np.full(4, 5.0, np.float32)).state is State.RUNNING
    d = s.decide(0.04, np.full(4, 5.0, np.float32))
    assert d.state is State.BRAKING and "clipped 3 cycles" in d.reason


def test_rate_limit_bounds_the_change_per_cycle():
    s = layer(max_change=np.full(4, 0.25, np.float32))
    d = s.decide(0.0, np.ones(4, np.float32))
    assert np.allclose(d.command, 0.25) and d.clipped  # from the standing-still zero command
    d = s.decide(0.04, np.ones(4, np.float32))
    assert np.allclose(d.command, 0.5)


def test_overruns_in_a_row_brake_and_an_on_time_cycle_resets_them():
    s = layer(overrun_limit=3)
    s.decide(0.0, A)
    assert s.overrun(0.01) is None and s.overrun(0.02) is None
    s.on_time()
    assert s.overrun(0.03) is None and s.overrun(0.04) is None
    d = s.overrun(0.05)
    assert d is not None and d.state is State.BRAKING and "overruns" in d.reason


def test_config_rejects_inconsistent_limits():
    with pytest.raises(ValueError, match="low <= high"):
        layer(low=np.ones(4), high=-np.ones(4))
    with pytest.raises(ValueError, match="one shape"):
        layer(max_change=np.ones(3))
    with pytest.raises(ValueError, match="control_period_s"):
        layer(control_period_s=0.0)


@pytest.mark.parametrize("robot", robot_names())
@pytest.mark.parametrize("control", ["ee", "joints"])
def test_full_range_step_is_spread_over_the_periods_the_robot_limits_allow(robot, control):
    spec = get_robot_spec(robot)
    size = 4 if control == "ee" else spec.n_arm + 1
    period = 0.04  # 25 Hz, the tasks' rate
    cfg = SafetyConfig.for_robot(
        spec, control, -np.ones(size), np.ones(size), period, acceleration=True, clip_limit=1_000
    )
    step = spec.max_ee_step_m if control == "ee" else spec.max_joint_step_rad
    if control == "ee":
        accel = np.full(3, spec.max_tcp_acceleration_m_s2)
    else:
        accel = np.array([lim.acceleration for lim in spec.limits])
    np.testing.assert_allclose(cfg.max_change[:-1], accel * period**2 / step, rtol=1e-6)
    layer = SafetyLayer(cfg)
    target = np.ones(size, np.float32)  # a full-range step from standstill
    commands = [layer.decide(0.001 * k, target).command for k in range(1, 40)]
    arm = np.array([c[:-1] for c in commands])
    changes = np.abs(np.diff(np.vstack([np.zeros(size - 1), arm]), axis=0))
    assert np.all(changes <= cfg.max_change[:-1] + 1e-6)  # never faster than the limits
    # the step takes as many periods as acceleration allows, then holds the speed bound
    periods = int(np.ceil(np.min(np.minimum(1.0, cfg.high[:-1]) / cfg.max_change[:-1])))
    assert periods >= 2
    speed = np.abs(arm[-1]) * step / period  # m/s of the TCP or rad/s of each joint
    if control == "ee":
        assert np.linalg.norm(speed[:3]) <= spec.max_tcp_speed_m_s * (1 + 1e-5)
        assert np.linalg.norm(speed[:3]) >= 0.99 * min(
            spec.max_tcp_speed_m_s, np.sqrt(3) * step / period
        )
    else:
        vmax = np.array([lim.velocity for lim in spec.limits])
        assert np.all(speed <= vmax * (1 + 1e-5))
        np.testing.assert_allclose(speed, np.minimum(vmax, step / period), rtol=1e-5)
    assert commands[0][-1] == 1.0  # the gripper's command is not rate-limited here


def test_for_robot_refuses_an_action_of_another_size():
    with pytest.raises(ValueError, match="no action of shape"):
        SafetyConfig.for_robot(get_robot_spec("panda"), "ee", -np.ones(8), np.ones(8), 0.04)


@pytest.mark.parametrize("robot", robot_names())
@pytest.mark.parametrize("control", ["ee", "joints"])
def test_by_default_the_velocity_limits_bound_every_command(robot, control):
    spec = get_robot_spec(robot)
    size = 4 if control == "ee" else spec.n_arm + 1
    period = 0.04
    cfg = SafetyConfig.for_robot(
        spec, control, -np.ones(size), np.ones(size), period, clip_limit=1_000
    )
    np.testing.assert_allclose(cfg.max_change, 2.0)  # no acceleration limit by default
    layer = SafetyLayer(cfg)
    step = spec.max_ee_step_m if control == "ee" else spec.max_joint_step_rad
    rng = np.random.default_rng(0)
    for k in range(200):  # commands anywhere in the action range, even full-range jumps
        command = layer.decide(0.001 * k, rng.choice([-1.0, 1.0], size).astype(np.float32))
        speed = np.abs(command.command[:-1]) * step / period  # m/s or rad/s
        if control == "ee":
            assert np.linalg.norm(speed[:3]) <= spec.max_tcp_speed_m_s * (1 + 1e-5)
        else:
            assert np.all(speed <= [lim.velocity * (1 + 1e-5) for lim in spec.limits])
