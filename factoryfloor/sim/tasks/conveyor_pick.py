"""ConveyorPick: take a part off a moving belt and place it in a bin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from factoryfloor.sim.observations import ObsSegment, privileged, real
from factoryfloor.sim.scene import (
    BELT_TOP_Z_M,
    BIN_FLOOR_TOP_M,
    PART_MASS_KG,
    PART_SHAPES,
    Conveyor,
    ConveyorConfig,
    add_bin,
    add_goal_marker,
    add_part,
    add_table,
)
from factoryfloor.sim.tasks.base import Task


class ConveyorPickTask(Task):
    """Pick any part from a running conveyor and place it in a bin.

    Task: parts (one cube, one block, one cylinder, in random order) ride the belt along +y
        into the robot's reach; grasp one and put it in the bin beside the conveyor.
    Randomizations: order of the parts; lateral offset of each part on the belt
        [-0.05, 0.05] m; arrival times (first part 0.15-0.3 m upstream of the belt centre, then
        gaps of 0.12-0.22 m); part yaw; bin x [0.24, 0.28] m, y [0.25, 0.32] m. With
        ``randomize``: belt speed 0.06-0.14 m/s (else ``belt_speed_m_s``, 0.1 m/s by default),
        part mass and friction.
    Success: the part nearest the goal lies in the bin: its centre within 0.07 m (x, y) and
        0.03 m (z) of the goal, the centre of the bin floor raised by 2 cm.
    Reward: sparse 0 / -1, or dense -||part - goal|| (m), for the part nearest the goal.
    """

    goal_box_half_m = (0.07, 0.07, 0.03)

    def __init__(self, *args: Any, belt_speed_m_s: float = 0.1, **kwargs: Any) -> None:
        """Args as ``Task``, plus ``belt_speed_m_s``: belt speed without randomisation (m/s)."""
        if not 0.0 < belt_speed_m_s <= 0.5:
            raise ValueError(f"belt_speed_m_s must be in (0, 0.5] m/s, got {belt_speed_m_s}")
        self.belt_speed_m_s = belt_speed_m_s
        super().__init__(*args, **kwargs)

    bin_low = np.array([0.24, 0.25])
    bin_high = np.array([0.28, 0.32])

    def _build(self) -> None:
        add_table(self.sim)
        self.conveyor = Conveyor(self.sim, ConveyorConfig())
        add_bin(self.sim, "bin", np.array([0.26, 0.28, 0.0]))
        self.shapes = sorted(PART_SHAPES)
        self.half_heights = [
            add_part(self.sim, f"part_{i}", s, np.array([-0.2, 0.1 * i, 0.05]), i)
            for i, s in enumerate(self.shapes)
        ]
        self.parts = [f"part_{i}" for i in range(len(self.shapes))]
        add_goal_marker(self.sim, "target", 0.02)

    def reset(self, rng: np.random.Generator) -> None:
        """Start the belt, place the bin and line the parts up upstream."""
        speed = (
            float(rng.uniform(*self.ranges.conveyor_speed_m_s))
            if self.randomize
            else self.belt_speed_m_s
        )
        self.conveyor.start(speed)
        bin_xy = rng.uniform(self.bin_low, self.bin_high)
        self.sim.set_base_pose("bin", np.array([*bin_xy, 0.0]))
        self.goal = np.array([*bin_xy, BIN_FLOOR_TOP_M + 0.02])
        self.sim.set_base_pose("target", self.goal)
        x0, y0 = self.conveyor.config.center_xy_m
        y = y0 - rng.uniform(0.15, 0.3)
        for k in rng.permutation(len(self.parts)):
            self._place_on_belt(rng, int(k), x0 + rng.uniform(-0.05, 0.05), y, speed)
            y -= rng.uniform(0.12, 0.22)

    def _place_on_belt(
        self, rng: np.random.Generator, k: int, x: float, y: float, speed: float
    ) -> None:
        yaw = rng.uniform(0.0, 2 * np.pi)
        quat = (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2))
        name = self.parts[k]
        self.sim.set_base_pose(name, np.array([x, y, BELT_TOP_Z_M + self.half_heights[k]]), quat)
        self.sim.set_base_velocity(name, np.array([0.0, speed, 0.0]))
        if self.randomize:
            mass = PART_MASS_KG * self.uniform(rng, self.ranges.mass_scale)
            self.set_body_dynamics(
                name, mass=mass, lateralFriction=self.uniform(rng, self.ranges.friction)
            )

    def handled_parts(self) -> list[str]:
        """Every part on the belt."""
        return list(self.parts)

    def after_step(self) -> None:
        """Keep the belt running."""
        self.conveyor.update()

    @property
    def obs_size(self) -> int:
        """Per part: position (3) and velocity (3); then the belt speed (1)."""
        return 6 * len(self.parts) + 1

    def obs_segments(self) -> tuple[ObsSegment, ...]:
        """Per part its true position and velocity (sim only); the belt speed (the drive's)."""
        per_part = tuple(
            seg
            for i in range(len(self.parts))
            for seg in (
                privileged(f"part_{i}_position", 3, "m, world"),
                privileged(f"part_{i}_velocity", 3, "m/s, world", visible=False),
            )
        )
        return (*per_part, real("belt_speed", 1, "m/s along +y"))

    def observe(self) -> tuple[list[float], Sequence[float]]:
        """Per part: position (m) and velocity (m/s), then the belt speed (m/s).

        The achieved goal is the position (m) of the part nearest the goal.
        """
        obs: list[float] = []
        nearest, best = (0.0, 0.0, 0.0), float("inf")
        gx, gy, gz = self.goal
        for part in self.parts:
            p = self.sim.base_position(part)
            obs += [*p, *self.sim.base_velocity(part)]
            d = (p[0] - gx) ** 2 + (p[1] - gy) ** 2 + (p[2] - gz) ** 2
            if d < best:
                nearest, best = p, d
        obs.append(self.conveyor.speed_m_s)
        return obs, nearest

    def get_state(self) -> dict[str, Any]:
        """Goal, dynamics and belt speed."""
        return {**super().get_state(), "speed": self.conveyor.speed_m_s}

    def set_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``get_state``."""
        super().set_state(state)
        self.conveyor.set_speed(state["speed"])
