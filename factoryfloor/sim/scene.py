"""Builders for the factory cell: table, bins, parts and a belt conveyor.

World frame: origin at the robot base on the table top, x away from the robot, z up (m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factoryfloor.sim.backend import PyBullet
from factoryfloor.sim.urdf_tools import asset_path

TABLE_TOP_Z_M = 0.0
BIN_FLOOR_TOP_M = 0.01  # height of the bin's inner floor above its origin
BIN_INNER_HALF_M = 0.09
BELT_TOP_Z_M = 0.05
PART_MASS_KG = 0.1  # as in the part URDFs

PART_SHAPES: dict[str, tuple[str, float]] = {  # shape -> (URDF, half height in m at scale 1)
    "cube": ("part_cube.urdf", 0.02),
    "block": ("part_block.urdf", 0.025),
    "cylinder": ("part_cylinder.urdf", 0.02),
}
PART_COLORS: tuple[tuple[float, float, float, float], ...] = (
    (0.85, 0.2, 0.15, 1.0),
    (0.95, 0.65, 0.1, 1.0),
    (0.2, 0.7, 0.3, 1.0),
    (0.6, 0.3, 0.8, 1.0),
)


def add_table(sim: PyBullet) -> None:
    """Work table whose top surface is the plane z = 0, centred at x = 0.3 m, and a floor."""
    sim.create_shape(
        "floor", "box", (3.0, 3.0, 0.01), (0.3, 0.0, -0.76), rgba=(0.35, 0.35, 0.33, 1.0)
    )
    sim.load_urdf("table", asset_path("table.urdf"), (0.3, 0.0, TABLE_TOP_Z_M), fixed=True)


def add_bin(sim: PyBullet, name: str, position: np.ndarray) -> None:
    """Open bin with its bottom face centred at ``position`` (m)."""
    sim.load_urdf(name, asset_path("bin.urdf"), position, fixed=True)


def add_part(sim: PyBullet, name: str, shape: str, position: np.ndarray, color_index: int) -> float:
    """A free part of a registered shape; returns its half height (m)."""
    try:
        urdf, half_height = PART_SHAPES[shape]
    except KeyError:
        raise KeyError(f"unknown part shape {shape!r}; known: {sorted(PART_SHAPES)}") from None
    sim.load_urdf(name, asset_path(urdf), position)
    sim.set_color(name, PART_COLORS[color_index % len(PART_COLORS)])
    sim.set_dynamics(name, lateralFriction=1.0, spinningFriction=0.001, rollingFriction=0.0001)
    return half_height


def add_goal_marker(sim: PyBullet, name: str, radius_m: float) -> None:
    """A translucent green sphere without collision, for showing goals."""
    sim.create_shape(
        name, "sphere", (radius_m,), (0.0, 0.0, -1.0), rgba=(0.1, 0.9, 0.1, 0.4), collide=False
    )


@dataclass(frozen=True, kw_only=True)
class ConveyorConfig:
    """Belt conveyor placement and speed.

    Attributes:
        center_xy_m: Centre of the belt in the world (x, y) (m).
        speed_m_s: Belt surface speed along +y (m/s).
        wrap_m: The belt joint is moved back by this distance whenever it has advanced that far
            (m); the belt link is longer than the frame by more than twice this.
    """

    center_xy_m: tuple[float, float] = (0.5, -0.3)
    speed_m_s: float = 0.1
    wrap_m: float = 0.05


class Conveyor:
    """A belt that carries parts by friction.

    The belt link is driven by a velocity motor; when its joint has advanced ``wrap_m`` it is
    moved back by ``wrap_m`` with its velocity kept, which leaves the relative velocity at every
    contact unchanged, so parts on it keep moving and nothing is teleported but the belt itself.
    """

    def __init__(self, sim: PyBullet, config: ConveyorConfig, name: str = "conveyor") -> None:
        self.sim, self.config, self.name = sim, config, name
        x, y = config.center_xy_m
        sim.load_urdf(name, asset_path("conveyor.urdf"), (x, y, TABLE_TOP_Z_M), fixed=True)
        self.joint = sim.joint_index(name, "belt_joint")
        sim.set_dynamics(name, "belt", lateralFriction=1.0, linearDamping=0.0, angularDamping=0.0)
        self.speed_m_s = config.speed_m_s

    def start(self, speed_m_s: float) -> None:
        """Reset the belt joint and run the belt at ``speed_m_s`` (m/s)."""
        self.sim.set_joint_state(self.name, self.joint, 0.0, speed_m_s)
        self.set_speed(speed_m_s)

    def set_speed(self, speed_m_s: float) -> None:
        """Drive the belt at ``speed_m_s`` (m/s) from its current position."""
        self.speed_m_s = speed_m_s
        self.sim.control_velocity(self.name, self.joint, speed_m_s, force=1000.0)

    def update(self) -> None:
        """Call once per control step: moves the belt joint back after each ``wrap_m``."""
        q = self.sim.get_joint_states(self.name, [self.joint])[0][0]
        if q >= self.config.wrap_m:
            self.sim.reset_joint_keep_velocity(self.name, self.joint, q - self.config.wrap_m)
