"""Task options passed through gymnasium.make(..., task_options=...)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import factoryfloor  # noqa: F401


@pytest.mark.parametrize("speed", [0.07, 0.13])
def test_belt_speed_option_sets_the_speed_parts_travel_at(speed):
    env = gym.make("factoryfloor/ConveyorPick-v0", task_options={"belt_speed_m_s": speed})
    obs, _ = env.reset(seed=0)
    assert obs["observation"][-1] == pytest.approx(speed)
    hold = np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32)
    for _ in range(10):  # let the parts settle on the belt
        obs, *_ = env.step(hold)
    y0 = obs["observation"][7:-1].reshape(-1, 6)[:, 1].copy()
    steps = 25
    for _ in range(steps):
        obs, *_ = env.step(hold)
    y1 = obs["observation"][7:-1].reshape(-1, 6)[:, 1]
    dt = env.unwrapped.sim.physics.control_dt_s
    np.testing.assert_allclose(y1 - y0, speed * steps * dt, rtol=0.03)
    env.close()


def test_unknown_or_bad_task_option_is_refused_clearly():
    with pytest.raises(ValueError, match="belt_speed_m_s"):
        gym.make("factoryfloor/ConveyorPick-v0", task_options={"belt_speed_m_s": -1.0})
    # An option the task does not take is refused by the env's checks, before any world exists.
    with pytest.raises(ValueError, match=r"belt_speed.*takes no options"):
        gym.make("factoryfloor/PickPlace-v0", task_options={"belt_speed_m_s": 0.1})
