"""What enters FactoryEnv is checked where it enters: each step's action, the make kwargs."""

from __future__ import annotations

import gc
import inspect
import math
import re
from collections.abc import Callable, Iterator

import gymnasium as gym
import numpy as np
import pybullet
import pytest
from ff_testing import ENV_IDS, ROBOTS, assert_trajectories_equal, rollout, seeded_actions

from factoryfloor.cli import main
from factoryfloor.robots import CONTROL_MODES, get_robot_spec, robot_names
from factoryfloor.sim.backend import PhysicsConfig
from factoryfloor.sim.env import FactoryEnv
from factoryfloor.sim.env_checks import (
    ENV_ARG_CHECKS,
    IMAGE_SIZE_RANGE,
    OBS_MODES,
    RENDER_MODES,
    task_option_types,
)
from factoryfloor.sim.registry import BY_ENV_ID, TASKS

# Every registered task x every control mode x every robot that supports it (live registries).
CASES = [
    pytest.param(env_id, robot, control, id=f"{BY_ENV_ID[env_id].name}-{robot}-{control}")
    for env_id in ENV_IDS
    for robot in ROBOTS
    for control in CONTROL_MODES
    if control in get_robot_spec(robot).control_modes
]
NON_FINITE = [
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="+inf"),
    pytest.param(-math.inf, id="-inf"),
]
POSITIONS = ["first", "middle", "last"]


@pytest.fixture(scope="module")
def env_for() -> Iterator[Callable[[str, str, str], gym.Env]]:
    """``env_for(env_id, robot, control)``: one ``gym.make`` env per case for the module."""
    envs: dict[tuple[str, str, str], gym.Env] = {}

    def get(env_id: str, robot: str, control: str) -> gym.Env:
        key = (env_id, robot, control)
        if key not in envs:
            envs[key] = gym.make(env_id, robot=robot, control=control)
            envs[key].reset(seed=0)
        return envs[key]

    yield get
    for env in envs.values():
        env.close()


def _index(position: str, n: int) -> int:
    return {"first": 0, "middle": n // 2, "last": n - 1}[position]


def _with(n: int, index: int, value: float) -> np.ndarray:
    action = np.zeros(n, dtype=np.float32)
    action[-1] = 1.0
    action[index] = value
    return action


def _bad_kinds(n: int) -> dict[str, object]:
    """Actions that are not real numbers of shape (n,), by what is wrong with them."""
    return {
        "complex": np.zeros(n, dtype=np.complex128),
        "string": np.array(["0.1"] * n),
        "string-list": ["0.1"] * n,  # numbers as text are refused, not parsed
        "object": np.array([0.0] * (n - 1) + [None], dtype=object),
        "bool": np.ones(n, dtype=bool),
        "too-long": np.zeros(n + 1, dtype=np.float32),
        "too-short": np.zeros(n - 1, dtype=np.float32),
        "batched": np.zeros((1, n), dtype=np.float32),
        "scalar": np.float32(0.0),
        "ragged": [[0.0] * (n - 1), [0.0]],
        "dict": {"dx": 0.0},
        "none": None,
    }


BAD_KINDS = list(_bad_kinds(4))


# ----------------------------------------------------------------------------- actions


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(("env_id", "robot", "control"), CASES)
def test_non_finite_action_entry_is_refused_and_named(
    env_for, env_id, robot, control, value, position
):
    env = env_for(env_id, robot, control)
    n = env.action_space.shape[0]
    i = _index(position, n)
    for action in (_with(n, i, value), _with(n, i, value).astype(np.float64).tolist()):
        with pytest.raises(ValueError, match="finite") as info:
            env.step(action)
        message = str(info.value)
        assert f"action[{i}]={value!r}" in message, message
        named = re.findall(r"action\[(\d+)\]", message)
        assert named == [str(i)], f"only entry {i} is bad, the message names {named}"


def test_several_non_finite_entries_are_all_named(env_for):
    env = env_for(ENV_IDS[0], ROBOTS[0], "ee")
    action = np.array([0.0, 0.0, math.nan, math.inf], dtype=np.float32)
    with pytest.raises(ValueError) as info:
        env.step(action)
    assert str(info.value).startswith("action[2]=nan, action[3]=inf: actions must be finite")


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize(("env_id", "robot", "control"), CASES)
def test_action_of_wrong_dtype_or_shape_is_refused_naming_it(env_for, env_id, robot, control, kind):
    env = env_for(env_id, robot, control)
    shape = env.action_space.shape
    with pytest.raises(ValueError) as info:
        env.step(_bad_kinds(shape[0])[kind])
    message = str(info.value)
    assert message.startswith("action must be real numbers"), message  # the argument, allowed
    assert f"shape {shape}" in message, message
    assert "got " in message, message  # ... and what came


@pytest.mark.parametrize(("env_id", "robot", "control"), CASES)
def test_refused_action_leaves_the_env_as_it_was(env_for, env_id, robot, control):
    """Refused actions change nothing: the run continues exactly like one that never sent them."""
    env = env_for(env_id, robot, control)
    base = env.unwrapped
    n = env.action_space.shape[0]
    actions = seeded_actions(env.action_space, 8, seed=17)
    bad = [_with(n, _index(p, n), v.values[0]) for p in POSITIONS for v in NON_FINITE]
    bad += list(_bad_kinds(n).values())

    env.reset(seed=5)
    rollout(env, actions[:4], stop_on_done=False)
    before = (base.robot.get_state(), base.task.get_state(), env.get_wrapper_attr("_elapsed_steps"))
    for action in bad:
        with pytest.raises(ValueError):
            env.step(action)
    after = (base.robot.get_state(), base.task.get_state(), env.get_wrapper_attr("_elapsed_steps"))
    np.testing.assert_equal(after, before)  # controller targets, measurements, task, time limit
    with_refusals = rollout(env, actions[4:], stop_on_done=False)

    env.reset(seed=5)
    rollout(env, actions[:4], stop_on_done=False)
    never_refused = rollout(env, actions[4:], stop_on_done=False)
    assert_trajectories_equal(with_refusals, never_refused)  # observations compared exactly


def test_valid_action_forms_are_still_accepted(env_for):
    env = env_for(ENV_IDS[0], ROBOTS[0], "ee")
    env.reset(seed=0)
    for action in ([0.1, 0.0, 0.0, 1.0], (0, 0, 0, 1), np.array([0, 0, 0, 1], dtype=np.int64)):
        obs, *_ = env.step(action)
        assert np.isfinite(obs["observation"]).all()
    # A list is read as float32, as before: it steps exactly like the float32 array.
    a = [0.123456789, -0.3, 0.05, 1.0]
    env.reset(seed=1)
    from_list = rollout(env, [a] * 3)
    env.reset(seed=1)
    assert_trajectories_equal(from_list, rollout(env, [np.asarray(a, dtype=np.float32)] * 3))


# ----------------------------------------------------------------------------- make kwargs

CONVEYOR = TASKS["conveyor_pick"].env_id  # the task with an option: belt_speed_m_s
NO_OPTIONS = next(e for e in ENV_IDS if not task_option_types(e))
CONTROLS = sorted(get_robot_spec(ROBOTS[0]).control_modes)
SIZES = [str(v) for v in IMAGE_SIZE_RANGE]
MAKE_PHYSICS = ["PhysicsConfig", "None"]

# (env id, kwarg, bad value, words the message must hold besides the kwarg and the value)
BAD_KWARGS = [
    *[(ENV_IDS[0], "image_size", v, SIZES) for v in (0, -84, 8, 513, 100_000, True, 84.0, "84")],
    (ENV_IDS[0], "image_size", None, SIZES),
    *[(ENV_IDS[0], "physics", v, MAKE_PHYSICS) for v in ("fast", {"substeps": 6}, 1)],
    (ENV_IDS[0], "physics", PhysicsConfig(timestep_s=math.nan), ["finite"]),
    (ENV_IDS[0], "physics", PhysicsConfig(gravity_m_s2=math.inf), ["finite"]),
    *[(ENV_IDS[0], "randomize", v, ["True", "False"]) for v in ("no", "yes", 1, 0, None)],
    *[(ENV_IDS[0], "obs_mode", v, list(OBS_MODES)) for v in ("depth", "RGB", None, 3)],
    *[(ENV_IDS[0], "control", v, CONTROLS) for v in ("joint", "torque", None)],
    # (gymnasium.make itself fails on a render_mode that is not a string: see the test below)
    *[(ENV_IDS[0], "render_mode", v, RENDER_MODES) for v in ("video", "rgb")],
    *[(ENV_IDS[0], "robot", v, robot_names()) for v in ("ur5e", "Panda", 3)],
    (ENV_IDS[0], "reward", "shaped", ["sparse", "dense"]),
    (ENV_IDS[0], "task", "palletize", list(TASKS)),
    (NO_OPTIONS, "task_options", {"belt_speed_m_s": 0.1}, ["no options"]),
    (CONVEYOR, "task_options", {"speed": 0.1}, ["belt_speed_m_s"]),
    (CONVEYOR, "task_options", {"belt_speed_m_s": "fast"}, ["belt_speed_m_s", "float"]),
    (CONVEYOR, "task_options", {"belt_speed_m_s": True}, ["belt_speed_m_s", "float"]),
    (CONVEYOR, "task_options", [("belt_speed_m_s", 0.1)], ["belt_speed_m_s"]),
    (CONVEYOR, "task_options", "fast", ["belt_speed_m_s"]),
]


def _connected_clients() -> set[int]:
    return {i for i in range(256) if pybullet.isConnected(physicsClientId=i)}


@pytest.mark.parametrize(
    ("env_id", "kwarg", "value", "words"),
    [pytest.param(*case, id=f"{case[1]}={case[2]!r}") for case in BAD_KWARGS],
)
@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")  # gymnasium's, first
def test_bad_make_kwarg_is_refused_naming_it(env_id, kwarg, value, words):
    gc.collect()
    before = _connected_clients()
    with pytest.raises(ValueError) as info:
        gym.make(env_id, **{kwarg: value})
    message = str(info.value)
    assert message.startswith(f"{kwarg}={value!r} is not supported; "), message
    missing = [w for w in map(str, words) if w not in message]
    assert not missing, f"{message!r} does not say {missing}"
    gc.collect()
    assert _connected_clients() <= before, "a refused make left a pybullet world behind"


def test_non_string_render_mode_is_refused_by_the_env():
    # gymnasium.make calls render_mode.endswith() before the env exists (an AttributeError of
    # gymnasium's); the env itself refuses it like any other bad value.
    with pytest.raises(ValueError, match=r"^render_mode=1 is not supported; choose one of"):
        FactoryEnv(render_mode=1)


def test_unknown_names_stay_key_errors_too():
    for kwargs in ({"robot": "ur5e"}, {"task": "palletize"}):
        with pytest.raises(KeyError) as info:
            FactoryEnv(**kwargs)
        assert str(info.value).startswith(f"{next(iter(kwargs))}="), "the message, unquoted"


def test_every_constructor_argument_has_one_check():
    params = [p for p in inspect.signature(FactoryEnv.__init__).parameters if p != "self"]
    assert sorted(c.name for c in ENV_ARG_CHECKS) == sorted(params)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"obs_mode": "rgb", "image_size": IMAGE_SIZE_RANGE[0]}, id="smallest-image"),
        pytest.param({"obs_mode": "rgbd", "image_size": IMAGE_SIZE_RANGE[1]}, id="largest-image"),
        pytest.param({"obs_mode": "rgb", "image_size": np.int64(32)}, id="numpy-int-size"),
        pytest.param({"randomize": np.bool_(True)}, id="numpy-bool"),
        pytest.param({"physics": PhysicsConfig(substeps=6)}, id="physics"),
        pytest.param({"task_options": {"belt_speed_m_s": np.float32(0.08)}}, id="np-option"),
        pytest.param({"task_options": {}}, id="empty-options"),
    ],
)
def test_valid_edge_values_are_accepted(kwargs):
    env = gym.make(CONVEYOR, **kwargs)
    try:
        obs, _ = env.reset(seed=0)
        if "image_size" in kwargs:
            size = int(kwargs["image_size"])
            assert obs["image"].shape[:2] == (size, size)
            assert obs["image"].std() > 5.0  # a picture, not a blank frame
    finally:
        env.close()


# ----------------------------------------------------------------------------- command line


def test_eval_refuses_a_bad_robot_in_one_line(capsys):
    """``eval`` exposes one env kwarg, ``--robot``; the others it does not take at all."""
    assert main(["eval", ENV_IDS[0], "--robot", "ur99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ur99" in err[0], err


@pytest.mark.parametrize(
    ("yaml", "said"),
    [
        pytest.param("{image_size: 0}", "image_size=0", id="image_size"),
        pytest.param("{randomize: 'no'}", "randomize='no'", id="randomize"),
    ],
)
def test_train_refuses_bad_env_kwargs_of_its_config_in_one_line(tmp_path, capsys, yaml, said):
    """``train --config`` takes env kwargs (``env_kwargs:``): a bad one is one line, exit 2.

    The config layer may refuse it before the env does; either way it is one line naming it.
    """
    config = tmp_path / "bad.yaml"
    config.write_text(f"env_kwargs: {yaml}\n", encoding="utf-8")
    argv = ["train", ENV_IDS[0], "--config", str(config), "--out", str(tmp_path / "run")]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert said in err[0], err
