"""URDF rewriting for grippers (joint overrides, display-only links) and the grasps it gives."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from factoryfloor.robots import get_robot_spec
from factoryfloor.robots.spec import JointOverride
from factoryfloor.sim.urdf_tools import data_root, robot_urdf

_URDF = """<?xml version="1.0"?>
<robot name="two">
  <link name="base"><collision><geometry><box size="1 1 1"/></geometry></collision></link>
  <link name="knuckle">
    <contact><stiffness value="1"/></contact>
    <collision><geometry><box size="1 1 1"/></geometry></collision>
  </link>
  <link name="finger"/>
  <joint name="drive" type="revolute">
    <parent link="base"/><child link="knuckle"/>
    <origin xyz="0 0 0" rpy="0 0 0"/><axis xyz="1 0 0"/>
    <limit lower="0" upper="1" effort="1" velocity="1"/>
  </joint>
  <joint name="finger_joint" type="revolute">
    <parent link="knuckle"/><child link="finger"/>
    <origin xyz="0 0.1 0" rpy="0 0 0"/><axis xyz="-1 0 0"/>
    <limit lower="0" upper="1" effort="1" velocity="1"/>
    <mimic joint="drive" multiplier="1"/>
  </joint>
</robot>
"""


def _rewrite(tmp_path, **kwargs) -> ET.Element:
    src = tmp_path / "two.urdf"
    src.write_text(_URDF)
    return ET.parse(robot_urdf(src, cache_dir=tmp_path / "out", **kwargs)).getroot()


def test_joint_override_re_expresses_a_linkage(tmp_path):
    override = JointOverride(
        type="prismatic", parent="base", xyz=(0.0, 0.2, 0.1), axis=(0.0, -1.0, 0.0), upper=0.05
    )
    root = _rewrite(tmp_path, joint_overrides={"finger_joint": override})
    joint = next(j for j in root.iter("joint") if j.get("name") == "finger_joint")
    assert joint.get("type") == "prismatic"
    assert joint.find("parent").get("link") == "base"
    assert [float(v) for v in joint.find("origin").get("xyz").split()] == [0.0, 0.2, 0.1]
    assert joint.find("origin").get("rpy") == "0 0 0"  # not overridden: kept
    assert [float(v) for v in joint.find("axis").get("xyz").split()] == [0.0, -1.0, 0.0]
    limit = joint.find("limit")
    assert (float(limit.get("lower")), float(limit.get("upper"))) == (0.0, 0.05)
    assert joint.find("mimic") is None  # described the old kinematics


def test_visual_only_links_lose_collision_and_contact(tmp_path):
    root = _rewrite(tmp_path, visual_only_links=("knuckle",))
    links = {link.get("name"): link for link in root.iter("link")}
    assert links["knuckle"].find("collision") is None
    assert links["knuckle"].find("contact") is None
    assert links["base"].find("collision") is not None


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no_such"):
        _rewrite(tmp_path, visual_only_links=("no_such_link",))
    with pytest.raises(ValueError, match="no_such"):
        _rewrite(tmp_path, joint_overrides={"no_such_joint": JointOverride(type="fixed")})
    with pytest.raises(ValueError, match="parent"):
        _rewrite(tmp_path, joint_overrides={"drive": JointOverride(parent="nowhere")})


@pytest.mark.parametrize(
    "kwargs",
    [{"type": "ball"}, {"axis": (0.0, 0.5, 0.0)}, {"lower": 0.1, "upper": 0.1}],
)
def test_invalid_joint_override_is_refused(kwargs):
    with pytest.raises(ValueError):
        JointOverride(**kwargs)


def test_urdf_is_unchanged_without_rewrites():
    spec = get_robot_spec("panda")
    path = data_root(spec.data_root) / spec.urdf
    assert robot_urdf(path) == path


def _grasp(make_env, robot: str, steps: int = 12):
    """Close the gripper on the PickPlace part of seed 0 (a 40 mm cylinder), then lift it."""
    env = make_env("factoryfloor/PickPlace-v0", robot=robot)
    base = env.unwrapped
    obs, _ = env.reset(seed=0)
    part = obs["observation"][7:10].copy()
    for target, grip, n in (
        (part + np.array([0.0, 0.0, 0.08]), 1.0, 15),
        (part, 1.0, 15),
        (part, -1.0, steps),
        (part + np.array([0.0, 0.0, 0.1]), -1.0, 15),
    ):
        for _ in range(n):
            delta = (target - obs["observation"][:3]) / base.robot.spec.max_ee_step_m
            action = np.append(np.clip(delta, -1.0, 1.0), grip).astype(np.float32)
            obs, *_ = env.step(action)
    return base, obs


def test_xarm_fingers_close_symmetrically_and_hold_the_part(make_env):
    base, obs = _grasp(make_env, "xarm6")
    arm, sim = base.robot, base.sim
    g = arm.spec.gripper
    left, right = sim.joint_positions("robot", arm.grip_idx[:2])
    assert left == pytest.approx(right, abs=0.004)  # geared fingers: the part stays centred
    assert 0.2 < obs["observation"][6] < 0.6  # stopped by the part, not closed
    tcp, part = obs["observation"][:3], obs["observation"][7:10]
    assert part[2] > 0.08 and np.linalg.norm(part - tcp) < 0.01  # lifted, held at the TCP
    # The display-only knuckles follow their finger's measured position.
    knuckles = sim.joint_positions("robot", arm.grip_idx[2:])
    ratio = g.multipliers[2]
    np.testing.assert_allclose(
        knuckles, [ratio * left, ratio * left, ratio * right, ratio * right], atol=0.03
    )
