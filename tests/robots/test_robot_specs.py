"""Robot specs: every registered spec is valid and agrees with its URDF; bad specs are refused."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from factoryfloor.robots import (
    CONTROL_MODES,
    GripperSpec,
    JointLimit,
    RobotSpec,
    get_robot_spec,
    register_robot,
    robot_names,
)
from factoryfloor.sim.urdf_tools import data_root, robot_urdf

ROBOTS = robot_names()


def test_registry_lists_the_robots():
    assert sorted(ROBOTS) == ROBOTS
    assert {"panda", "xarm6"} <= set(ROBOTS)


@pytest.mark.parametrize("name", ROBOTS)
def test_registered_spec_is_valid(name):
    spec = get_robot_spec(name)
    assert isinstance(spec, RobotSpec)
    assert spec.name == name
    n = spec.n_arm
    assert n == len(spec.arm_joints) == len(spec.limits) == len(spec.home) > 0
    assert len(set(spec.arm_joints)) == n
    assert spec.lower.shape == spec.upper.shape == (n,)
    assert np.all(spec.lower < spec.upper)
    home = np.asarray(spec.home)
    assert np.all((spec.lower <= home) & (home <= spec.upper)), "home outside the limits"
    assert set(spec.control_modes) <= set(CONTROL_MODES) and spec.control_modes
    assert spec.data_root in ("pybullet_data", "factoryfloor")
    assert np.linalg.norm(spec.ee_down_quaternion) == pytest.approx(1.0)
    assert spec.max_ee_step_m > 0 and spec.max_joint_step_rad > 0 and spec.position_gain > 0
    assert all(lim.velocity > 0 and lim.effort > 0 for lim in spec.limits)
    # A new spec object per call (specs are immutable values).
    assert get_robot_spec(name) == spec


@pytest.mark.parametrize("name", ROBOTS)
def test_gripper_drive_maps_opening_to_joint_targets(name):
    g = get_robot_spec(name).gripper
    assert g.drive(0.0) == pytest.approx(g.closed_position)
    assert g.drive(1.0) == pytest.approx(g.open_position)
    assert g.drive(0.5) == pytest.approx(0.5 * (g.open_position + g.closed_position))
    assert g.drive(-3.0) == g.drive(0.0) and g.drive(7.0) == g.drive(1.0)  # clipped
    targets = g.targets(g.drive(1.0))
    assert targets.shape == (len(g.joints),)
    np.testing.assert_allclose(targets, g.open_position * np.asarray(g.multipliers))


def _urdf(spec: RobotSpec, tmp_path) -> ET.Element:
    """The URDF as the simulator loads it (with the spec's joint overrides applied)."""
    path = data_root(spec.data_root) / spec.urdf
    assert path.is_file(), f"{spec.name}: URDF {path} is missing"
    path = robot_urdf(
        path,
        collision_boxes=spec.collision_boxes,
        joint_overrides=spec.joint_overrides,
        visual_only_links=spec.visual_only_links,
        cache_dir=tmp_path,
    )
    return ET.parse(path).getroot()


@pytest.mark.parametrize("name", ROBOTS)
def test_spec_agrees_with_its_urdf(name, tmp_path):
    spec = get_robot_spec(name)
    root = _urdf(spec, tmp_path)
    joints = {j.get("name"): j for j in root.findall("joint")}
    links = {link.get("name") for link in root.findall("link")}
    for joint, lim in zip(spec.arm_joints, spec.limits, strict=True):
        assert joint in joints, f"{name}: no joint {joint!r} in the URDF"
        assert joints[joint].get("type") in ("revolute", "prismatic", "continuous")
        urdf_limit = joints[joint].find("limit")
        if urdf_limit is not None and joints[joint].get("type") != "continuous":
            assert lim.lower == pytest.approx(float(urdf_limit.get("lower")), abs=1e-3), joint
            assert lim.upper == pytest.approx(float(urdf_limit.get("upper")), abs=1e-3), joint
    g = spec.gripper
    for joint, multiplier in zip(g.joints, g.multipliers, strict=True):
        assert joint in joints, f"{name}: no gripper joint {joint!r} in the URDF"
        limit = joints[joint].find("limit")
        lo, hi = float(limit.get("lower")), float(limit.get("upper"))
        for drive in (g.open_position, g.closed_position):
            assert lo - 1e-9 <= drive * multiplier <= hi + 1e-9, f"{joint} target outside limits"
        mimic = joints[joint].find("mimic")
        if mimic is not None and mimic.get("joint") in g.joints:
            leader = g.multipliers[g.joints.index(mimic.get("joint"))]
            assert multiplier == pytest.approx(float(mimic.get("multiplier", "1")) * leader)
    links_named = (
        *g.finger_links,
        *spec.collision_boxes,
        *spec.link_colors,
        *spec.visual_only_links,
    )
    for link in (spec.ee_link, *links_named):
        assert link in links, f"{name}: no link {link!r} in the URDF"


# ----------------------------------------------------------------------------- invalid specs


def _replace(spec: RobotSpec, **changes) -> RobotSpec:
    return dataclasses.replace(spec, **changes)


@pytest.mark.parametrize("name", ROBOTS)
def test_home_outside_limits_is_refused(name):
    spec = get_robot_spec(name)
    for i, joint in enumerate(spec.arm_joints):
        for bad in (spec.upper[i] + 0.01, spec.lower[i] - 0.01):
            home = list(spec.home)
            home[i] = float(bad)
            with pytest.raises(ValueError, match=joint):
                _replace(spec, home=tuple(home))


@pytest.mark.parametrize("name", ROBOTS)
def test_inconsistent_specs_are_refused(name):
    spec = get_robot_spec(name)
    with pytest.raises(ValueError, match="same length"):
        _replace(spec, home=spec.home[:-1])
    with pytest.raises(ValueError, match="same length"):
        _replace(spec, limits=spec.limits[:-1])
    with pytest.raises(ValueError, match="unknown control modes"):
        _replace(spec, control_modes=("ee", "torque"))
    with pytest.raises(ValueError, match="data_root"):
        _replace(spec, data_root="/opt/robots")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lower": 1.0, "upper": 1.0, "velocity": 1.0, "effort": 1.0},
        {"lower": 1.0, "upper": -1.0, "velocity": 1.0, "effort": 1.0},
        {"lower": -1.0, "upper": 1.0, "velocity": 0.0, "effort": 1.0},
        {"lower": -1.0, "upper": 1.0, "velocity": 1.0, "effort": -5.0},
    ],
)
def test_invalid_joint_limit_is_refused(kwargs):
    with pytest.raises(ValueError):
        JointLimit(**kwargs)


def test_invalid_gripper_is_refused():
    good = get_robot_spec(ROBOTS[0]).gripper
    assert isinstance(good, GripperSpec)
    with pytest.raises(ValueError, match="max_speed"):
        dataclasses.replace(good, max_speed=0.0)
    with pytest.raises(ValueError, match="multiplier"):
        dataclasses.replace(good, multipliers=(*good.multipliers, 1.0))
    with pytest.raises(ValueError, match="gear_coupled"):
        dataclasses.replace(good, gear_coupled=(good.joints[0],))
    with pytest.raises(ValueError):
        dataclasses.replace(good, joints=(), multipliers=(), gear_coupled=())


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_robot(ROBOTS[0])(lambda: get_robot_spec(ROBOTS[0]))
    assert robot_names() == ROBOTS  # nothing was added
    with pytest.raises(KeyError) as info:
        get_robot_spec("no-such-arm")
    assert all(name in str(info.value) for name in ROBOTS)


# ----------------------------------------------------------------------------- import hygiene


def test_robot_specs_import_no_physics_or_ml_stack():
    """The edge runtime imports the specs: they must not pull pybullet (nor zmq or torch)."""
    code = (
        "import factoryfloor.robots, sys; "
        "print('pybullet' in sys.modules, 'torch' in sys.modules, 'zmq' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False", "False"], result.stdout + result.stderr
