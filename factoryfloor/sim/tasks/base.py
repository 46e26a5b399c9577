"""Task base class and registry.

A Task owns the scene objects of its job, the goal, ``is_success`` and ``compute_reward``. It
gets the world, the env's random generator and only the robot callables it needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from factoryfloor.sim.backend import PyBullet
from factoryfloor.sim.observations import GoalSources, ObsSegment, Source

REWARD_TYPES = ("sparse", "dense")


@dataclass(frozen=True, kw_only=True)
class Randomization:
    """Domain randomisation ranges, used when the env is made with ``randomize=True``.

    Part poses are always random; these widen the physical parameters.

    Attributes:
        mass_scale: Part mass multiplier range (-).
        friction: Part lateral friction coefficient range (-).
        conveyor_speed_m_s: Belt speed range (m/s).
        camera_jitter_m: Camera eye offset, uniform per axis in +-this (m).
        wrist_camera_jitter_m: Wrist camera mount offset, uniform per axis in +-this (m, link
            frame); drawn only in ``obs_mode="camera"``.
    """

    mass_scale: tuple[float, float] = (0.5, 1.5)
    friction: tuple[float, float] = (0.6, 1.2)
    conveyor_speed_m_s: tuple[float, float] = (0.06, 0.14)
    camera_jitter_m: float = 0.02
    wrist_camera_jitter_m: float = 0.005


@dataclass(frozen=True)
class RobotHooks:
    """The robot callables a task may use (not the robot itself)."""

    tcp_position: Callable[[], np.ndarray]
    gripper_opening: Callable[[], float]


class Task(ABC):
    """One job in the cell.

    Args:
        sim: The world to build the scene in.
        robot: Callables giving the TCP position (m) and gripper opening.
        reward_type: "sparse" (0 on success, -1 otherwise) or "dense" (minus the goal distance).
        randomize: Apply the ``Randomization`` ranges at each reset.
    """

    distance_threshold_m: ClassVar[float] = 0.05
    goal_box_half_m: ClassVar[tuple[float, float, float] | None] = None  # box success instead
    workspace_low: ClassVar[tuple[float, float, float]] = (0.2, -0.45, 0.005)
    workspace_high: ClassVar[tuple[float, float, float]] = (0.8, 0.45, 0.45)
    # Where the goals come from in a real cell: by default the achieved goal is a part's true
    # position (sim only) and the goal is a pose of the cell layout (a bin).
    goal_sources: ClassVar[GoalSources] = GoalSources(
        achieved_goal=Source.PRIVILEGED, desired_goal=Source.REAL
    )

    def __init__(self, sim: PyBullet, robot: RobotHooks, reward_type: str, randomize: bool) -> None:
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"reward must be one of {REWARD_TYPES}, not {reward_type!r}")
        self.sim, self.robot, self.reward_type = sim, robot, reward_type
        self.randomize, self.ranges = randomize, Randomization()
        self.goal = np.zeros(3)
        self._dynamics: dict[str, dict[str, float]] = {}
        self._build()

    @abstractmethod
    def _build(self) -> None:
        """Create the task's scene objects (once)."""

    @abstractmethod
    def reset(self, rng: np.random.Generator) -> None:
        """Place objects and draw a goal; every draw goes through ``rng``."""

    @abstractmethod
    def observe(self) -> tuple[list[float], Sequence[float]]:
        """One read of the task state per control step.

        Returns:
            The task part of the observation vector (``obs_size`` floats; units in the
            subclass) and the achieved goal (m, world, 3 floats).
        """

    @property
    @abstractmethod
    def obs_size(self) -> int:
        """Length of the task part of the observation vector."""

    @abstractmethod
    def obs_segments(self) -> tuple[ObsSegment, ...]:
        """The named segments of the task part of the observation vector, in order.

        Each says whether a real cell has it (``observations.real``) or only the simulator
        (``observations.privileged``); their sizes add up to ``obs_size``.
        """

    def achieved_goal(self) -> np.ndarray:
        """What the goal is compared with (m, world), shape (3,)."""
        return np.array(self.observe()[1])

    def desired_goal(self) -> np.ndarray:
        """The goal (m, world), shape (3,)."""
        return self.goal.copy()

    def after_step(self) -> None:  # noqa: B027  (an optional hook, empty by default)
        """Hook run after each control step (e.g. conveyor upkeep)."""

    def get_state(self) -> dict[str, Any]:
        """Python-side state that ``save_state`` must keep beyond the physics.

        Includes every dynamics change made through ``set_body_dynamics`` (pybullet's own
        snapshots keep positions and velocities, not masses or frictions).
        """
        return {
            "goal": self.goal.copy(),
            "dynamics": {k: dict(v) for k, v in self._dynamics.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``get_state``."""
        self.goal = state["goal"].copy()
        self._dynamics = {k: dict(v) for k, v in state["dynamics"].items()}
        for name, kwargs in self._dynamics.items():
            self.sim.set_dynamics(name, **kwargs)

    def set_body_dynamics(self, name: str, **kwargs: float) -> None:
        """Change a body's dynamics (``mass`` in kg, ``lateralFriction``) and remember it."""
        self._dynamics.setdefault(name, {}).update(kwargs)
        self.sim.set_dynamics(name, **kwargs)

    def is_success(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        """Vectorised success; shapes (..., 3) -> (...) bool.

        Within ``distance_threshold_m`` of the goal, or, when ``goal_box_half_m`` is set, inside
        the axis-aligned box of those half sizes around the goal (a part inside a bin).
        """
        diff = achieved - desired
        if self.goal_box_half_m is not None:
            return (np.abs(diff) <= self.goal_box_half_m).all(axis=-1)
        return (diff * diff).sum(axis=-1) < self.distance_threshold_m**2

    def success(self, achieved: Sequence[float], desired: Sequence[float]) -> bool:
        """``is_success`` for one goal pair, in plain Python (the per-step path)."""
        d = [a - b for a, b in zip(achieved, desired, strict=True)]
        if self.goal_box_half_m is not None:
            return all(abs(x) <= h for x, h in zip(d, self.goal_box_half_m, strict=True))
        return d[0] * d[0] + d[1] * d[1] + d[2] * d[2] < self.distance_threshold_m**2

    def compute_reward(
        self, achieved: np.ndarray, desired: np.ndarray, info: Any = None
    ) -> np.ndarray:
        """Vectorised reward (HER-compatible); shapes (..., 3) -> (...) float32."""
        if self.reward_type == "sparse":
            return -(~self.is_success(achieved, desired)).astype(np.float32)
        return -np.linalg.norm(achieved - desired, axis=-1).astype(np.float32)

    def handled_parts(self) -> list[str]:
        """Body names of the parts the robot handles this episode (none by default)."""
        return []

    def uniform(self, rng: np.random.Generator, bounds: tuple[float, float]) -> float:
        """One draw in [low, high] when randomising, else the midpoint."""
        return float(rng.uniform(*bounds)) if self.randomize else 0.5 * (bounds[0] + bounds[1])
