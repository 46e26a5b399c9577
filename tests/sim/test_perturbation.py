"""``gymnasium.make(..., perturb=...)``: fixed physical perturbations, refused when wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factoryfloor.sim.env_checks import EnvArgumentError
from factoryfloor.sim.perturbation import SIM_AXES
from factoryfloor.sim.scene import PART_MASS_KG

PICK = "factoryfloor/PickPlace-v0"
CONVEYOR = "factoryfloor/ConveyorPick-v0"


def _dynamics(env, body: str) -> tuple[float, float]:
    """(mass kg, lateral friction) of a body's base, as pybullet holds them."""
    base = env.unwrapped
    info = base.sim.client.getDynamicsInfo(base.sim._bodies[body], -1)
    return info[0], info[1]


def _tcp_travel(env, steps: int = 5) -> float:
    """How far the TCP moves (m) under a fixed full-speed command from a fixed start."""
    obs, _ = env.reset(seed=3)
    start = obs["observation"][:3].copy()
    for _ in range(steps):
        obs, *_ = env.step(np.array([1.0, 0.0, -1.0, 1.0], np.float32))
    return float(np.linalg.norm(obs["observation"][:3] - start))


@pytest.mark.parametrize("env_id", [PICK, CONVEYOR])
def test_part_mass_and_friction_are_set_on_every_handled_part_at_every_reset(make_env, env_id):
    env = make_env(env_id, perturb={"part_mass_scale": 3.0, "part_friction": 0.2}, randomize=True)
    for seed in (0, 1):  # randomize draws its own mass and friction first: the level wins
        env.reset(seed=seed)
        parts = env.unwrapped.task.handled_parts()
        assert parts
        for part in parts:
            mass, friction = _dynamics(env, part)
            assert mass == pytest.approx(3.0 * PART_MASS_KG)
            assert friction == pytest.approx(0.2)


def test_a_weak_actuator_tracks_slower_than_the_nominal_one(make_env):
    nominal = _tcp_travel(make_env(PICK))
    weak = _tcp_travel(make_env(PICK, perturb={"actuator_gain": 0.2}))
    weaker = _tcp_travel(make_env(PICK, perturb={"actuator_gain": 0.05}))
    assert nominal > 0.15  # measured 0.23 m in 5 steps
    assert weaker < weak < 0.8 * nominal  # measured 0.05 < 0.15 < 0.23 m


def test_camera_offset_moves_the_policy_camera_by_the_level(make_env):
    nominal = make_env(PICK, obs_mode="camera")
    moved = make_env(PICK, obs_mode="camera", perturb={"camera_offset_m": 0.03})
    eyes = []
    for seed in (0, 1):
        nominal.reset(seed=seed)
        moved.reset(seed=seed)
        shift = moved.unwrapped.policy_camera._eye - nominal.unwrapped.policy_camera._eye
        assert np.linalg.norm(shift) == pytest.approx(0.03)
        eyes.append(shift)
    assert not np.allclose(eyes[0], eyes[1])  # a new direction each episode
    obs_n, _ = nominal.reset(seed=4)
    obs_m, _ = moved.reset(seed=4)
    assert not np.array_equal(obs_n["image"], obs_m["image"])  # what the policy sees moved


@pytest.mark.parametrize(
    ("env_id", "kwargs", "says"),
    [
        (PICK, {"perturb": {"part_mass_scale": math.nan}}, "part_mass_scale [0.1, 10.0]"),
        (PICK, {"perturb": {"part_mass_scale": 100.0}}, "part_mass_scale"),
        (PICK, {"perturb": {"actuator_gain": True}}, "actuator_gain"),
        (PICK, {"perturb": {"gravity": 1.0}}, "perturb="),
        (PICK, {"perturb": [("part_friction", 0.5)]}, "dict of levels"),
        (PICK, {"perturb": {"camera_offset_m": 0.01}}, "do not apply"),  # a state env
        ("factoryfloor/Reach-v0", {"perturb": {"part_friction": 0.5}}, "do not apply"),
    ],
)
def test_a_bad_perturbation_is_one_clear_error(make_env, env_id, kwargs, says):
    with pytest.raises(EnvArgumentError) as info:
        make_env(env_id, **kwargs)
    assert says in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(SIM_AXES))
def test_every_axis_at_its_nominal_level_changes_nothing(make_env, name):
    axis = SIM_AXES[name]
    mode = "camera" if name == "camera_offset_m" else "state"
    plain = make_env(PICK, obs_mode=mode)
    same = make_env(PICK, obs_mode=mode, perturb={name: axis.nominal})
    for env in (plain, same):
        env.reset(seed=2)
    action = np.array([0.5, -0.5, -1.0, 1.0], np.float32)
    for _ in range(4):
        a, *_ = plain.step(action)
        b, *_ = same.step(action)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6)
