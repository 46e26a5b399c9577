"""Robot descriptions (pure data): ``get_robot_spec("panda")``, ``robot_names()``."""

from __future__ import annotations

from factoryfloor.robots import panda, xarm6
from factoryfloor.robots.spec import (
    CONTROL_MODES,
    GripperSpec,
    JointLimit,
    RobotSpec,
    get_robot_spec,
    register_robot,
    robot_names,
)

__all__ = [
    "CONTROL_MODES",
    "GripperSpec",
    "JointLimit",
    "RobotSpec",
    "get_robot_spec",
    "panda",
    "register_robot",
    "robot_names",
    "xarm6",
]
