"""The belt conveyor carries a resting part at the belt speed."""

from __future__ import annotations

import numpy as np
import pytest

from factoryfloor.sim.backend import PyBullet
from factoryfloor.sim.scene import (
    BELT_TOP_Z_M,
    PART_SHAPES,
    Conveyor,
    ConveyorConfig,
    add_part,
    add_table,
)
from factoryfloor.sim.tasks.base import Randomization

SPEEDS = Randomization().conveyor_speed_m_s  # both ends of the randomised range (m/s)
SETTLE_S, MEASURE_S = 0.5, 2.0


@pytest.fixture
def sim():
    world = PyBullet()
    yield world
    world.close()


def _run(sim: PyBullet, conveyor: Conveyor, seconds: float) -> float:
    """Step for ``seconds`` (rounded to control steps); returns the simulated time (s)."""
    dt = sim.physics.control_dt_s
    steps = round(seconds / dt)
    for _ in range(steps):
        sim.step()
        conveyor.update()
    return steps * dt


@pytest.mark.parametrize("shape", sorted(PART_SHAPES))
@pytest.mark.parametrize("speed", SPEEDS)
def test_conveyor_carries_part_at_belt_speed(sim, speed, shape):
    add_table(sim)
    conveyor = Conveyor(sim, ConveyorConfig())
    conveyor.start(speed)
    x0, y0 = conveyor.config.center_xy_m
    half_height = PART_SHAPES[shape][1]
    start_xyz = np.array([x0, y0 - 0.5, BELT_TOP_Z_M + half_height])  # upstream end of the belt
    assert add_part(sim, "part", shape, start_xyz, 0) == half_height
    _run(sim, conveyor, SETTLE_S)
    start = sim.get_base_position("part").copy()
    # Resting on the belt after settling (within 2 mm of the belt top), moving with it.
    assert start[2] == pytest.approx(BELT_TOP_Z_M + half_height, abs=0.002)
    assert sim.get_base_velocity("part")[1] == pytest.approx(speed, rel=0.03)
    elapsed = _run(sim, conveyor, MEASURE_S)
    assert elapsed == pytest.approx(MEASURE_S, abs=sim.physics.control_dt_s)
    moved = sim.get_base_position("part") - start
    assert moved[1] == pytest.approx(speed * elapsed, rel=0.03)
    assert abs(moved[0]) < 0.005, f"lateral drift {moved[0] * 1e3:.2f} mm"
    assert abs(moved[2]) < 0.005, f"vertical drift {moved[2] * 1e3:.2f} mm"
    # The belt joint wrapped many times and stayed within its travel.
    q = sim.get_joint_states("conveyor", [conveyor.joint])[0][0]
    assert 0.0 <= q < conveyor.config.wrap_m + speed * sim.physics.control_dt_s


def test_stopped_belt_holds_part(sim):
    add_table(sim)
    conveyor = Conveyor(sim, ConveyorConfig())
    conveyor.start(0.0)
    x0, y0 = conveyor.config.center_xy_m
    add_part(sim, "part", "cube", np.array([x0, y0, BELT_TOP_Z_M + PART_SHAPES["cube"][1]]), 0)
    _run(sim, conveyor, SETTLE_S)
    start = sim.get_base_position("part").copy()
    _run(sim, conveyor, 1.0)
    assert np.linalg.norm(sim.get_base_position("part") - start) < 0.001


def test_set_speed_changes_speed_without_restart(sim):
    add_table(sim)
    conveyor = Conveyor(sim, ConveyorConfig())
    conveyor.start(SPEEDS[0])
    x0, y0 = conveyor.config.center_xy_m
    z = BELT_TOP_Z_M + PART_SHAPES["cube"][1]
    add_part(sim, "part", "cube", np.array([x0, y0 - 0.5, z]), 0)
    _run(sim, conveyor, SETTLE_S)
    conveyor.set_speed(SPEEDS[1])
    assert conveyor.speed_m_s == SPEEDS[1]
    _run(sim, conveyor, SETTLE_S)
    start = sim.get_base_position("part").copy()
    elapsed = _run(sim, conveyor, 1.0)
    moved = sim.get_base_position("part") - start
    assert moved[1] == pytest.approx(SPEEDS[1] * elapsed, rel=0.03)
