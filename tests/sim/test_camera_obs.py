"""obs_mode="camera": the actor sees only what a real cell has; sim-only entries stay apart."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ff_testing import (
    ENV_IDS,
    ROBOTS,
    assert_obs_equal,
    assert_trajectories_equal,
    rollout,
    seeded_actions,
    unexpected_warnings,
)
from gymnasium.utils.env_checker import check_env as gym_check_env

from factoryfloor.robots import get_robot_spec
from factoryfloor.sim.env_checks import OBS_MODES
from factoryfloor.sim.observations import MODE_KEYS, Source
from factoryfloor.sim.registry import TASKS

REACH = TASKS["reach"].env_id  # no moving parts: the cell camera sees only the arm move
IMAGE_KEYS = MODE_KEYS["camera"].image_keys
CONTROLS = sorted({c for r in ROBOTS for c in get_robot_spec(r).control_modes})


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_declared_segments_cover_the_state_vector(make_env, env_id, control):
    env = make_env(env_id, control=control).unwrapped
    layout = env.obs_layout
    assert layout.size == env.observation_space["observation"].shape[0]
    names = [s.name for s in layout.segments]
    assert len(set(names)) == len(names)
    assert all(s.size > 0 and s.units for s in layout.segments)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_actor_keys_hold_no_privileged_entry(make_env, env_id):
    state = make_env(env_id)
    camera = make_env(env_id, obs_mode="camera")
    s_obs, _ = state.reset(seed=3)
    c_obs, _ = camera.reset(seed=3)
    env = camera.unwrapped
    layout, segments = env.obs_layout, env.key_segments()
    declared = set(layout.names(Source.PRIVILEGED))
    assert declared.isdisjoint(segments["observation"]), "a sim-only segment in the actor's"
    assert declared == set(segments.get("privileged", {}))
    assert set(segments["observation"]) == set(layout.names(Source.REAL))
    # Every segment holds the very values of the state-mode vector (parts are placed by the
    # same draws; nothing has moved yet).
    full = key_segments_of_state(state)
    for key, named in segments.items():
        for name, where in named.items():
            assert np.array_equal(c_obs[key][where], s_obs["observation"][full[name]]), name
    # The keys: actor and privileged apart, covering the observation; goals by their source.
    actor, hidden = env.actor_keys, env.privileged_keys
    assert set(actor).isdisjoint(hidden) and set(actor) | set(hidden) == set(c_obs)
    assert set(IMAGE_KEYS) <= set(actor)
    for goal in ("achieved_goal", "desired_goal"):
        source = getattr(env.task.goal_sources, goal)
        assert (goal in hidden) == (source is Source.PRIVILEGED), goal
    assert ("privileged" in hidden) == bool(declared)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_visible_privileged_entries_are_the_frames_positions_not_rates(make_env, env_id):
    env = make_env(env_id, obs_mode="camera").unwrapped
    named = env.key_segments().get("privileged", {})
    segments = {s.name: s for s in env.obs_layout.segments}
    expected = [
        i for name, where in named.items() if segments[name].visible
        for i in range(where.start, where.stop)
    ]  # fmt: skip
    assert env.visible_privileged == expected
    for name in named:  # a rate is not in one frame; a position is
        assert segments[name].visible == ("velocity" not in name), name
    if named:
        assert env.visible_privileged, "a task with sim-only state gives the estimator nothing"


def key_segments_of_state(env) -> dict:
    """Segment name -> slice of the state-mode ``observation``."""
    return env.unwrapped.key_segments()["observation"]


@pytest.mark.parametrize("depth", [False, True], ids=["rgb", "rgbd"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observation_space_matches_the_observation(make_env, env_id, depth):
    env = make_env(env_id, obs_mode="camera", camera_depth=depth, image_size=48)
    space = env.observation_space
    obs, _ = env.reset(seed=0)
    for _ in range(2):
        assert set(obs) == set(space.spaces)
        for key in IMAGE_KEYS:
            assert space[key].dtype == np.uint8 and obs[key].dtype == np.uint8
            assert obs[key].shape == space[key].shape == (48, 48, 4 if depth else 3)
            assert obs[key][..., :3].std() > 5.0, f"{key} is (nearly) blank"
        for key in set(obs) - set(IMAGE_KEYS):
            assert obs[key].dtype == np.float32 and obs[key].shape == space[key].shape
        assert space.contains(obs)
        obs, *_ = env.step(env.action_space.sample())


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env_camera_mode(make_env, env_id):
    env = make_env(env_id, obs_mode="camera", image_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped, skip_render_check=True)
    assert unexpected_warnings(caught) == []


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose colour differs."""
    return float(np.mean(np.any(a[..., :3] != b[..., :3], axis=-1)))


@pytest.mark.parametrize("robot", ROBOTS)
def test_wrist_camera_moves_with_the_arm_cell_camera_stays(make_env, robot):
    env = make_env(REACH, robot=robot, obs_mode="camera", camera_depth=True)
    obs, _ = env.reset(seed=0)
    hold = np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32)
    for _ in range(3):  # let the arm settle on its targets
        obs, *_ = env.step(hold)
    still, *_ = env.step(hold)
    for key in IMAGE_KEYS:  # nothing moves: neither picture changes
        assert _changed(obs[key], still[key]) < 0.01, key
    tcp_before = still["observation"][:3].copy()
    moved = still
    for _ in range(8):  # down and sideways
        moved, *_ = env.step(np.array([0.0, 1.0, -1.0, 1.0], dtype=np.float32))
    assert np.linalg.norm(moved["observation"][:3] - tcp_before) > 0.1
    wrist, cell = (_changed(still[k], moved[k]) for k in ("wrist_image", "image"))
    assert wrist > 0.05, f"only {wrist:.1%} of the wrist image changed"
    assert cell < 0.5, f"{cell:.1%} of the cell image changed: the cell camera moved?"
    # The wrist camera went down with the TCP: the table is nearer by about as much (depth
    # channel, uint8 over [near_m, far_m]); the cell camera did not move: its far corners
    # (table and floor, away from the arm) kept their depth.
    cfg = env.unwrapped.camera_info()["wrist_image"]
    metres = (cfg["far_m"] - cfg["near_m"]) / 255.0
    drop = float(tcp_before[2] - moved["observation"][2])
    before, after = (float(np.median(o["wrist_image"][..., 3])) * metres for o in (still, moved))
    assert before - after > 0.5 * drop > 0.02, (before, after, drop)
    corners = (slice(-10, None), slice(None, 10))
    assert np.array_equal(still["image"][corners][..., 3], moved["image"][corners][..., 3])
    # The cell camera's pose is fixed; the wrist camera is mounted on the arm's link.
    info = env.unwrapped.camera_info()
    assert info["image"]["mount"] == "world"
    assert info["wrist_image"]["link"] == get_robot_spec(robot).ee_link


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_images(make_env, env_id):
    kwargs = {"obs_mode": "camera", "randomize": True, "image_size": 48}
    env_a, env_b, env_c = (make_env(env_id, **kwargs) for _ in range(3))
    actions = seeded_actions(env_a.action_space, 6, seed=4)
    obs_a, _ = env_a.reset(seed=5)
    obs_b, _ = env_b.reset(seed=5)
    obs_c, _ = env_c.reset(seed=6)
    assert_obs_equal(obs_a, obs_b, where="reset")
    assert env_a.unwrapped.camera_info() == env_b.unwrapped.camera_info()
    assert_trajectories_equal(rollout(env_a, actions), rollout(env_b, actions))
    # Another seed jitters both cameras differently (drawn through the env's np_random).
    info_a, info_c = env_a.unwrapped.camera_info(), env_c.unwrapped.camera_info()
    for key, pose in (("image", "eye_m"), ("wrist_image", "eye_in_link_m")):
        assert info_a[key][pose] != info_c[key][pose], key
    assert not np.array_equal(obs_a["image"], obs_c["image"])


@pytest.mark.parametrize("reward", ["sparse", "dense"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_her_compute_reward_on_camera_observations(make_env, env_id, reward):
    env = make_env(env_id, obs_mode="camera", reward=reward, image_size=32)
    obs, _ = env.reset(seed=2)
    achieved, desired = [], []
    for action in seeded_actions(env.action_space, 5, seed=8):
        obs, r, _, _, info = env.step(action)
        one = env.unwrapped.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        assert float(one) == pytest.approx(r, abs=1e-6)
        achieved.append(obs["achieved_goal"])
        desired.append(obs["desired_goal"])
    # HER relabels: a batch of achieved goals against other desired goals, vectorised.
    batch_a, batch_d = np.stack(achieved), np.stack(desired[::-1])
    rewards = env.unwrapped.compute_reward(batch_a, batch_d, [{}] * len(batch_a))
    assert rewards.shape == (len(batch_a),)
    relabelled = env.unwrapped.compute_reward(batch_a, batch_a, [{}] * len(batch_a))
    assert np.all(relabelled == 0.0), "an achieved goal taken as the goal is a success"


def test_camera_info_lists_every_image_key(make_env):
    env = make_env(ENV_IDS[0], obs_mode="camera", image_size=40).unwrapped
    info = env.camera_info()
    assert set(info) == set(IMAGE_KEYS)
    for entry in info.values():
        assert entry["width"] == entry["height"] == 40
        assert {"fov_deg", "near_m", "far_m", "mount", "depth"} <= set(entry)
    assert {"eye_m", "target_m"} <= set(info["image"])
    assert {"body", "link", "eye_in_link_m", "target_in_link_m"} <= set(info["wrist_image"])
    assert make_env(ENV_IDS[0]).unwrapped.camera_info() == {}


def test_state_mode_keys_are_unchanged(make_env):
    for env_id in ENV_IDS:
        env = make_env(env_id)
        obs, _ = env.reset(seed=0)
        assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
        unwrapped = env.unwrapped
        assert set(unwrapped.actor_keys) | set(unwrapped.privileged_keys) == set(obs)
        # The one vector holds sim-only entries wherever a task declares any.
        has_hidden = bool(unwrapped.obs_layout.names(Source.PRIVILEGED))
        assert ("observation" in unwrapped.privileged_keys) == has_hidden


def test_camera_mode_is_registered_and_refusals_name_it(make_env):
    assert "camera" in OBS_MODES and "camera" in MODE_KEYS
    assert set(MODE_KEYS) == set(OBS_MODES)
    with pytest.raises(ValueError, match=r"obs_mode='cam' is not supported; .*'camera'"):
        make_env(ENV_IDS[0], obs_mode="cam")
    with pytest.raises(ValueError, match=r"camera_depth=True is not supported; .*'camera'"):
        make_env(ENV_IDS[0], obs_mode="rgb", camera_depth=True)
    with pytest.raises(ValueError, match=r"camera_depth=1 is not supported; .*bool"):
        make_env(ENV_IDS[0], obs_mode="camera", camera_depth=1)


def _project(info: dict, points: np.ndarray) -> np.ndarray:
    """World points (N, 3) -> pixel (u, v) (N, 2) of a pinhole camera from ``camera_info``."""
    eye, target = np.asarray(info["eye_m"]), np.asarray(info["target_m"])
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rel = points - eye
    focal_px = info["height"] / 2 / np.tan(np.radians(info["fov_deg"]) / 2)
    depth = rel @ forward
    return np.stack([rel @ right, -(rel @ up)], axis=1) * focal_px / depth[:, None] + 42.0


def test_camera_mode_cell_camera_frames_the_work_area(make_env):
    """Every PickPlace part and bin position lies in the policy's view, at <= 1 cm per pixel."""
    env = make_env(TASKS["pick_place"].env_id, obs_mode="camera", image_size=84).unwrapped
    obs, _ = env.reset(seed=0)
    info, task = env.camera_info()["image"], env.task
    corners = [
        [x, y, 0.02]
        for low, high in ((task.part_low, task.part_high), (task.bin_low, task.bin_high))
        for x in (low[0], high[0])
        for y in (low[1], high[1])
    ]
    pixels = _project(info, np.asarray(corners))
    assert pixels.min() >= 4 and pixels.max() <= 80, pixels  # inside, with a margin
    centre = np.array([[0.47, -0.12, 0.02], [0.48, -0.12, 0.02], [0.47, -0.11, 0.02]])
    u = _project(info, centre)
    assert min(np.linalg.norm(u[1] - u[0]), np.linalg.norm(u[2] - u[0])) >= 1.0  # px per cm
    # The projection above is the renderer's: the part shows where it is projected.
    part = obs["privileged"][:3].astype(float)  # the part's position (m, world)
    col, row = np.round(_project(info, part[None])[0]).astype(int)
    image = env.policy_camera.rgb(84, 84).astype(int)
    table = image[2, 2]  # a corner: bare table
    assert np.abs(image[row, col] - table).sum() > 60, (row, col, image[row, col], table)
    # The other modes and render() keep the whole-cell view.
    assert env.policy_camera is not env.camera
    assert make_env(REACH, obs_mode="rgb").unwrapped.camera_info()["image"]["eye_m"] == [
        1.2, 0.0, 0.9,
    ]  # fmt: skip
