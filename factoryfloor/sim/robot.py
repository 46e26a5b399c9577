"""A simulated arm with a gripper, driven from any RobotSpec.

Two control modes, both relative (delta) commands per control step:

* ``"ee"``: action = (dx, dy, dz, grip) in [-1, 1]; the tool centre point (TCP) moves by
  ``action[:3] * spec.max_ee_step_m`` from where it is, in the world frame, with the gripper
  pointing down (IK), clipped to the cell's workspace box.
* ``"joints"``: action = (dq_1..dq_n, grip) in [-1, 1]; joint targets move by
  ``action[:n] * spec.max_joint_step_rad``, clipped to the joint limits.

``grip`` is an absolute opening command: -1 closed, +1 fully open; the gripper moves toward it
at most at ``spec.gripper.max_speed``.

The per-step path works on Python floats and lists: for 3- to 9-element vectors that is several
times faster than NumPy, and pybullet converts lists faster than arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

import numpy as np
from gymnasium import spaces

from factoryfloor.robots import RobotSpec
from factoryfloor.sim.backend import PyBullet
from factoryfloor.sim.observations import ObsSegment, real
from factoryfloor.sim.urdf_tools import data_root, robot_urdf


def rotate(q: Sequence[float], v: Sequence[float]) -> list[float]:
    """Rotate vector ``v`` (3,) by the unit quaternion ``q`` (x, y, z, w)."""
    x, y, z, w = q
    tx, ty, tz = 2 * (y * v[2] - z * v[1]), 2 * (z * v[0] - x * v[2]), 2 * (x * v[1] - y * v[0])
    return [
        v[0] + w * tx + (y * tz - z * ty),
        v[1] + w * ty + (z * tx - x * tz),
        v[2] + w * tz + (x * ty - y * tx),
    ]


def _clip(values: Sequence[float], low: Sequence[float], high: Sequence[float]) -> list[float]:
    return [min(max(v, lo), hi) for v, lo, hi in zip(values, low, high, strict=True)]


class Arm:
    """An arm + gripper in a PyBullet world.

    Measurements (TCP position and velocity, joint positions) are read once per control step by
    ``measure()``, which the env calls after each physics step and reset, and are reused by
    observations and by the next action.

    Args:
        sim: The world.
        spec: Robot description.
        control: "ee" or "joints".
        workspace_low: Lower corner of the TCP workspace box (m, world frame), shape (3,).
        workspace_high: Upper corner of the TCP workspace box (m, world frame), shape (3,).
        lowpoly: Load collision meshes as visuals (fast camera rendering).
        ik_iterations: IK iterations per control step (warm-started from the current pose).
        ik_damping: Damped-least-squares damping of every joint in the IK solver.
        name: Body name in ``sim``.
    """

    def __init__(
        self,
        sim: PyBullet,
        spec: RobotSpec,
        control: str,
        workspace_low: Sequence[float],
        workspace_high: Sequence[float],
        lowpoly: bool = False,
        ik_iterations: int = 2,
        ik_damping: float = 0.003,
        name: str = "robot",
    ) -> None:
        if control not in spec.control_modes:
            raise ValueError(
                f"robot {spec.name!r} supports control {spec.control_modes}, not {control!r}"
            )
        self.sim, self.spec, self.control, self.name = sim, spec, control, name
        self.ws_low, self.ws_high = (
            [float(v) for v in workspace_low],
            [float(v) for v in workspace_high],
        )
        self.ik_iterations = ik_iterations
        urdf = data_root(spec.data_root) / spec.urdf
        path = robot_urdf(
            urdf,
            lowpoly,
            spec.collision_boxes,
            joint_overrides=spec.joint_overrides,
            visual_only_links=spec.visual_only_links,
        )
        sim.load_urdf(name, path, spec.base_position, fixed=True)
        self.arm_idx = [sim.joint_index(name, j) for j in spec.arm_joints]
        self.grip_idx = [sim.joint_index(name, j) for j in spec.gripper.joints]
        self.ee_idx = sim.link_index(name, spec.ee_link)
        movable = sim.movable_joints(name)
        self._ik_columns = [movable.index(j) for j in self.arm_idx]
        self._arm_columns = itemgetter(*self._ik_columns)  # IK output -> arm joint values
        self._ik_damping = [ik_damping] * len(movable)
        self._down = [float(v) for v in spec.ee_down_quaternion]
        self._tcp_offset = [float(v) for v in spec.tcp_offset_m]
        self._has_tcp_offset = any(self._tcp_offset)
        self._link_from_tcp = [-v for v in rotate(self._down, self._tcp_offset)]
        self._lower, self._upper = spec.lower.tolist(), spec.upper.tolist()
        self._dt = sim.physics.control_dt_s
        self._rate_hz = 1.0 / self._dt
        g = spec.gripper  # opening = (q_drive - closed) / (open - closed), in joint units
        self._closed_q = g.closed_position * g.multipliers[0]
        self._open_minus_closed_q = (g.open_position - g.closed_position) * g.multipliers[0]
        self._setup_gripper()
        self._setup_motors()
        self._q_target = [float(v) for v in spec.home]
        self._grip_drive = spec.gripper.drive(1.0)
        self.tcp, self.tcp_velocity = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        self.q, self.opening = list(self._q_target), 1.0
        for link, rgba in spec.link_colors.items():
            sim.set_color(name, rgba, link=link)

    def _setup_gripper(self) -> None:
        """Gear-couple the mimic joints listed as such; set finger friction."""
        g = self.spec.gripper
        for joint, m in zip(g.joints[1:], g.multipliers[1:], strict=True):
            if joint in g.gear_coupled:
                leader = g.joints.index(g.leader(joint))
                follower = self.sim.joint_index(self.name, joint)
                ratio = m / g.multipliers[leader]
                self.sim.couple_joints(
                    self.name, self.grip_idx[leader], follower, ratio, 10 * g.force
                )
        self._grip_motor_cols = [i for i, j in enumerate(g.joints) if j not in g.gear_coupled]
        self._grip_multipliers = [g.multipliers[c] for c in self._grip_motor_cols]
        # Linkage joints that track their leader: (slot in the gripper targets, ratio to the
        # leader, multiplier); the leaders' positions are read when commanding.
        self._tracking: list[tuple[int, float, float]] = []
        self._tracked_leaders: list[int] = []
        if g.linkage_tracks_leader:
            for slot, c in enumerate(self._grip_motor_cols):
                if g.joints[c] in g.linkage_joints:
                    leader = g.joints.index(g.leader(g.joints[c]))
                    ratio = g.multipliers[c] / g.multipliers[leader]
                    self._tracking.append((slot, ratio, g.multipliers[c]))
                    self._tracked_leaders.append(self.grip_idx[leader])
        for link in g.finger_links:
            self.sim.set_dynamics(self.name, link, lateralFriction=1.0, spinningFriction=0.01)

    def _setup_motors(self) -> None:
        """One motor command list: arm joints, then the motor-driven gripper joints."""
        g = self.spec.gripper
        self._motor_joints = self.arm_idx + [self.grip_idx[c] for c in self._grip_motor_cols]
        grip_forces = [g.joint_forces[c] for c in self._grip_motor_cols]
        self._motor_forces = [lim.effort for lim in self.spec.limits] + grip_forces
        self._motor_gains = [self.spec.position_gain] * len(self._motor_joints)
        # Arm joint positions are observed only under joint control; the drive always.
        arm = self.arm_idx if self.control == "joints" else []
        self._measured_joints = [*arm, self.grip_idx[0]]

    @property
    def action_space(self) -> spaces.Box:
        """Box(-1, 1) of shape (4,) for "ee" or (n_arm + 1,) for "joints"."""
        n = 3 if self.control == "ee" else self.spec.n_arm
        return spaces.Box(-1.0, 1.0, shape=(n + 1,), dtype=np.float32)

    @property
    def obs_size(self) -> int:
        """Length of ``get_obs()``."""
        return 7 + (self.spec.n_arm if self.control == "joints" else 0)

    def obs_segments(self) -> tuple[ObsSegment, ...]:
        """The segments of ``get_obs()``, in order: all measured by a real arm."""
        segments = (
            real("tcp_position", 3, "m, world"),
            real("tcp_velocity", 3, "m/s, world"),
            real("gripper_opening", 1, "0 closed .. 1 open"),
        )
        if self.control == "joints":
            segments += (real("joint_positions", self.spec.n_arm, "rad"),)
        return segments

    def reset(self, q: Sequence[float] | None = None) -> None:
        """Teleport to ``q`` (default: home), gripper open, motors holding that pose."""
        self._q_target = [float(v) for v in (self.spec.home if q is None else q)]
        self._grip_drive = self.spec.gripper.drive(1.0)
        self.sim.reset_joints(self.name, self.arm_idx, np.asarray(self._q_target))
        self.sim.reset_joints(self.name, self.grip_idx, self.spec.gripper.targets(self._grip_drive))
        self._command()
        self.measure(refresh=True)

    def get_state(self) -> dict[str, object]:
        """Controller state (targets, gripper drive) and last measurement, for save/restore."""
        return {
            "q_target": list(self._q_target),
            "grip_drive": self._grip_drive,
            "measurement": (list(self.tcp), list(self.tcp_velocity), list(self.q), self.opening),
        }

    def set_state(self, state: dict[str, object]) -> None:
        """Inverse of ``get_state`` (the physics having been restored); re-sends the targets."""
        self._q_target = list(state["q_target"])  # type: ignore[call-overload]
        self._grip_drive = float(state["grip_drive"])  # type: ignore[arg-type]
        tcp, vel, q, opening = state["measurement"]  # type: ignore[misc]
        self.tcp, self.tcp_velocity, self.q, self.opening = list(tcp), list(vel), list(q), opening
        self._command()

    def set_gain_scale(self, scale: float) -> None:
        """Arm joints' position-control gain: ``scale`` times the robot's (1: nominal)."""
        n = len(self.arm_idx)
        self._motor_gains[:n] = [self.spec.position_gain * scale] * n

    def set_action(self, action: np.ndarray) -> None:
        """Apply one control step's action (see module doc); shape (action_space.shape[0],)."""
        a = [min(max(v, -1.0), 1.0) for v in action.tolist()]
        if self.control == "ee":
            step = self.spec.max_ee_step_m
            delta = [a[0] * step, a[1] * step, a[2] * step]
            self._q_target = self._ee_targets(delta)
        else:
            step = self.spec.max_joint_step_rad
            q = [t + d * step for t, d in zip(self._q_target, a[:-1], strict=True)]
            self._q_target = _clip(q, self._lower, self._upper)
        drive = self._rate_limited_drive(0.5 * (a[-1] + 1.0))
        drive_change, self._grip_drive = drive - self._grip_drive, drive
        self._command(drive_change)

    def _command(self, drive_change: float = 0.0) -> None:
        """Send arm and gripper position targets in one call.

        Args:
            drive_change: Change of the gripper drive command this step (m or rad); tracking
                linkage joints expect their leader to move by as much.
        """
        grip = [self._grip_drive * m for m in self._grip_multipliers]
        if self._tracking:
            leaders = self.sim.joint_positions(self.name, self._tracked_leaders)
            for (slot, ratio, m), q in zip(self._tracking, leaders, strict=True):
                grip[slot] = ratio * q + drive_change * m
        self.sim.control_joints(
            self.name,
            self._motor_joints,
            self._q_target + grip,
            self._motor_forces,
            self._motor_gains,
        )

    def _rate_limited_drive(self, opening: float) -> float:
        """Next gripper drive position, moving toward ``opening`` at most at max_speed."""
        g = self.spec.gripper
        max_step = g.max_speed * self._dt
        change = g.drive(opening) - self._grip_drive
        return self._grip_drive + min(max(change, -max_step), max_step)

    def _ee_targets(self, delta_m: list[float]) -> list[float]:
        """Arm joint targets (rad) moving the TCP by ``delta_m`` (m, world) from where it is.

        Relative to the measured TCP (not to an integrated setpoint), so a closed-loop policy
        never fights an integrator; the target is clipped to the workspace box.
        """
        (x, y, z), (lx, ly, lz), lo, hi = self.tcp, self._link_from_tcp, self.ws_low, self.ws_high
        link_target = [
            min(max(x + delta_m[0], lo[0]), hi[0]) + lx,
            min(max(y + delta_m[1], lo[1]), hi[1]) + ly,
            min(max(z + delta_m[2], lo[2]), hi[2]) + lz,
        ]
        solution = self.sim.inverse_kinematics(
            self.name, self.ee_idx, link_target, self._down, self.ik_iterations, self._ik_damping
        )
        return _clip(self._arm_columns(solution), self._lower, self._upper)

    def measure(self, refresh: bool = False) -> None:
        """Read the TCP and joint positions once for this control step.

        The TCP velocity is the mean over the last control step (finite difference), so only
        positions are queried. ``refresh`` zeroes the velocity (after a reset, when joints were
        teleported).
        """
        (x, y, z), orn = self.sim.get_link_pose(self.name, self.ee_idx)
        if self._has_tcp_offset:
            ox, oy, oz = rotate(orn, self._tcp_offset)
            x, y, z = x + ox, y + oy, z + oz
        if refresh:
            self.tcp_velocity = [0.0, 0.0, 0.0]
        else:
            px, py, pz = self.tcp
            rate = self._rate_hz
            self.tcp_velocity = [(x - px) * rate, (y - py) * rate, (z - pz) * rate]
        self.tcp = [x, y, z]
        q = self.sim.joint_positions(self.name, self._measured_joints)
        self.q = q[:-1]
        self.opening = (q[-1] - self._closed_q) / self._open_minus_closed_q

    def tcp_position(self) -> list[float]:
        """TCP position (m, world frame) at the last measurement, 3 floats."""
        return self.tcp

    def gripper_opening(self) -> float:
        """Gripper opening in [0, 1] (0 closed, 1 open) at the last measurement."""
        return self.opening

    def get_obs(self) -> list[float]:
        """TCP position (m, world) (3), TCP velocity (m/s) (3), gripper opening (1)[, q (rad)]."""
        obs = [*self.tcp, *self.tcp_velocity, self.opening]
        return obs + self.q if self.control == "joints" else obs
