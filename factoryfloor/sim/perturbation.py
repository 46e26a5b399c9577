"""Fixed physical perturbations of a cell: the sim-side axes of ``factoryfloor robustness``.

``gymnasium.make(task, perturb={"part_mass_scale": 2.0})`` makes a cell whose physics differ
from the nominal one by a fixed level on each named axis, applied at every reset after the task
has placed its parts (so the level also overrides ``randomize`` on that axis). Each axis has a
unit, a nominal level (no change) and a documented range; a direction, where an axis has one
(the camera's offset), is drawn from the env's ``np_random``.

Joint damping is not an axis: pybullet's ``changeDynamics(jointDamping=...)`` does not change
what a position-controlled arm does (measured: the TCP's travel under a fixed command moved by
0.1 mm at 100 N m s/rad, and the arm went unstable at 200); a weak drive is ``actuator_gain``.

The observation-side and link-side axes (sensor noise, image light and colour, action latency,
dropped actions) live outside the simulator, in ``factoryfloor.stack.robustness``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from factoryfloor.sim.scene import PART_MASS_KG


@dataclass(frozen=True)
class SimAxis:
    """One physical perturbation.

    Attributes:
        name: Key in ``perturb``.
        unit: Unit of the level.
        nominal: The level that changes nothing.
        low: Smallest level accepted.
        high: Largest level accepted.
        doc: What a level means, one line.
        applies: Whether the axis exists in this env (a cell without parts has no part mass).
        apply: Sets the level in the env (at each reset; draws through ``env.np_random``).
    """

    name: str
    unit: str
    nominal: float
    low: float
    high: float
    doc: str
    applies: Callable[[Any], bool]
    apply: Callable[[Any, float], None]


def _has_parts(env: Any) -> bool:
    return bool(env.task.handled_parts())


def _set_part_mass(env: Any, scale: float) -> None:
    for part in env.task.handled_parts():
        env.task.set_body_dynamics(part, mass=PART_MASS_KG * scale)


def _set_part_friction(env: Any, friction: float) -> None:
    for part in env.task.handled_parts():
        env.task.set_body_dynamics(part, lateralFriction=friction)


def _shift_policy_camera(env: Any, offset_m: float) -> None:
    direction = env.np_random.normal(size=3)
    env.policy_camera.shift(offset_m * direction / np.linalg.norm(direction))


def _has_policy_images(env: Any) -> bool:
    return env.obs_mode != "state"


SIM_AXES: dict[str, SimAxis] = {
    axis.name: axis
    for axis in (
        SimAxis(
            "part_mass_scale", "x", 1.0, 0.1, 10.0,
            f"part mass as a multiple of the nominal {PART_MASS_KG} kg",
            _has_parts, _set_part_mass,
        ),
        SimAxis(
            "part_friction", "-", 1.0, 0.05, 2.0,
            "lateral (Coulomb) friction coefficient of the parts (nominal 1.0)",
            _has_parts, _set_part_friction,
        ),
        SimAxis(
            "actuator_gain", "x", 1.0, 0.05, 2.0,
            "arm joints' position-control gain, a multiple of the robot's (weak or stiff drive)",
            lambda env: True, lambda env, g: env.robot.set_gain_scale(g),
        ),
        SimAxis(
            "camera_offset_m", "m", 0.0, 0.0, 0.1,
            "the policy camera's eye moved this far in a random direction each episode",
            _has_policy_images, _shift_policy_camera,
        ),
    )
}  # fmt: skip


def check_perturb(value: Any) -> bool:
    """Whether ``value`` is None or a mapping of known axis names to finite in-range levels."""
    if value is None:
        return True
    if not isinstance(value, Mapping):
        return False
    for name, level in value.items():
        axis = SIM_AXES.get(name)
        if axis is None or isinstance(level, bool) or not isinstance(level, int | float):
            return False
        if not (np.isfinite(level) and axis.low <= level <= axis.high):
            return False
    return True


def perturb_allowed() -> str:
    """What ``perturb`` accepts, for the one-line error."""
    listed = ", ".join(f"{a.name} [{a.low}, {a.high}] {a.unit}" for a in SIM_AXES.values())
    return f"pass None or a dict of levels: {{{listed}}}"


def apply_perturbation(env: Any, perturb: Mapping[str, float]) -> None:
    """Set each level of ``perturb`` in ``env`` (a ``FactoryEnv`` after its task's reset).

    Raises:
        ValueError: For an axis that does not exist in this env (e.g. part mass in Reach).
    """
    for name, level in perturb.items():
        axis = SIM_AXES[name]
        if not axis.applies(env):
            raise ValueError(f"perturbation {name!r} does not apply to this env")
        axis.apply(env, float(level))
