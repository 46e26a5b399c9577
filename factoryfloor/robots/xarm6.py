"""UFACTORY xArm6 with the xArm gripper (URDF from pybullet_data).

The gripper is a closed parallelogram linkage per finger: an outer knuckle (driven; the two
outer knuckles are geared together) and an inner knuckle both hinge on the gripper body and on
the finger, so the finger translates on an arc without turning. URDF can only state the loop
through ``<mimic>`` joints, which pybullet ignores, and the open chain that is left (body ->
outer knuckle -> finger) does not hold up in pybullet: once a pad touches a part, the light
finger links turn away from their knuckle's angle, by 0.2-0.9 rad, whether the finger joints
are held by strong motors or by gear constraints to the knuckles (measured: the pads then press
with 1-5 N whatever the drive's torque); the pads tilt, pinch the part at their tips and it
squeezes out.

So the spec re-expresses the linkage as the motion it produces (see ``_finger_slide``): each
finger slides on a prismatic joint of the gripper body, with the finger kept parallel, exactly
as the parallelogram keeps it. The right finger is gear-coupled to the left (the knuckles mesh
in the real gripper, so the fingers close symmetrically and a part is centred). The knuckles
keep their URDF joints but only follow the fingers for display: their motors track the
measured finger position and they have no collision geometry.
"""

from __future__ import annotations

import math

from factoryfloor.robots.spec import (
    GripperSpec,
    JointLimit,
    JointOverride,
    RobotSpec,
    register_robot,
)

_LIMITS = (  # from the URDF (velocity 3.14 rad/s on every joint); acceleration: a cautious 10
    JointLimit(lower=-6.2832, upper=6.2832, velocity=3.14, effort=50.0),
    JointLimit(lower=-2.059, upper=2.0944, velocity=3.14, effort=50.0),
    JointLimit(lower=-3.927, upper=0.19198, velocity=3.14, effort=32.0),
    JointLimit(lower=-6.2832, upper=6.2832, velocity=3.14, effort=32.0),
    JointLimit(lower=-1.69297, upper=3.1416, velocity=3.14, effort=32.0),
    JointLimit(lower=-6.2832, upper=6.2832, velocity=3.14, effort=20.0),
)

# Linkage geometry from the URDF, in the gripper body frame (y towards the left finger, z
# towards the fingertips; m). The left outer knuckle (drive_joint) hinges at _PIVOT and carries
# the finger joint at _KNUCKLE; at knuckle angle q the finger joint is at
# _PIVOT + Rx(q) _KNUCKLE, and the finger keeps the body's orientation.
_PIVOT = (0.035, 0.059098)
_KNUCKLE = (0.035465, 0.042039)
_STROKE_RAD = 0.85  # knuckle travel from open to closed (URDF limit of the drive joint)
# Knuckle angles at which the pads (inner faces 0.026 m inside the finger frame) are 56 mm and
# 24 mm apart: from first touch on a 40 mm cube turned diagonally to a 30 mm block with margin.
_GRASP_RANGE_RAD = (0.35, 0.65)
_PAD_CENTRE_DEPTH = 0.046  # finger pad centre below the finger joint (m); see collision_boxes
_FINGER_JOINTS = ("left_finger_joint", "right_finger_joint")
_KNUCKLE_JOINTS = (
    "drive_joint",
    "left_inner_knuckle_joint",
    "right_outer_knuckle_joint",
    "right_inner_knuckle_joint",
)


def _finger_joint_yz(q: float) -> tuple[float, float]:
    """Left finger joint position (y, z) in the gripper body frame at knuckle angle q (m)."""
    (py, pz), (ky, kz), c, s = _PIVOT, _KNUCKLE, math.cos(q), math.sin(q)
    return py + ky * c - kz * s, pz + ky * s + kz * c


def _finger_slide() -> tuple[tuple[float, float], tuple[float, float], float]:
    """The straight slide standing for the left finger's arc.

    The slide is the chord of the arc between the two knuckle angles of ``_GRASP_RANGE_RAD``,
    where it departs from the arc by at most 0.7 mm; it starts where the open finger is along
    the closing axis (y). Outside that range the real finger rises above the slide, by up to
    6 mm at the fully open end, where nothing is held.

    Returns:
        Origin (y, z) of the slide (open finger) and unit direction (y, z) in the gripper body
        frame, and the stroke (m) that closes the fingers as far as the real gripper.
    """
    (ya, za), (yb, zb) = (_finger_joint_yz(q) for q in _GRASP_RANGE_RAD)
    length = math.hypot(yb - ya, zb - za)
    dy, dz = (yb - ya) / length, (zb - za) / length
    y_open = _finger_joint_yz(0.0)[0]
    origin = (y_open, za + (y_open - ya) * dz / dy)
    stroke = (_finger_joint_yz(_STROKE_RAD)[0] - y_open) / dy
    return origin, (dy, dz), stroke


def _finger_overrides() -> tuple[dict[str, JointOverride], float, float]:
    """Prismatic joints of both fingers; the stroke (m); the pad centre depth at grasp (m)."""
    (y0, z0), (dy, dz), stroke = _finger_slide()
    overrides = {
        joint: JointOverride(
            type="prismatic",
            parent="xarm_gripper_base_link",
            xyz=(0.0, side * y0, z0),
            rpy=(0.0, 0.0, 0.0),
            axis=(0.0, side * dy, dz),
            lower=0.0,
            upper=stroke,
        )
        for joint, side in zip(_FINGER_JOINTS, (1.0, -1.0), strict=True)
    }
    # TCP: the pad centre when holding a 35 mm part (the middle of the parts' 30-40 mm widths);
    # 11 mm deeper than with the fingers open, as the linkage swings the pads down when closing.
    s_grasp = (y0 - 0.026 - 0.0175) / -dy
    return overrides, stroke, z0 + s_grasp * dz + _PAD_CENTRE_DEPTH


_OVERRIDES, _STROKE_M, _TCP_Z = _finger_overrides()
_KNUCKLE_PER_M = _STROKE_RAD / _STROKE_M  # display only: knuckle angle per metre of slide


@register_robot("xarm6")
def xarm6() -> RobotSpec:
    """UFACTORY xArm6: 6 revolute joints and a parallel gripper, TCP between the finger pads."""
    return RobotSpec(
        max_tcp_speed_m_s=1.0,  # UFACTORY's xArm 6 figure: 1 m/s at the TCP; 5 m/s^2 assumed
        max_tcp_acceleration_m_s2=5.0,
        name="xarm6",
        urdf="xarm/xarm6_with_gripper.urdf",
        data_root="pybullet_data",
        arm_joints=tuple(f"joint{i}" for i in range(1, 7)),
        ee_link="xarm_gripper_base_link",
        tcp_offset_m=(0.0, 0.0, _TCP_Z),
        gripper=GripperSpec(
            joints=_FINGER_JOINTS + _KNUCKLE_JOINTS,
            multipliers=(1.0, 1.0) + (_KNUCKLE_PER_M,) * len(_KNUCKLE_JOINTS),
            open_position=0.0,
            closed_position=_STROKE_M,
            # Per finger (N). 10 N on these 48 g fingers is the Panda's force-to-finger-mass
            # ratio (20 N on 100 g): at 20 solver iterations the pads then stay within a
            # millimetre of the part's surface. At 20 N they sink 3-8 mm into it, the grasp
            # drifts to one side and PickPlace drops to ~90%; at 5 N the belt's drag wins
            # (ConveyorPick ~70%). Two pads at 10 N hold 2 kg at friction 1, 20x the part.
            force=10.0,
            gear_coupled=("right_finger_joint",),
            # Display-only knuckles: they follow the measured finger positions (each side its
            # own finger), so they stay on the fingers when a part stops them.
            linkage_joints=_KNUCKLE_JOINTS,
            linkage_force=5.0,
            linkage_tracks_leader=True,
            leaders={
                "right_outer_knuckle_joint": "right_finger_joint",
                "right_inner_knuckle_joint": "right_finger_joint",
            },
            # About 3 rad/s of knuckle rotation: the fingers close on a 40 mm part in 4 steps.
            max_speed=0.15,
            finger_links=("left_finger", "right_finger"),
        ),
        limits=_LIMITS,
        home=(0.0, -0.2, -1.0, 0.0, 1.2, 0.0),
        ee_down_quaternion=(1.0, 0.0, 0.0, 0.0),
        # Finger pads as boxes on the inner faces (the convex finger mesh touches at one point),
        # from the finger mesh: inner face 26 mm from the finger joint, lowest 30 mm of the
        # finger, full finger width.
        collision_boxes={
            "left_finger": ((0.032, 0.01, 0.03), (0.0, -0.021, _PAD_CENTRE_DEPTH)),
            "right_finger": ((0.032, 0.01, 0.03), (0.0, 0.021, _PAD_CENTRE_DEPTH)),
        },
        joint_overrides=_OVERRIDES,
        visual_only_links=(
            "left_outer_knuckle",
            "left_inner_knuckle",
            "right_outer_knuckle",
            "right_inner_knuckle",
        ),
        # 5 cm closer to the cell than before: parts at the far corner of the table (0.6 m out,
        # 0.25 m aside) were within 2 cm of full extension, where the IK flipped the elbow and
        # ran joint 3 into its limit while carrying.
        base_position=(-0.05, 0.0, 0.0),
    )
