"""Reach: move the tool centre point to a target point above the table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from factoryfloor.sim.observations import GoalSources, ObsSegment, Source
from factoryfloor.sim.scene import add_goal_marker, add_table
from factoryfloor.sim.tasks.base import Task


class ReachTask(Task):
    """Reach a point.

    Task: bring the TCP within 5 cm of the target.
    Randomizations: target uniform in x [0.3, 0.6] m, y [-0.25, 0.25] m, z [0.02, 0.35] m.
    Success: ||tcp - target|| < 0.05 m.
    Reward: sparse 0 / -1, or dense -||tcp - target|| (m).
    """

    goal_low = np.array([0.3, -0.25, 0.02])
    goal_high = np.array([0.6, 0.25, 0.35])
    # The achieved goal is the TCP (forward kinematics); the target is commanded.
    goal_sources = GoalSources(achieved_goal=Source.REAL, desired_goal=Source.REAL)

    def _build(self) -> None:
        add_table(self.sim)
        add_goal_marker(self.sim, "target", self.distance_threshold_m / 2)

    def reset(self, rng: np.random.Generator) -> None:
        """Draw a target and show it."""
        self.goal = rng.uniform(self.goal_low, self.goal_high)
        self.sim.set_base_pose("target", self.goal)

    @property
    def obs_size(self) -> int:
        """No task-specific observation beyond the goal."""
        return 0

    def obs_segments(self) -> tuple[ObsSegment, ...]:
        """None: the target is the desired goal."""
        return ()

    def observe(self) -> tuple[list[float], Sequence[float]]:
        """No task observation (the target is the desired goal); achieved goal: the TCP (m)."""
        return [], self.robot.tcp_position()
