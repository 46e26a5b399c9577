"""UFACTORY xArm6 with the xArm gripper (URDF from pybullet_data).

The gripper is a closed four-bar linkage that URDF can only express through ``<mimic>``
joints; pybullet ignores mimic tags, so the spec drives all six gripper joints to the same
angle, which reproduces the linkage kinematics.
"""

from __future__ import annotations

from factoryfloor.robots.spec import GripperSpec, JointLimit, RobotSpec, register_robot

_LIMITS = (  # from the URDF (velocity 3.14 rad/s on every joint)
    JointLimit(lower=-6.2832, upper=6.2832, velocity=3.14, effort=50.0),
    JointLimit(lower=-2.059, upper=2.0944, velocity=3.14, effort=50.0),
    JointLimit(lower=-3.927, upper=0.19198, velocity=3.14, effort=32.0),
    JointLimit(lower=-6.2832, upper=6.2832, velocity=3.14, effort=32.0),
    JointLimit(lower=-1.69297, upper=3.1416, velocity=3.14, effort=32.0),
    JointLimit(lower=-6.2832, upper=6.2832, velocity=3.14, effort=20.0),
)

_GRIPPER_JOINTS = (
    "drive_joint",
    "left_finger_joint",
    "left_inner_knuckle_joint",
    "right_outer_knuckle_joint",
    "right_finger_joint",
    "right_inner_knuckle_joint",
)


@register_robot("xarm6")
def xarm6() -> RobotSpec:
    """UFACTORY xArm6: 6 revolute joints and a linkage gripper, TCP between the fingertips."""
    return RobotSpec(
        name="xarm6",
        urdf="xarm/xarm6_with_gripper.urdf",
        data_root="pybullet_data",
        arm_joints=tuple(f"joint{i}" for i in range(1, 7)),
        ee_link="xarm_gripper_base_link",
        tcp_offset_m=(0.0, 0.0, 0.148),
        gripper=GripperSpec(
            joints=_GRIPPER_JOINTS,
            multipliers=(1.0,) * len(_GRIPPER_JOINTS),
            open_position=0.0,
            closed_position=0.85,
            force=20.0,
            # the finger and inner-knuckle joints close the four-bar: stiff, to keep pads parallel
            linkage_force=200.0,
            linkage_joints=(
                "left_finger_joint",
                "left_inner_knuckle_joint",
                "right_finger_joint",
                "right_inner_knuckle_joint",
            ),
            max_speed=3.0,
            gear_coupled=("right_outer_knuckle_joint",),
            finger_links=("left_finger", "right_finger"),
        ),
        limits=_LIMITS,
        home=(0.0, -0.2, -1.0, 0.0, 1.2, 0.0),
        ee_down_quaternion=(1.0, 0.0, 0.0, 0.0),
        # Finger pads as boxes on the inner faces (the convex finger mesh touches at one point).
        collision_boxes={
            "left_finger": ((0.032, 0.01, 0.03), (0.0, -0.021, 0.046)),
            "right_finger": ((0.032, 0.01, 0.03), (0.0, 0.021, 0.046)),
        },
        base_position=(-0.1, 0.0, 0.0),
    )
