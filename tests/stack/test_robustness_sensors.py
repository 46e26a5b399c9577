"""Sensor perturbations change only what the policy is given, and only the entries they name."""

from __future__ import annotations

import numpy as np
import pytest

from factoryfloor.stack.robustness import sensors

PICK = "factoryfloor/PickPlace-v0"
CONVEYOR = "factoryfloor/ConveyorPick-v0"


def _pair(make_env, wrapper, level, **kwargs):
    """(nominal obs, perturbed obs) after reset and one step, same seed and action."""
    plain, wrapped = make_env(PICK, **kwargs), wrapper(make_env(PICK, **kwargs), level)
    out = []
    for env in (plain, wrapped):
        env.reset(seed=7)
        obs, *_ = env.step(np.array([0.3, 0.2, -0.5, 1.0], np.float32))
        out.append(obs)
    return out


@pytest.mark.parametrize("env_id", [PICK, CONVEYOR])
def test_position_noise_reaches_positions_only(make_env, env_id):
    env = make_env(env_id)
    slices = sensors.position_slices(env, parts_only=False)
    segments = env.unwrapped.key_segments()["observation"]
    names = {n for n, sl in segments.items() if sl in slices["observation"]}
    assert "tcp_position" in names and all(n.endswith("position") for n in names)
    assert "achieved_goal" in slices and "desired_goal" not in slices  # the bin is cell layout


def test_position_noise_has_the_sigma_asked_for(make_env):
    clean, noisy = _pair(make_env, sensors.PositionNoise, 0.005)
    diff = noisy["observation"] - clean["observation"]
    positions = np.r_[0:3, 7:10]  # TCP and part positions (m)
    others = np.setdiff1d(np.arange(diff.size), positions)
    assert np.all(diff[others] == 0) and np.all(diff[positions] != 0)
    assert np.array_equal(noisy["desired_goal"], clean["desired_goal"])
    samples = []
    env = sensors.PositionNoise(make_env(PICK), 0.005)
    env.reset(seed=1)
    truth = env.unwrapped._get_obs()
    for _ in range(200):
        samples.append(env.observation(truth)["observation"][:3] - truth["observation"][:3])
    assert np.std(samples) == pytest.approx(0.005, rel=0.1)


def test_part_pose_error_is_constant_horizontal_and_leaves_the_tcp(make_env):
    env = sensors.PartPoseError(make_env(PICK), 0.02)
    offsets = []
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        truth = env.unwrapped._get_obs()
        for _ in range(3):
            offset = obs["observation"][7:10] - truth["observation"][7:10]
            assert np.linalg.norm(offset) == pytest.approx(0.02, abs=1e-6) and offset[2] == 0
            assert np.array_equal(obs["observation"][:7], truth["observation"][:7])
            np.testing.assert_allclose(
                obs["achieved_goal"] - truth["achieved_goal"], offset, atol=1e-6
            )
            obs, *_ = env.step(np.zeros(4, np.float32))
            truth = env.unwrapped._get_obs()
        offsets.append(offset)
    assert not np.allclose(offsets[0], offsets[1])  # a new direction each episode


@pytest.mark.parametrize(
    ("wrapper", "level"), [(sensors.ImageLight, 0.6), (sensors.ColourJitter, 0.2)]
)
def test_image_perturbations_keep_uint8_and_scale_rgb(make_env, wrapper, level):
    clean, changed = _pair(make_env, wrapper, level, obs_mode="camera", camera_depth=True)
    for key in ("image", "wrist_image"):
        a, b = clean[key], changed[key]
        assert b.dtype == np.uint8 and b.shape == a.shape
        assert np.array_equal(a[..., 3], b[..., 3])  # depth is not light
        ratio = b[..., :3].astype(float).sum((0, 1)) / a[..., :3].astype(float).sum((0, 1))
        if wrapper is sensors.ImageLight:
            assert ratio == pytest.approx(np.full(3, level), abs=0.02)
        else:  # each channel up or down by the level (clipping at 255 may cut a gain > 1)
            assert np.all(np.abs(ratio - 1) <= level + 0.02) and np.all(np.abs(ratio - 1) > 0.1)
    assert np.array_equal(clean["observation"], changed["observation"])
