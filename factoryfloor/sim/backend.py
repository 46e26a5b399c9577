"""The pybullet facade: the only module of factoryfloor that imports pybullet.

One ``PyBullet`` instance owns one ``BulletClient`` (so two envs never share a world) and keeps a
name -> body id map, so callers say ``sim.get_base_position("part")`` and never handle raw ids.

Conventions: positions (x, y, z) in m in the world frame; quaternions (x, y, z, w); linear
velocities in m/s; joint positions in rad (revolute) or m (prismatic).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def _quiet_c_output() -> Iterator[None]:
    """Send what C code writes to file descriptors 1 and 2 to /dev/null while inside.

    pybullet prints its build time on import and ``argv[0]=`` on connect with C ``printf``,
    which bypasses ``sys.stdout``; only redirecting the descriptors hides it. Python's and C's
    buffers are flushed on entry and exit, so nothing written before leaks in and nothing
    written inside comes out later. The descriptors are restored even when the body raises,
    and the exception propagates unchanged.

    Yields:
        None, with descriptors 1 and 2 pointing at /dev/null.
    """
    try:
        libc_fflush = ctypes.CDLL(None).fflush  # fflush(NULL) flushes every C stream
    except (OSError, AttributeError):  # no C library handle (Windows): Python's flush only
        libc_fflush = None

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
        if libc_fflush is not None:
            libc_fflush(None)

    flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


with _quiet_c_output():
    import pybullet as pb
    from pybullet_utils.bullet_client import BulletClient

_MODES = {"direct": pb.DIRECT, "gui": pb.GUI}
_SHAPES = {"box": pb.GEOM_BOX, "cylinder": pb.GEOM_CYLINDER, "sphere": pb.GEOM_SPHERE}


@dataclass(frozen=True, kw_only=True)
class PhysicsConfig:
    """Physics settings.

    Attributes:
        timestep_s: Physics step (s).
        substeps: Physics steps per control step; control rate = 1 / (timestep_s * substeps).
        solver_iterations: Constraint solver iterations per physics step. Twenty is the fewest
            with which a grasp holds: with fewer, the finger motors push the pads through the
            part (the solver does not converge) and the part squirts out.
        gravity_m_s2: Gravity along -z (m/s^2).
    """

    timestep_s: float = 1.0 / 300.0
    substeps: int = 12
    solver_iterations: int = 20
    gravity_m_s2: float = 9.81

    def __post_init__(self) -> None:
        if self.timestep_s <= 0 or self.substeps < 1 or self.solver_iterations < 1:
            raise ValueError(
                "timestep_s > 0, substeps >= 1 and solver_iterations >= 1 are required"
            )

    @property
    def control_dt_s(self) -> float:
        """Duration of one control step (s)."""
        return self.timestep_s * self.substeps


class PyBullet:
    """A pybullet world addressed by body names.

    Args:
        mode: "direct" (headless, default) or "gui" (opens pybullet's window).
        physics: Physics settings.
    """

    def __init__(self, mode: str = "direct", physics: PhysicsConfig | None = None) -> None:
        if mode not in _MODES:
            raise ValueError(f"unknown pybullet mode {mode!r}; use one of {sorted(_MODES)}")
        if mode == "gui" and not has_display():
            raise RuntimeError(
                "pybullet's GUI needs a display but none was found (DISPLAY is unset); run "
                "headless with render_mode='rgb_array' or mode 'direct', or start a display (Xvfb)"
            )
        self.mode = mode
        self.physics = physics or PhysicsConfig()
        # The GUI keeps pybullet's output: a failing window (X error) prints why and exits.
        quiet = _quiet_c_output() if mode == "direct" else contextlib.nullcontext()
        with quiet:
            self.client = BulletClient(connection_mode=_MODES[mode])
        self._bodies: dict[str, int] = {}
        self._joints: dict[int, dict[str, int]] = {}
        self._links: dict[int, dict[str, int]] = {}
        self._closed = False
        if mode == "gui":
            self.client.configureDebugVisualizer(pb.COV_ENABLE_GUI, 0)
        self.client.setGravity(0.0, 0.0, -self.physics.gravity_m_s2)
        # One stepSimulation call advances a whole control step in `substeps` internal steps.
        self.client.setPhysicsEngineParameter(
            fixedTimeStep=self.physics.control_dt_s,
            numSubSteps=self.physics.substeps,
            numSolverIterations=self.physics.solver_iterations,
            deterministicOverlappingPairs=1,  # contact order independent of history
            enableConeFriction=0,  # pyramid friction: about 10% cheaper, grasps hold as well
            solverResidualThreshold=1e-4,
        )
        self._bind_hot_calls()

    def _bind_hot_calls(self) -> None:
        """Bind the per-step pybullet calls to this client once.

        ``BulletClient.__getattr__`` builds a new partial on every call (about 2 us); the
        per-step path uses these bound functions instead.
        """
        cid = self.client._client
        self._step_fn = partial(pb.stepSimulation, physicsClientId=cid)
        self._link_state = partial(pb.getLinkState, physicsClientId=cid)
        self._joint_states = partial(pb.getJointStates, physicsClientId=cid)
        self._motor_array = partial(pb.setJointMotorControlArray, physicsClientId=cid)
        self._ik = partial(pb.calculateInverseKinematics, physicsClientId=cid)
        self._base_pose = partial(pb.getBasePositionAndOrientation, physicsClientId=cid)
        self._base_velocity = partial(pb.getBaseVelocity, physicsClientId=cid)

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Disconnect; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self.client.disconnect()

    def step(self) -> None:
        """Advance one control step (``physics.substeps`` physics steps of ``timestep_s``)."""
        self._step_fn()

    def save_state(self) -> int:
        """Snapshot positions, velocities and contacts in memory; returns a state id."""
        return int(self.client.saveState())

    def restore_state(self, state_id: int) -> None:
        """Return to a snapshot taken by ``save_state`` (contacts included)."""
        self.client.restoreState(stateId=state_id)

    def drop_stale_contacts(self) -> None:
        """Run a collision pass now, dropping contact caches of body pairs that no longer touch.

        After teleporting bodies (a reset), a cache left from the previous episode would
        otherwise change the next steps slightly.
        """
        self.client.performCollisionDetection()

    def remove_state(self, state_id: int) -> None:
        """Free a snapshot (a no-op once the world is closed)."""
        if not self._closed:
            self.client.removeState(state_id)

    # ----------------------------------------------------------------- bodies
    def body_id(self, name: str) -> int:
        """Pybullet id of the body called ``name``."""
        try:
            return self._bodies[name]
        except KeyError:
            raise KeyError(f"no body named {name!r}; bodies: {sorted(self._bodies)}") from None

    def _register(self, name: str, body: int) -> int:
        if name in self._bodies:
            raise ValueError(f"a body named {name!r} exists already")
        self._bodies[name] = body
        joints: dict[str, int] = {}
        links: dict[str, int] = {self.client.getBodyInfo(body)[0].decode(): -1}
        for j in range(self.client.getNumJoints(body)):
            info = self.client.getJointInfo(body, j)
            joints[info[1].decode()] = j
            links[info[12].decode()] = j
        self._joints[body], self._links[body] = joints, links
        return body

    def load_urdf(
        self,
        name: str,
        path: Path,
        position: np.ndarray | tuple[float, ...] = (0.0, 0.0, 0.0),
        orientation: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0),
        fixed: bool = False,
        scale: float = 1.0,
    ) -> int:
        """Load a URDF as body ``name``; position in m, orientation (x, y, z, w)."""
        body = self.client.loadURDF(
            str(path),
            basePosition=list(position),
            baseOrientation=list(orientation),
            useFixedBase=fixed,
            globalScaling=scale,
            flags=pb.URDF_ENABLE_CACHED_GRAPHICS_SHAPES,
        )
        return self._register(name, body)

    def create_shape(
        self,
        name: str,
        shape: str,
        size: tuple[float, ...],
        position: np.ndarray | tuple[float, ...],
        mass: float = 0.0,
        rgba: tuple[float, float, float, float] = (0.7, 0.7, 0.7, 1.0),
        collide: bool = True,
    ) -> int:
        """Create a primitive body.

        Args:
            name: Body name.
            shape: "box", "cylinder" or "sphere".
            size: Half extents (x, y, z) for a box, (radius, height) for a cylinder, (radius,)
                for a sphere; m.
            position: Centre (m).
            mass: kg; 0 makes the body static.
            rgba: Colour.
            collide: False makes a visual-only marker (for goals).
        """
        kind = _SHAPES[shape]
        kwargs = _shape_kwargs(shape, size)
        visual = self.client.createVisualShape(kind, rgbaColor=list(rgba), **kwargs)
        collision = (
            self.client.createCollisionShape(kind, **_collision_kwargs(shape, size))
            if collide
            else -1
        )
        body = self.client.createMultiBody(mass, collision, visual, list(position))
        return self._register(name, body)

    def base_position(self, name: str) -> tuple[float, float, float]:
        """Base position (m) as a tuple: the cheap per-step query."""
        return self._base_pose(self._bodies[name])[0]  # type: ignore[no-any-return]

    def base_velocity(self, name: str) -> tuple[float, float, float]:
        """Base linear velocity (m/s) as a tuple: the cheap per-step query."""
        return self._base_velocity(self._bodies[name])[0]  # type: ignore[no-any-return]

    def get_base_position(self, name: str) -> np.ndarray:
        """Base position (m), shape (3,)."""
        return np.asarray(self._base_pose(self._bodies[name])[0])

    def get_base_velocity(self, name: str) -> np.ndarray:
        """Base linear velocity (m/s), shape (3,)."""
        return np.asarray(self._base_velocity(self._bodies[name])[0])

    def set_base_pose(
        self,
        name: str,
        position: np.ndarray,
        orientation: np.ndarray | tuple[float, ...] = (0, 0, 0, 1),
    ) -> None:
        """Teleport a body (only for resets) and zero its velocity."""
        body = self._bodies[name]
        self.client.resetBasePositionAndOrientation(body, list(position), list(orientation))
        self.client.resetBaseVelocity(body, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])

    def set_base_velocity(self, name: str, linear_m_s: np.ndarray) -> None:
        """Set a body's linear velocity (m/s, world) and zero its angular velocity."""
        self.client.resetBaseVelocity(self._bodies[name], list(linear_m_s), [0.0, 0.0, 0.0])

    def set_dynamics(self, name: str, link: str | None = None, **kwargs: float) -> None:
        """Change dynamics (``mass``, ``lateralFriction``, ...) of a body's base or named link."""
        body = self._bodies[name]
        self.client.changeDynamics(body, self.link_index(name, link) if link else -1, **kwargs)

    def set_color(self, name: str, rgba: tuple[float, ...], link: str | None = None) -> None:
        """Colour a body's base or named link."""
        body = self._bodies[name]
        self.client.changeVisualShape(
            body, self.link_index(name, link) if link else -1, rgbaColor=list(rgba)
        )

    def joint_index(self, name: str, joint: str) -> int:
        """Index of a joint of body ``name``, resolved by joint name."""
        try:
            return self._joints[self._bodies[name]][joint]
        except KeyError:
            known = sorted(self._joints[self._bodies[name]])
            raise KeyError(f"body {name!r} has no joint {joint!r}; joints: {known}") from None

    def link_index(self, name: str, link: str) -> int:
        """Index of a link of body ``name`` (-1 for the base), resolved by link name."""
        try:
            return self._links[self._bodies[name]][link]
        except KeyError:
            known = sorted(self._links[self._bodies[name]])
            raise KeyError(f"body {name!r} has no link {link!r}; links: {known}") from None

    def joint_positions(self, name: str, joints: list[int]) -> list[float]:
        """Positions of joints (rad or m) as a list: the cheap per-step query."""
        return [s[0] for s in self._joint_states(self._bodies[name], joints)]

    def get_joint_states(self, name: str, joints: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities of joints (rad or m; rad/s or m/s), each shape (n,)."""
        states = self._joint_states(self._bodies[name], joints)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def reset_joints(self, name: str, joints: list[int], positions: np.ndarray) -> None:
        """Teleport joints to positions with zero velocity (only for resets)."""
        body = self._bodies[name]
        for j, q in zip(joints, positions, strict=True):
            self.client.resetJointState(body, j, float(q), 0.0)

    def control_joints(
        self,
        name: str,
        joints: list[int],
        targets: Sequence[float],
        forces: Sequence[float],
        gains: Sequence[float],
    ) -> None:
        """Position-control joints towards targets with maximum forces (N m or N) and gains.

        Lists are converted by pybullet several times faster than NumPy arrays.
        """
        self._motor_array(
            self._bodies[name],
            joints,
            pb.POSITION_CONTROL,
            targetPositions=targets,
            forces=forces,
            positionGains=gains,
        )

    def control_velocity(self, name: str, joint: int, velocity: float, force: float) -> None:
        """Velocity-control one joint (rad/s or m/s) with a maximum force (N m or N)."""
        self.client.setJointMotorControl2(
            self._bodies[name], joint, pb.VELOCITY_CONTROL, targetVelocity=velocity, force=force
        )

    def set_joint_state(self, name: str, joint: int, position: float, velocity: float) -> None:
        """Teleport one joint to a position (rad or m) and velocity (rad/s or m/s)."""
        self.client.resetJointState(self._bodies[name], joint, position, velocity)

    def reset_joint_keep_velocity(self, name: str, joint: int, position: float) -> None:
        """Move a joint to ``position`` while keeping its current velocity."""
        body = self._bodies[name]
        velocity = self.client.getJointState(body, joint)[1]
        self.client.resetJointState(body, joint, position, velocity)

    def couple_joints(
        self, name: str, driver: int, follower: int, ratio: float, max_force: float
    ) -> None:
        """Gear-couple two joints so that q_follower = ratio * q_driver; frees the follower's motor.

        Models mechanical couplings that URDF can only state as ``<mimic>`` (a Panda's fingers,
        an xArm gripper's linkage); ``max_force`` (N or N m) bounds the coupling effort.
        """
        body = self._bodies[name]
        cid = self.client.createConstraint(
            body, driver, body, follower, pb.JOINT_GEAR, [1, 0, 0], [0, 0, 0], [0, 0, 0]
        )
        self.client.changeConstraint(cid, gearRatio=-1.0 / ratio, erp=0.1, maxForce=max_force)
        self.client.setJointMotorControl2(body, follower, pb.VELOCITY_CONTROL, force=0.0)

    def get_link_pose(self, name: str, link: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """World position (m) and orientation (x, y, z, w) of a link, as tuples."""
        state = self._link_state(self._bodies[name], link, computeForwardKinematics=1)
        return state[4], state[5]

    def movable_joints(self, name: str) -> list[int]:
        """Indices of the non-fixed joints of a body, in pybullet's IK output order."""
        body = self._bodies[name]
        n = self.client.getNumJoints(body)
        return [j for j in range(n) if self.client.getJointInfo(body, j)[2] != pb.JOINT_FIXED]

    def inverse_kinematics(
        self,
        name: str,
        link: int,
        position: Sequence[float],
        orientation: Sequence[float],
        iterations: int,
        damping: Sequence[float],
    ) -> tuple[float, ...]:
        """Positions of all movable joints bringing ``link`` to a pose (m; x, y, z, w).

        Args:
            name: Body name.
            link: Link index.
            position: Target position (m, world).
            orientation: Target orientation (x, y, z, w).
            iterations: Solver iterations (warm-started from the current joint state).
            damping: Damped-least-squares damping per movable joint; pybullet's default (0.1)
                leaves centimetres of error after a few iterations, 0.003 reaches a 4 cm step
                to a tenth of a millimetre in two.

        Returns:
            One position per movable joint (rad or m), in joint-index order.
        """
        return self._ik(  # type: ignore[no-any-return]
            self._bodies[name],
            link,
            position,
            orientation,
            maxNumIterations=iterations,
            jointDamping=damping,
        )

    def render(
        self, width: int, height: int, view: list[float], projection: list[float], depth: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Render with TinyRenderer (CPU, no display needed).

        Returns:
            RGB uint8 of shape (height, width, 3) and, when ``depth``, the OpenGL depth buffer
            in [0, 1] of shape (height, width) (float32), else None.
        """
        _, _, rgba, zbuf, _ = self.client.getCameraImage(
            width,
            height,
            view,
            projection,
            shadow=0,
            renderer=pb.ER_TINY_RENDERER,
            flags=pb.ER_NO_SEGMENTATION_MASK,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]
        zb = np.asarray(zbuf, dtype=np.float32).reshape(height, width) if depth else None
        return rgb, zb

    def view_matrix(
        self, eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float]
    ) -> list[float]:
        """OpenGL view matrix (column-major, 16 floats) looking from ``eye`` at ``target`` (m)."""
        return list(self.client.computeViewMatrix(list(eye), list(target), list(up)))

    def projection_matrix(
        self, fov_deg: float, aspect: float, near_m: float, far_m: float
    ) -> list[float]:
        """OpenGL projection matrix (16 floats) for a vertical field of view in degrees."""
        return list(self.client.computeProjectionMatrixFOV(fov_deg, aspect, near_m, far_m))


def has_display() -> bool:
    """Whether a window can be opened (an X display on Linux; assumed elsewhere)."""
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY"))


def _shape_kwargs(shape: str, size: tuple[float, ...]) -> dict[str, object]:
    if shape == "box":
        return {"halfExtents": list(size)}
    if shape == "cylinder":
        return {"radius": size[0], "length": size[1]}
    return {"radius": size[0]}


def _collision_kwargs(shape: str, size: tuple[float, ...]) -> dict[str, object]:
    kwargs = _shape_kwargs(shape, size)
    if shape == "cylinder":
        return {"radius": size[0], "height": size[1]}
    return kwargs
