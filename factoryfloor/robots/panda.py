"""Franka Emika Panda with its parallel gripper (URDF from pybullet_data)."""

from __future__ import annotations

from factoryfloor.robots.spec import GripperSpec, JointLimit, RobotSpec, register_robot

# position limits from the URDF; velocity and acceleration limits from Franka's datasheet
_LIMITS = (
    JointLimit(lower=-2.9671, upper=2.9671, velocity=2.175, effort=87.0, acceleration=15.0),
    JointLimit(lower=-1.8326, upper=1.8326, velocity=2.175, effort=87.0, acceleration=7.5),
    JointLimit(lower=-2.9671, upper=2.9671, velocity=2.175, effort=87.0, acceleration=10.0),
    JointLimit(lower=-3.1416, upper=0.0, velocity=2.175, effort=87.0, acceleration=12.5),
    JointLimit(lower=-2.9671, upper=2.9671, velocity=2.61, effort=12.0, acceleration=15.0),
    JointLimit(lower=-0.0873, upper=3.8223, velocity=2.61, effort=12.0, acceleration=20.0),
    JointLimit(lower=-2.9671, upper=2.9671, velocity=2.61, effort=12.0, acceleration=20.0),
)


@register_robot("panda")
def panda() -> RobotSpec:
    """Franka Panda: 7 revolute joints, 2-finger prismatic gripper, TCP at the finger centre."""
    return RobotSpec(
        max_tcp_speed_m_s=1.7,  # Franka datasheet: Cartesian translation 1.7 m/s, 13 m/s^2
        max_tcp_acceleration_m_s2=13.0,
        name="panda",
        urdf="franka_panda/panda.urdf",
        data_root="pybullet_data",
        arm_joints=tuple(f"panda_joint{i}" for i in range(1, 8)),
        ee_link="panda_grasptarget",
        gripper=GripperSpec(
            joints=("panda_finger_joint1", "panda_finger_joint2"),
            multipliers=(1.0, 1.0),
            open_position=0.04,
            closed_position=0.0,
            force=20.0,  # the URDF's effort limit, per finger
            max_speed=0.15,
            # the hand's fingers share one drive: the second follows the first (a gear constraint)
            gear_coupled=("panda_finger_joint2",),
            finger_links=("panda_leftfinger", "panda_rightfinger"),
        ),
        limits=_LIMITS,
        home=(0.0, 0.2, 0.0, -2.2, 0.0, 2.4, 0.785),
        ee_down_quaternion=(1.0, 0.0, 0.0, 0.0),
        # Finger pads as boxes (the shipped convex finger mesh touches parts at a single point).
        collision_boxes={
            "panda_leftfinger": ((0.021, 0.012, 0.054), (0.0, 0.006, 0.027)),
            "panda_rightfinger": ((0.021, 0.012, 0.054), (0.0, 0.006, 0.027)),
        },
        link_colors={
            "panda_link0": (0.9, 0.9, 0.9, 1.0),
            "panda_hand": (0.2, 0.2, 0.2, 1.0),
            "panda_leftfinger": (0.15, 0.15, 0.15, 1.0),
            "panda_rightfinger": (0.15, 0.15, 0.15, 1.0),
        },
    )
