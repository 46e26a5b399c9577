"""Domain randomisation: seeds drive belt speed, part mass and friction reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from factoryfloor.sim.tasks.base import Randomization

RANGES = Randomization()
CONVEYOR = "factoryfloor/ConveyorPick-v0"
PICK = "factoryfloor/PickPlace-v0"
SEEDS = range(5)
NOMINAL_MASS_KG = 0.1  # the part URDFs' mass; randomisation scales it


def _dynamics(env, body: str) -> tuple[float, float]:
    """Mass (kg) and lateral friction of a body's base."""
    sim = env.unwrapped.sim
    info = sim.client.getDynamicsInfo(sim.body_id(body), -1)
    return info[0], info[1]


def _belt_speed(env, seed: int) -> float:
    obs, _ = env.reset(seed=seed)
    speed = float(obs["observation"][-1])
    assert speed == pytest.approx(env.unwrapped.task.conveyor.speed_m_s, rel=1e-6)
    return speed


def test_belt_speed_varies_with_seed(make_env):
    env = make_env(CONVEYOR, randomize=True)
    speeds = [_belt_speed(env, s) for s in SEEDS]
    low, high = RANGES.conveyor_speed_m_s
    assert all(low <= v <= high for v in speeds), speeds
    assert len(set(speeds)) == len(speeds), f"seeds gave repeated speeds {speeds}"
    assert np.ptp(speeds) > 0.1 * (high - low)
    # Same seed, same speed: on the same env later, and on another env.
    other = make_env(CONVEYOR, randomize=True)
    assert [_belt_speed(other, s) for s in reversed(SEEDS)] == speeds[::-1]


def test_belt_speed_fixed_without_randomisation(make_env):
    env = make_env(CONVEYOR)
    nominal = float(np.mean(RANGES.conveyor_speed_m_s))
    assert [_belt_speed(env, s) for s in SEEDS] == [pytest.approx(nominal, rel=1e-6)] * len(SEEDS)


def _conveyor_parts(env, seed: int) -> list[tuple[float, float]]:
    env.reset(seed=seed)
    return [_dynamics(env, p) for p in env.unwrapped.task.parts]


def _pick_part(env, seed: int) -> tuple[float, float]:
    env.reset(seed=seed)
    return _dynamics(env, env.unwrapped.task.part)


@pytest.mark.parametrize(
    ("env_id", "draw"), [(CONVEYOR, _conveyor_parts), (PICK, _pick_part)], ids=["conveyor", "pick"]
)
def test_part_mass_and_friction_vary_with_seed(make_env, env_id, draw):
    env = make_env(env_id, randomize=True)
    draws = [draw(env, s) for s in SEEDS]
    pairs = np.array(draws, dtype=np.float64).reshape(-1, 2)
    masses, frictions = pairs[:, 0], pairs[:, 1]
    lo, hi = (NOMINAL_MASS_KG * s for s in RANGES.mass_scale)
    assert np.all((masses >= lo - 1e-9) & (masses <= hi + 1e-9)), masses
    lo_f, hi_f = RANGES.friction
    assert np.all((frictions >= lo_f - 1e-9) & (frictions <= hi_f + 1e-9)), frictions
    assert len(np.unique(masses)) == len(masses), "seeds gave repeated masses"
    assert len(np.unique(frictions)) == len(frictions), "seeds gave repeated frictions"
    other = make_env(env_id, randomize=True)
    assert [draw(other, s) for s in SEEDS] == draws  # same seed, same physics


@pytest.mark.parametrize("env_id", [CONVEYOR, PICK])
def test_no_mass_randomisation_by_default(make_env, env_id):
    env = make_env(env_id)
    for s in SEEDS:
        env.reset(seed=s)
        parts = getattr(env.unwrapped.task, "parts", None) or [env.unwrapped.task.part]
        for p in parts:
            assert _dynamics(env, p)[0] == pytest.approx(NOMINAL_MASS_KG)


def test_randomised_episode_is_reproducible(make_env):
    """The whole randomised episode (camera jitter included) repeats with its seed."""
    env_a = make_env(CONVEYOR, randomize=True, obs_mode="rgb", image_size=48)
    env_b = make_env(CONVEYOR, randomize=True, obs_mode="rgb", image_size=48)
    obs_a, _ = env_a.reset(seed=17)
    obs_b, _ = env_b.reset(seed=17)
    for key in obs_a:
        assert np.array_equal(obs_a[key], obs_b[key]), key
    obs_c, _ = env_b.reset(seed=18)
    assert not np.array_equal(obs_a["image"], obs_c["image"])
