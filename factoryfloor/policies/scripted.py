"""Scripted experts: IK state machines that act from the observation alone.

They read only the observation dict (TCP, gripper, parts, goal), so the same expert can run in
process or behind the edge runtime. They need end-effector control (``control="ee"``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

Obs = dict[str, np.ndarray]
OPEN, CLOSED = 1.0, -1.0
HOVER_M = 0.08  # height above a part before descending (m)
CARRY_Z_M = 0.16  # carrying height (m)
RELEASE_ABOVE_GOAL_M = 0.05  # release height above the goal (m)


class ScriptedExpert(ABC):
    """Base class: ``reset()`` at episode start, then ``act(obs)`` each step.

    Args:
        max_ee_step_m: The env's largest TCP move per step (m), to scale actions.
        control_dt_s: Control period (s), for predicting moving parts.
    """

    def __init__(self, max_ee_step_m: float, control_dt_s: float) -> None:
        self.max_step, self.dt = max_ee_step_m, control_dt_s
        self.reset()

    def reset(self) -> None:
        """Forget the episode."""
        self.phase, self.phase_steps = 0, 0

    def _next(self, phase: int) -> None:
        self.phase, self.phase_steps = phase, 0

    def move(
        self,
        tcp: np.ndarray,
        target: np.ndarray,
        grip: float,
        feedforward: np.ndarray | None = None,
    ) -> np.ndarray:
        """Action taking the TCP toward ``target`` (m) at most one step, with a gripper command."""
        delta = target - tcp + (feedforward if feedforward is not None else 0.0)
        return np.append(np.clip(delta / self.max_step, -1.0, 1.0), grip).astype(np.float32)

    def act(self, obs: Obs) -> np.ndarray:
        """One action (dx, dy, dz, grip) in [-1, 1], shape (4,)."""
        self.phase_steps += 1
        return self._act(obs)

    @abstractmethod
    def _act(self, obs: Obs) -> np.ndarray: ...


class ReachExpert(ScriptedExpert):
    """Move straight to the goal."""

    def _act(self, obs: Obs) -> np.ndarray:
        return self.move(obs["observation"][:3], obs["desired_goal"], OPEN)


class PickPlaceExpert(ScriptedExpert):
    """Hover, descend, close, lift, carry over the goal, lower and release.

    Phases: 0 hover above the part, 1 descend, 2 close, 3 lift, 4 carry, 5 lower, 6 release.
    Each phase ends when its target is reached or after its step budget; a grasp that slips
    during the lift starts over.
    """

    grasp_steps = 6
    speeds = (1.0, 0.5, 1.0, 0.6, 0.6, 0.6, 1.0)  # fraction of the largest step, per phase
    lag_steps = 2.0  # control steps the TCP lags its setpoint by
    budgets = (100, 20, 6, 20, 40, 20, 1_000)  # steps per phase before moving on anyway

    def part_state(self, obs: Obs) -> tuple[np.ndarray, np.ndarray]:
        """Position (m) and velocity (m/s) of the part to pick."""
        o = obs["observation"]
        return o[7:10], o[10:13]

    def belt_velocity(self, obs: Obs) -> np.ndarray:
        """Velocity (m/s) of the surface the part rests on."""
        return np.zeros(3)

    def reachable(self, point: np.ndarray) -> np.ndarray:
        """Where to go for a part at ``point`` (m): the part itself on a still table."""
        return point

    def ready(self, part: np.ndarray) -> bool:
        """Whether the part at ``part`` (m) can be picked now."""
        return True

    def _targets(self, obs: Obs) -> list[tuple[np.ndarray, float, float]]:
        """Per phase: (TCP target (m), gripper command, tolerance (m))."""
        tcp, goal = obs["observation"][:3], obs["desired_goal"]
        part, _ = self.part_state(obs)
        # Lead the part by the belt's motion (not the part's measured velocity, which a touch of
        # the fingers would turn into a chase) over the arm's tracking lag.
        lead = self.reachable(part + self.belt_velocity(obs) * self.dt * self.lag_steps)
        grasp = np.array([*lead[:2], max(lead[2], 0.015)])
        above_goal = goal + np.array([0.0, 0.0, RELEASE_ABOVE_GOAL_M])
        return [
            (lead + np.array([0.0, 0.0, HOVER_M]), OPEN, 0.015),
            (grasp, OPEN, 0.008),
            (tcp + self.belt_velocity(obs) * self.dt, CLOSED, 0.0),
            (np.array([*tcp[:2], CARRY_Z_M]), CLOSED, 0.03),
            (np.array([*goal[:2], CARRY_Z_M]), CLOSED, 0.015),
            (above_goal, CLOSED, 0.015),
            (above_goal + np.array([0.0, 0.0, 0.05]), OPEN, 0.0),
        ]

    def _act(self, obs: Obs) -> np.ndarray:
        tcp = obs["observation"][:3]
        part, _ = self.part_state(obs)
        if self.phase in (3, 4) and float(np.linalg.norm(part - tcp)) > 0.05:  # slipped: retry
            self._next(0)
        target, grip, tol = self._targets(obs)[self.phase]
        reached = tol > 0 and float(np.linalg.norm(target - tcp)) < tol
        if self.phase == 0:  # only start descending on a part that can be picked now
            reached = reached and self.ready(part)
        if reached or self.phase_steps >= self.budgets[self.phase]:
            self._next(self.phase + 1)
        feedforward = self.belt_velocity(obs) * self.dt if self.phase <= 2 else None
        action = self.move(tcp, target, grip, feedforward)
        action[:3] *= self.speeds[self.phase]
        return action


class ConveyorPickExpert(PickPlaceExpert):
    """PickPlaceExpert aimed at the most advanced part still within reach, tracking the belt."""

    reach_y_m = (-0.3, 0.25)

    def reachable(self, point: np.ndarray) -> np.ndarray:
        """Wait at the upstream edge of the reach window for parts still outside it."""
        return np.array([point[0], max(point[1], self.reach_y_m[0]), point[2]])

    def ready(self, part: np.ndarray) -> bool:
        """Only parts inside the reach window can be picked."""
        return bool(self.reach_y_m[0] <= part[1] <= self.reach_y_m[1])

    def reset(self) -> None:
        """Forget the chosen part."""
        super().reset()
        self.chosen: int | None = None

    def belt_velocity(self, obs: Obs) -> np.ndarray:
        """Belt velocity (m/s), from the last observation entry (speed along +y)."""
        return np.array([0.0, float(obs["observation"][-1]), 0.0])

    def part_state(self, obs: Obs) -> tuple[np.ndarray, np.ndarray]:
        """State of the chosen part; chooses the most downstream reachable part when needed."""
        o = obs["observation"]
        n = (len(o) - 8) // 6
        states = o[7 : 7 + 6 * n].reshape(n, 6)
        if self.chosen is None or self.phase == 0:
            y = states[:, 1]
            ok = (y > self.reach_y_m[0]) & (y < self.reach_y_m[1])
            self.chosen = (
                int(np.argmax(np.where(ok, y, -np.inf))) if ok.any() else int(np.argmax(y))
            )
        return states[self.chosen, :3], states[self.chosen, 3:]


def make_expert(env: Any) -> ScriptedExpert:
    """The scripted expert for a (possibly wrapped) FactoryEnv made with ``control="ee"``."""
    base = env.unwrapped
    if base.robot.control != "ee":
        raise ValueError("scripted experts need control='ee'; make the env with control='ee'")
    expert: type[ScriptedExpert] = base.task_entry.load_expert()
    return expert(base.robot.spec.max_ee_step_m, base.sim.physics.control_dt_s)
