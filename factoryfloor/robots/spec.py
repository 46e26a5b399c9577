"""Robot descriptions shared by the simulator and the edge runtime.

Pure data and NumPy: this module must never import pybullet, zmq or torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

CONTROL_MODES = ("ee", "joints")


@dataclass(frozen=True, kw_only=True)
class JointLimit:
    """Limits of one joint.

    Attributes:
        lower: Lower position limit (rad for revolute, m for prismatic).
        upper: Upper position limit (rad or m).
        velocity: Maximum speed (rad/s or m/s).
        effort: Maximum torque or force (N m or N).
        acceleration: Maximum acceleration (rad/s^2 or m/s^2); the edge safety layer's rate
            limit comes from it.
    """

    lower: float
    upper: float
    velocity: float
    effort: float
    acceleration: float = 10.0

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise ValueError(f"joint limit lower={self.lower} must be < upper={self.upper}")
        if min(self.velocity, self.effort, self.acceleration) <= 0:
            raise ValueError("joint velocity, effort and acceleration limits must be positive")


JOINT_TYPES = ("revolute", "continuous", "prismatic", "fixed")


@dataclass(frozen=True, kw_only=True)
class JointOverride:
    """A change to one URDF joint, made when the URDF is loaded (``RobotSpec.joint_overrides``).

    For mechanisms that URDF can only state through ``<mimic>`` joints, which pybullet ignores:
    a closed linkage can be re-expressed as the motion it produces (a parallelogram finger, for
    example, translates without turning). Fields left ``None`` keep the URDF's value; the
    joint's ``<mimic>`` tag is dropped, since it described the old kinematics.

    Attributes:
        type: Joint type, one of ``JOINT_TYPES``.
        parent: Parent link name.
        xyz: Origin of the joint frame in the parent link frame (m).
        rpy: Orientation of the joint frame, URDF roll-pitch-yaw (rad).
        axis: Joint axis in the joint frame (unit vector).
        lower: Lower position limit (m or rad).
        upper: Upper position limit (m or rad).
    """

    type: str | None = None
    parent: str | None = None
    xyz: tuple[float, float, float] | None = None
    rpy: tuple[float, float, float] | None = None
    axis: tuple[float, float, float] | None = None
    lower: float | None = None
    upper: float | None = None

    def __post_init__(self) -> None:
        if self.type is not None and self.type not in JOINT_TYPES:
            raise ValueError(f"JointOverride.type must be one of {JOINT_TYPES}")
        if self.axis is not None and abs(float(np.linalg.norm(self.axis)) - 1.0) > 1e-6:
            raise ValueError("JointOverride.axis must be a unit vector")
        if self.lower is not None and self.upper is not None and not self.lower < self.upper:
            raise ValueError("JointOverride.lower must be < upper")


@dataclass(frozen=True, kw_only=True)
class GripperSpec:
    """A parallel gripper driven by one command mapped to several (mimic) joints.

    The command is an opening in [0, 1] (0 closed, 1 open); each joint's target is
    ``closed + command * (open - closed)`` scaled by its multiplier.

    Attributes:
        joints: Names of the gripper joints driven together.
        multipliers: One factor per joint (mimic multiplier of the URDF).
        open_position: Drive position when fully open (m or rad).
        closed_position: Drive position when fully closed (m or rad).
        force: Motor force or torque of the gripper joints (N or N m).
        linkage_force: Force or torque (N or N m) of motor-driven mimic joints that stand for a
            rigid linkage (not the fingers' own drives); defaults to ``force``.
        linkage_joints: Those linkage joints.
        finger_links: Names of the links that touch the part (for friction settings).
        gear_coupled: Joints that follow the first joint through a gear constraint instead of a
            motor of their own (mechanically linked fingers, such as the Panda's); the rest
            are motor-driven. Coupling the two sides keeps a grasped part from sliding along
            the closing axis.
        max_speed: Largest speed of the drive position (m/s or rad/s); commands are rate-limited
            to it, as a real gripper's controller does, so that fingers close on parts gently.
        leaders: Joint -> the joint it mimics, for mechanisms whose joints are chained (in a
            four-bar linkage a finger mimics its own knuckle, not the drive); a joint not listed
            mimics the first joint. A follower keeps ``q = multiplier / leader's multiplier *
            q_leader``, through a gear constraint (``gear_coupled``) or, with
            ``linkage_tracks_leader``, through its motor.
        linkage_tracks_leader: Motor-driven ``linkage_joints`` track the measured position of
            their leader (plus the drive's commanded change over the step) instead of the
            commanded drive. A linkage joint is pinned to the links around it: when a part
            stops the fingers, it must stay where the knuckles are rather than run on to the
            commanded closure (which would tilt the fingers).
    """

    joints: tuple[str, ...]
    multipliers: tuple[float, ...]
    open_position: float
    closed_position: float
    force: float
    linkage_force: float | None = None
    linkage_joints: tuple[str, ...] = ()
    finger_links: tuple[str, ...]
    max_speed: float
    gear_coupled: tuple[str, ...] = ()
    leaders: dict[str, str] = field(default_factory=dict)
    linkage_tracks_leader: bool = False

    def __post_init__(self) -> None:
        if self.max_speed <= 0:
            raise ValueError("GripperSpec.max_speed must be positive")
        if not set(self.gear_coupled) <= set(self.joints[1:]):
            raise ValueError(
                "GripperSpec.gear_coupled must name gripper joints other than the first"
            )
        for follower, leader in self.leaders.items():
            if {follower, leader} - set(self.joints) or leader == follower:
                raise ValueError("GripperSpec.leaders must map gripper joints to other ones")
        if len(self.joints) != len(self.multipliers):
            raise ValueError("GripperSpec needs one multiplier per joint")
        if not self.joints:
            raise ValueError("GripperSpec needs at least one joint")

    @property
    def joint_forces(self) -> tuple[float, ...]:
        """Motor force or torque limit per gripper joint (N or N m)."""
        linkage = self.force if self.linkage_force is None else self.linkage_force
        return tuple(linkage if j in self.linkage_joints else self.force for j in self.joints)

    def drive(self, opening: float) -> float:
        """Drive position (m or rad) for an opening in [0, 1] (0 closed, 1 open)."""
        opening = min(max(float(opening), 0.0), 1.0)
        return self.closed_position + opening * (self.open_position - self.closed_position)

    def leader(self, joint: str) -> str:
        """The joint that ``joint`` mimics (see ``leaders``)."""
        return self.leaders.get(joint, self.joints[0])

    def targets(self, drive: float) -> np.ndarray:
        """Joint targets for a drive position (m or rad); shape (len(joints),)."""
        return drive * np.asarray(self.multipliers, dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class RobotSpec:
    """Declarative description of an arm with a gripper.

    Attributes:
        name: Registry name, e.g. ``"panda"``.
        urdf: URDF path relative to ``data_root`` (``"pybullet_data"`` or ``"factoryfloor"``).
        data_root: Where the URDF lives: ``"pybullet_data"`` or ``"factoryfloor"`` (our assets).
        arm_joints: Names of the actuated arm joints, base to tip.
        ee_link: Name of the link the tool is attached to.
        tcp_offset_m: Tool centre point (between the fingertips) in the ``ee_link`` frame (m).
        gripper: The gripper description.
        limits: Per arm joint limits, same order as ``arm_joints``.
        home: Home configuration of the arm joints (rad), shape (n_arm,).
        ee_down_quaternion: TCP orientation (x, y, z, w) in the world frame that points the
            gripper straight down, used by end-effector control.
        control_modes: Supported control modes; a subset of ``CONTROL_MODES``.
        max_ee_step_m: Largest TCP displacement per control step under "ee" control (m).
        max_joint_step_rad: Largest joint displacement per control step under "joints" (rad).
        max_tcp_speed_m_s: Largest TCP speed (m/s): bounds "ee" commands at the edge.
        max_tcp_acceleration_m_s2: Largest TCP acceleration (m/s^2): the "ee" rate limit.
        collision_boxes: Link name -> (size (m), centre (m)) of a box replacing that link's
            collision mesh, centre in the frame of the URDF collision element (finger pads).
        joint_overrides: Joint name -> changes made to that URDF joint when it is loaded.
        visual_only_links: Links whose collision geometry is dropped when the URDF is loaded
            (parts of a mechanism that only follow the rest for display).
        position_gain: Proportional gain of the simulated joint position controllers (-).
        base_position: Mounting position of the base in the world frame (m).
        link_colors: Optional RGBA per link name for low-poly rendering.
    """

    name: str
    urdf: str
    data_root: str
    arm_joints: tuple[str, ...]
    ee_link: str
    tcp_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gripper: GripperSpec
    limits: tuple[JointLimit, ...]
    home: tuple[float, ...]
    ee_down_quaternion: tuple[float, float, float, float]
    control_modes: tuple[str, ...] = CONTROL_MODES
    max_ee_step_m: float = 0.05
    max_joint_step_rad: float = 0.1
    max_tcp_speed_m_s: float = 1.0
    max_tcp_acceleration_m_s2: float = 5.0
    collision_boxes: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = (
        field(default_factory=dict)
    )
    joint_overrides: dict[str, JointOverride] = field(default_factory=dict)
    visual_only_links: tuple[str, ...] = ()
    position_gain: float = 0.3
    base_position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    link_colors: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.arm_joints)
        if len(self.limits) != n or len(self.home) != n:
            raise ValueError(
                f"{self.name}: arm_joints, limits and home must have the same length "
                f"(got {n}, {len(self.limits)}, {len(self.home)})"
            )
        for joint, q, lim in zip(self.arm_joints, self.home, self.limits, strict=True):
            if not lim.lower <= q <= lim.upper:
                raise ValueError(
                    f"{self.name}: home of {joint}={q} outside [{lim.lower}, {lim.upper}]"
                )
        unknown = set(self.control_modes) - set(CONTROL_MODES)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown control modes {sorted(unknown)}; use {CONTROL_MODES}"
            )
        if self.data_root not in ("pybullet_data", "factoryfloor"):
            raise ValueError("data_root must be 'pybullet_data' or 'factoryfloor'")

    @property
    def n_arm(self) -> int:
        """Number of actuated arm joints."""
        return len(self.arm_joints)

    @property
    def lower(self) -> np.ndarray:
        """Lower position limits of the arm joints, shape (n_arm,)."""
        return np.array([lim.lower for lim in self.limits])

    @property
    def upper(self) -> np.ndarray:
        """Upper position limits of the arm joints, shape (n_arm,)."""
        return np.array([lim.upper for lim in self.limits])


_REGISTRY: dict[str, Callable[[], RobotSpec]] = {}


def register_robot(name: str) -> Callable[[Callable[[], RobotSpec]], Callable[[], RobotSpec]]:
    """Decorator registering a zero-argument factory returning a RobotSpec under ``name``."""

    def wrap(factory: Callable[[], RobotSpec]) -> Callable[[], RobotSpec]:
        if name in _REGISTRY:
            raise ValueError(f"robot {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def get_robot_spec(name: str) -> RobotSpec:
    """Return the RobotSpec registered under ``name``.

    Raises:
        KeyError: With the list of known robots when ``name`` is not registered.
    """
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown robot {name!r}; known robots: {sorted(_REGISTRY)}") from None


def robot_names() -> list[str]:
    """Names of all registered robots, sorted."""
    return sorted(_REGISTRY)
