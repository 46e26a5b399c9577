"""FactoryEnv's public API: pickling, closing, bad input, observation modes, joint control."""

from __future__ import annotations

import gc
import pickle

import gymnasium as gym
import numpy as np
import pybullet
import pytest
from ff_testing import ENV_IDS, ROBOTS, assert_obs_equal

from factoryfloor.robots import CONTROL_MODES, get_robot_spec, robot_names
from factoryfloor.sim.env import OBS_MODES, FactoryEnv
from factoryfloor.sim.registry import TASKS
from factoryfloor.sim.tasks.base import REWARD_TYPES

# ----------------------------------------------------------------------------- pickling, close


@pytest.mark.parametrize("robot", ROBOTS)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickled_env_resets_like_the_original(make_env, env_id, robot):
    env = make_env(env_id, robot=robot).unwrapped
    env.reset(seed=0)
    env.step(env.action_space.sample())  # pickling mid-episode still gives an equivalent env
    clone = pickle.loads(pickle.dumps(env))
    try:
        assert isinstance(clone, FactoryEnv)
        assert clone.sim is not env.sim  # its own pybullet world
        assert clone.robot.spec.name == robot
        assert clone.action_space == env.action_space
        assert clone.observation_space == env.observation_space
        obs, _ = env.reset(seed=3)
        obs_clone, _ = clone.reset(seed=3)
        assert_obs_equal(obs, obs_clone)
        # Independent worlds: stepping the clone leaves the original where it was.
        tcp_before = env.robot.tcp_position().copy()
        for _ in range(3):
            clone.step(np.ones(clone.action_space.shape, dtype=np.float32))
        assert np.array_equal(env.robot.tcp_position(), tcp_before)
        assert not np.array_equal(clone.robot.tcp_position(), tcp_before)
    finally:
        clone.close()


def test_pickle_keeps_constructor_arguments(make_env):
    env = make_env(
        ENV_IDS[0], robot=ROBOTS[-1], control="joints", reward="dense", obs_mode="rgb"
    ).unwrapped
    clone = pickle.loads(pickle.dumps(env))
    try:
        assert clone.robot.control == "joints"
        assert clone.task.reward_type == "dense"
        assert clone.obs_mode == "rgb"
        assert clone.robot.spec.name == ROBOTS[-1]
    finally:
        clone.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_close_twice_does_not_raise(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    env.close()
    env.close()
    env.unwrapped.close()
    with pytest.raises(pybullet.error):  # really disconnected
        env.unwrapped.sim.get_base_position("table")


# ----------------------------------------------------------------------------- bad input


def _assert_lists(exc: BaseException, choices) -> None:
    message = str(exc)
    missing = [str(c) for c in choices if str(c) not in message]
    assert not missing, f"error message {message!r} does not list {missing}"


@pytest.mark.parametrize(
    ("kwargs", "error", "choices"),
    [
        pytest.param({"robot": "ur5e"}, KeyError, robot_names(), id="robot"),
        pytest.param({"task": "palletize"}, KeyError, sorted(TASKS), id="task"),
        pytest.param({"control": "torque"}, ValueError, CONTROL_MODES, id="control"),
        pytest.param({"obs_mode": "depth"}, ValueError, list(OBS_MODES), id="obs_mode"),
        pytest.param({"reward": "shaped"}, ValueError, REWARD_TYPES, id="reward"),
        pytest.param({"render_mode": "video"}, ValueError, ["human", "rgb_array"], id="render"),
    ],
)
def test_bad_constructor_argument_lists_valid_choices(kwargs, error, choices):
    with pytest.raises(error) as info:
        FactoryEnv(**kwargs)
    _assert_lists(info.value, choices)
    bad = next(iter(kwargs.values()))
    assert bad in str(info.value), "the message should name the rejected value"


def _connected_clients() -> set[int]:
    return {i for i in range(256) if pybullet.isConnected(physicsClientId=i)}


@pytest.mark.parametrize(
    "kwargs", [{"robot": "ur5e"}, {"task": "palletize"}, {"control": "x"}, {"reward": "x"}]
)
def test_refused_construction_leaves_no_pybullet_world(kwargs):
    gc.collect()
    before = _connected_clients()
    with pytest.raises((KeyError, ValueError)):
        FactoryEnv(**kwargs)
    gc.collect()
    assert _connected_clients() <= before


@pytest.mark.parametrize("robot", ROBOTS)
def test_bad_argument_through_gym_make(robot):
    with pytest.raises(ValueError) as info:
        gym.make(ENV_IDS[0], robot=robot, control="cartesian")
    _assert_lists(info.value, get_robot_spec(robot).control_modes)


@pytest.mark.parametrize("control", CONTROL_MODES)
@pytest.mark.parametrize("robot", ROBOTS)
def test_wrong_action_shape_is_rejected(make_env, robot, control):
    env = make_env(ENV_IDS[0], robot=robot, control=control)
    env.reset(seed=0)
    expected = env.action_space.shape
    for bad_shape in [(expected[0] + 1,), (expected[0] - 1,), (1, *expected), ()]:
        with pytest.raises(ValueError) as info:
            env.step(np.zeros(bad_shape, dtype=np.float32))
        assert str(expected) in str(info.value), str(info.value)
        assert str(bad_shape) in str(info.value), str(info.value)


# ----------------------------------------------------------------------------- observations


@pytest.mark.parametrize(("obs_mode", "channels"), [("rgb", 3), ("rgbd", 4)])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_image_observations(make_env, env_id, obs_mode, channels):
    env = make_env(env_id, obs_mode=obs_mode)
    space = env.observation_space["image"]
    assert space.shape == (84, 84, channels)
    assert space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    image = obs["image"]
    assert image.shape == (84, 84, channels) and image.dtype == np.uint8
    assert env.observation_space.contains(obs)
    for c in range(channels):  # every channel has content, not a blank frame
        assert image[..., c].std() > 5.0, f"channel {c} is (nearly) constant"
    # The picture follows the scene: moving the arm changes it.
    for _ in range(5):
        obs, *_ = env.step(np.array([0.0, 1.0, -1.0, 1.0], dtype=np.float32))
    changed = np.mean(np.any(obs["image"] != image, axis=-1))
    assert changed > 0.005, f"only {changed:.2%} of pixels changed after moving the arm"


def test_image_size_and_rgbd_colour_match_rgb(make_env):
    rgb = make_env(ENV_IDS[0], obs_mode="rgb", image_size=64).reset(seed=1)[0]["image"]
    rgbd = make_env(ENV_IDS[0], obs_mode="rgbd", image_size=64).reset(seed=1)[0]["image"]
    assert rgb.shape == (64, 64, 3) and rgbd.shape == (64, 64, 4)
    assert np.array_equal(rgbd[..., :3], rgb)


def test_state_mode_has_no_image(make_env):
    env = make_env(ENV_IDS[0])
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    assert set(env.observation_space.spaces) == set(obs)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_rgb_array(make_env, env_id):
    env = make_env(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (360, 480, 3) and frame.dtype == np.uint8
    assert frame.std() > 5.0
    plain = make_env(env_id)
    plain.reset(seed=0)
    assert plain.render() is None  # no render_mode: nothing to render


@pytest.mark.parametrize("robot", ROBOTS)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observation_layout(make_env, env_id, robot):
    """observation = TCP (3), TCP velocity (3), gripper opening (1)[, q], task part."""
    env = make_env(env_id, robot=robot)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert isinstance(info["is_success"], bool)
    base = env.unwrapped
    o = obs["observation"]
    np.testing.assert_allclose(o[:3], base.robot.tcp_position(), atol=1e-6)
    assert o[6] == pytest.approx(1.0, abs=0.02)  # gripper open after reset
    np.testing.assert_allclose(obs["desired_goal"], base.task.goal, atol=1e-6)
    # TCP inside the workspace box of the task
    task = type(base.task)
    assert np.all(o[:3] >= np.asarray(task.workspace_low) - 0.01)
    assert np.all(o[:3] <= np.asarray(task.workspace_high) + 0.01)


# ----------------------------------------------------------------------------- joint control


@pytest.mark.parametrize("robot", ROBOTS)
def test_joint_control_moves_each_joint_toward_the_command(make_env, robot):
    spec = get_robot_spec(robot)
    n = spec.n_arm
    env = make_env(ENV_IDS[0], robot=robot, control="joints")
    assert env.action_space.shape == (n + 1,)
    assert env.observation_space["observation"].shape[0] >= 7 + n
    steps = 3
    for i in range(n):
        obs, _ = env.reset(seed=0)
        q0 = obs["observation"][7 : 7 + n].copy()
        np.testing.assert_allclose(q0, spec.home, atol=1e-6)
        # Toward the middle of the range, so the joint limit never clips the command.
        direction = 1.0 if spec.lower[i] + spec.upper[i] > 2 * spec.home[i] else -1.0
        action = np.zeros(n + 1, dtype=np.float32)
        action[i], action[-1] = direction, 1.0
        for _ in range(steps):
            obs, *_ = env.step(action)
        dq = obs["observation"][7 : 7 + n] - q0
        moved = dq[i] * direction
        commanded = steps * spec.max_joint_step_rad
        assert moved > 0.5 * commanded, f"joint {i} moved {moved:.4f} of {commanded} rad"
        others = np.delete(np.abs(dq), i)
        assert others.max() < 0.25 * moved, f"commanding joint {i} moved others by {others}"
        # Holding still (zero deltas), the joint settles on the commanded target.
        action[i] = 0.0
        for _ in range(10):
            obs, *_ = env.step(action)
        q = obs["observation"][7 : 7 + n]
        assert q[i] == pytest.approx(q0[i] + direction * commanded, abs=0.02), f"joint {i}"


@pytest.mark.parametrize("robot", ROBOTS)
def test_joint_control_zero_action_holds_pose(make_env, robot):
    spec = get_robot_spec(robot)
    env = make_env(ENV_IDS[0], robot=robot, control="joints")
    obs, _ = env.reset(seed=0)
    action = np.zeros(spec.n_arm + 1, dtype=np.float32)
    action[-1] = 1.0
    for _ in range(10):
        obs, *_ = env.step(action)
    q = obs["observation"][7 : 7 + spec.n_arm]
    np.testing.assert_allclose(q, spec.home, atol=0.02)
