"""PickPlace: pick a part from the table and place it in a bin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from factoryfloor.sim.observations import ObsSegment, privileged
from factoryfloor.sim.scene import (
    BIN_FLOOR_TOP_M,
    PART_MASS_KG,
    PART_SHAPES,
    add_bin,
    add_goal_marker,
    add_part,
    add_table,
)
from factoryfloor.sim.tasks.base import Task


class PickPlaceTask(Task):
    """Move a part from the table into a bin.

    Task: grasp the part (a cube, block or cylinder) and put it in the bin.
    Randomizations: part shape and colour; part x [0.35, 0.6] m, y [-0.25, 0.0] m, yaw [0, 2pi);
        bin x [0.35, 0.55] m, y [0.22, 0.32] m. With ``randomize``: part mass and friction.
    Success: the part lies in the bin: its centre within 0.07 m (x, y) and 0.03 m (z) of
        the goal, the centre of the bin floor raised by 2 cm.
    Reward: sparse 0 / -1, or dense -||part - goal|| (m).
    """

    goal_box_half_m = (0.07, 0.07, 0.03)
    part_low = np.array([0.35, -0.25])
    part_high = np.array([0.6, 0.0])
    bin_low = np.array([0.35, 0.22])
    bin_high = np.array([0.55, 0.32])

    def _build(self) -> None:
        add_table(self.sim)
        add_bin(self.sim, "bin", np.array([0.45, 0.27, 0.0]))
        self.shapes = sorted(PART_SHAPES)
        self.half_heights = {
            s: add_part(self.sim, f"part_{s}", s, self._spare_position(i, 0.05), i)
            for i, s in enumerate(self.shapes)
        }
        self.shape = self.shapes[0]
        self._one_hot = [float(s == self.shape) for s in self.shapes]
        add_goal_marker(self.sim, "target", 0.02)

    @staticmethod
    def _spare_position(index: int, half_height_m: float) -> np.ndarray:
        """Where unused parts wait: a row at the back of the table, behind the robot (m)."""
        return np.array([-0.2, -0.15 + 0.1 * index, half_height_m])

    def _park(self) -> None:
        """Put every part on its spare spot, static (mass 0) so it costs no solver time."""
        for i, s in enumerate(self.shapes):
            self.set_body_dynamics(f"part_{s}", mass=0.0)
            self.sim.set_base_pose(f"part_{s}", self._spare_position(i, self.half_heights[s]))

    def reset(self, rng: np.random.Generator) -> None:
        """Choose a part, place it and the bin."""
        self._park()
        self.shape = self.shapes[int(rng.integers(len(self.shapes)))]
        self._one_hot = [float(s == self.shape) for s in self.shapes]
        bin_xy = rng.uniform(self.bin_low, self.bin_high)
        self.sim.set_base_pose("bin", np.array([*bin_xy, 0.0]))
        self.goal = np.array([*bin_xy, BIN_FLOOR_TOP_M + 0.02])
        self.sim.set_base_pose("target", self.goal)
        xy = rng.uniform(self.part_low, self.part_high)
        yaw = rng.uniform(0.0, 2 * np.pi)
        quat = (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2))
        self.sim.set_base_pose(self.part, np.array([*xy, self.half_heights[self.shape]]), quat)
        self._randomize_physics(rng)

    def _randomize_physics(self, rng: np.random.Generator) -> None:
        """Give the active part its mass (kg) and friction, drawn when randomising."""
        mass = PART_MASS_KG * self.uniform(rng, self.ranges.mass_scale)
        friction = self.uniform(rng, self.ranges.friction) if self.randomize else 1.0
        self.set_body_dynamics(self.part, mass=mass, lateralFriction=friction)

    def handled_parts(self) -> list[str]:
        """The active part."""
        return [self.part]

    @property
    def part(self) -> str:
        """Body name of the active part."""
        return f"part_{self.shape}"

    @property
    def obs_size(self) -> int:
        """Part position (3), part velocity (3), shape one-hot (3)."""
        return 6 + len(self.shapes)

    def obs_segments(self) -> tuple[ObsSegment, ...]:
        """All sim-only: the true part pose and velocity, and which part was drawn.

        The shape one-hot is privileged too: a camera policy must tell the part from the image.
        """
        return (
            privileged("part_position", 3, "m, world"),
            privileged("part_velocity", 3, "m/s, world", visible=False),
            privileged("part_shape_one_hot", len(self.shapes), "one-hot over sorted shapes"),
        )

    def observe(self) -> tuple[list[float], Sequence[float]]:
        """Part position (m), linear velocity (m/s) and shape one-hot; achieved: part position."""
        position = self.sim.base_position(self.part)
        velocity = self.sim.base_velocity(self.part)
        return [*position, *velocity, *self._one_hot], position

    def get_state(self) -> dict[str, Any]:
        """Goal, dynamics and active part."""
        return {**super().get_state(), "shape": self.shape}

    def set_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``get_state``."""
        super().set_state(state)
        self.shape = state["shape"]
        self._one_hot = [float(s == self.shape) for s in self.shapes]
