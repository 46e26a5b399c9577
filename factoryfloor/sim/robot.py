"""A simulated arm with a gripper, driven from any RobotSpec.

Two control modes, both relative (delta) commands per control step:

* ``"ee"``: action = (dx, dy, dz, grip) in [-1, 1]; the tool centre point (TCP) moves by
  ``action[:3] * spec.max_ee_step_m`` in the world frame with the gripper pointing down
  (IK), clipped to the cell's workspace box.
* ``"joints"``: action = (dq_1..dq_n, grip) in [-1, 1]; joint targets move by
  ``action[:n] * spec.max_joint_step_rad``, clipped to the joint limits.

``grip`` is an absolute opening command: -1 closed, +1 fully open.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from factoryfloor.robots import RobotSpec
from factoryfloor.sim.backend import PyBullet
from factoryfloor.sim.urdf_tools import data_root, robot_urdf


class Arm:
    """An arm + gripper in a PyBullet world.

    Args:
        sim: The world.
        spec: Robot description.
        control: "ee" or "joints".
        workspace_low: Lower corner of the TCP workspace box (m, world frame), shape (3,).
        workspace_high: Upper corner of the TCP workspace box (m, world frame), shape (3,).
        lowpoly: Load collision meshes as visuals (fast camera rendering).
        ik_iterations: IK iterations per control step (warm-started from the current pose).
        name: Body name in ``sim``.
    """

    def __init__(
        self,
        sim: PyBullet,
        spec: RobotSpec,
        control: str,
        workspace_low: np.ndarray,
        workspace_high: np.ndarray,
        lowpoly: bool = False,
        ik_iterations: int = 5,
        name: str = "robot",
    ) -> None:
        if control not in spec.control_modes:
            raise ValueError(
                f"robot {spec.name!r} supports control {spec.control_modes}, not {control!r}"
            )
        self.sim, self.spec, self.control, self.name = sim, spec, control, name
        self.ws_low, self.ws_high = np.asarray(workspace_low), np.asarray(workspace_high)
        self.ik_iterations = ik_iterations
        urdf = data_root(spec.data_root) / spec.urdf
        sim.load_urdf(
            name, robot_urdf(urdf, lowpoly, spec.collision_boxes), spec.base_position, fixed=True
        )
        self.arm_idx = [sim.joint_index(name, j) for j in spec.arm_joints]
        self.grip_idx = [sim.joint_index(name, j) for j in spec.gripper.joints]
        self.ee_idx = sim.link_index(name, spec.ee_link)
        movable = sim.movable_joints(name)
        self._ik_columns = [movable.index(j) for j in self.arm_idx]
        self._arm_forces = np.array([lim.effort for lim in spec.limits])
        self._arm_gains = [spec.position_gain] * spec.n_arm
        self._down = np.asarray(spec.ee_down_quaternion)
        self._tcp_to_link = -sim.transform_point(np.zeros(3), self._down, spec.tcp_offset_m)
        self._q_target = np.asarray(spec.home, dtype=np.float64)
        self._grip_drive = spec.gripper.drive(1.0)
        g = spec.gripper
        for joint, m in zip(g.joints[1:], g.multipliers[1:], strict=True):
            if joint in g.gear_coupled:
                sim.couple_joints(
                    name,
                    self.grip_idx[0],
                    sim.joint_index(name, joint),
                    m / g.multipliers[0],
                    10 * g.force,
                )
        self._grip_motor_cols = [i for i, j in enumerate(g.joints) if j not in g.gear_coupled]
        self._grip_motors = len(self._grip_motor_cols)
        # The drive squeezes with the rated force; motor-driven mimic joints model a rigid
        # linkage, so they get ten times as much to hold the fingers parallel.
        self._grip_forces = np.array([g.force] + [10 * g.force] * (self._grip_motors - 1))
        self._grip_gains = [spec.position_gain] * self._grip_motors
        for link in spec.gripper.finger_links:
            sim.set_dynamics(name, link, lateralFriction=1.0, spinningFriction=0.01)
        for link, rgba in spec.link_colors.items():
            sim.set_color(name, rgba, link=link)

    @property
    def action_space(self) -> spaces.Box:
        """Box(-1, 1) of shape (4,) for "ee" or (n_arm + 1,) for "joints"."""
        n = 3 if self.control == "ee" else self.spec.n_arm
        return spaces.Box(-1.0, 1.0, shape=(n + 1,), dtype=np.float32)

    @property
    def obs_size(self) -> int:
        """Length of ``get_obs()``."""
        return 7 + (self.spec.n_arm if self.control == "joints" else 0)

    def reset(self, q: np.ndarray | None = None) -> None:
        """Teleport to ``q`` (default: home), gripper open, motors holding that pose."""
        self._q_target = np.asarray(self.spec.home if q is None else q, dtype=np.float64)
        self.sim.reset_joints(self.name, self.arm_idx, self._q_target)
        self._grip_drive = self.spec.gripper.drive(1.0)
        grip = self.spec.gripper.targets(self._grip_drive)
        self.sim.reset_joints(self.name, self.grip_idx, grip)
        self.sim.control_joints(
            self.name, self.arm_idx, self._q_target, self._arm_forces, self._arm_gains
        )
        self._control_gripper(grip)

    def get_state(self) -> dict[str, np.ndarray]:
        """Controller state (joint targets, gripper drive) for save/restore."""
        return {
            "q_target": self._q_target.copy(),
            "grip_drive": np.array(self._grip_drive),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Inverse of ``get_state``."""
        self._q_target = state["q_target"].copy()
        self._grip_drive = float(state["grip_drive"])

    def set_action(self, action: np.ndarray) -> None:
        """Apply one control step's action (see module doc); shape (action_space.shape[0],)."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        if self.control == "ee":
            self._q_target = self._ee_targets(action[:3] * self.spec.max_ee_step_m)
        else:
            q = self._q_target + action[:-1] * self.spec.max_joint_step_rad
            self._q_target = np.clip(q, self.spec.lower, self.spec.upper)
        self.sim.control_joints(
            self.name, self.arm_idx, self._q_target, self._arm_forces, self._arm_gains
        )
        self._grip_drive = self._rate_limited_drive(0.5 * (action[-1] + 1.0))
        grip = self.spec.gripper.targets(self._grip_drive)
        self._control_gripper(grip)

    def _control_gripper(self, targets: np.ndarray) -> None:
        """Send joint targets (m or rad) to the motor-driven gripper joints."""
        cols = self._grip_motor_cols
        joints = [self.grip_idx[c] for c in cols]
        self.sim.control_joints(
            self.name, joints, targets[cols], self._grip_forces, self._grip_gains
        )

    def _rate_limited_drive(self, opening: float) -> float:
        """Next gripper drive position, moving toward ``opening`` at most at max_speed."""
        g = self.spec.gripper
        max_step = g.max_speed * self.sim.physics.control_dt_s
        return self._grip_drive + float(
            np.clip(g.drive(opening) - self._grip_drive, -max_step, max_step)
        )

    def _ee_targets(self, delta_m: np.ndarray) -> np.ndarray:
        """Arm joint targets (rad) moving the TCP by ``delta_m`` (m, world) from where it is.

        Relative to the measured TCP (not to an integrated setpoint), so a closed-loop policy
        never fights an integrator; the target is clipped to the workspace box.
        """
        setpoint = np.clip(self.tcp_position() + delta_m, self.ws_low, self.ws_high)
        q = self.sim.inverse_kinematics(
            self.name, self.ee_idx, setpoint + self._tcp_to_link, self._down, self.ik_iterations
        )[self._ik_columns]
        return np.clip(q, self.spec.lower, self.spec.upper)

    def tcp_position(self) -> np.ndarray:
        """TCP position (m, world frame), shape (3,)."""
        pos, orn, _ = self.sim.get_link_pose_velocity(self.name, self.ee_idx)
        return (
            self.sim.transform_point(pos, orn, self.spec.tcp_offset_m)
            if any(self.spec.tcp_offset_m)
            else pos
        )

    def gripper_opening(self) -> float:
        """Gripper opening in [0, 1] (0 closed, 1 open), from the first gripper joint."""
        g = self.spec.gripper
        q = self.sim.get_joint_states(self.name, self.grip_idx[:1])[0][0] / g.multipliers[0]
        return float((q - g.closed_position) / (g.open_position - g.closed_position))

    def get_obs(self) -> np.ndarray:
        """TCP position (m, world) (3), TCP velocity (m/s) (3), gripper opening (1)[, q (rad)]."""
        pos, orn, vel = self.sim.get_link_pose_velocity(self.name, self.ee_idx)
        if any(self.spec.tcp_offset_m):
            pos = self.sim.transform_point(pos, orn, self.spec.tcp_offset_m)
        parts = [pos, vel, [self.gripper_opening()]]
        if self.control == "joints":
            parts.append(self.sim.get_joint_states(self.name, self.arm_idx)[0])
        return np.concatenate(parts)
