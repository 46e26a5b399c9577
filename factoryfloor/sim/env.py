"""FactoryEnv: a Gymnasium env composed of the pybullet facade, an arm and a task."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from factoryfloor.robots import get_robot_spec
from factoryfloor.sim.backend import PhysicsConfig, PyBullet
from factoryfloor.sim.camera import WORKSPACE_CAMERA, Camera, CameraConfig, WristCamera
from factoryfloor.sim.env_checks import (
    OBS_MODES,
    RENDER_MODES,
    EnvArgumentError,
    check_env_args,
    checked_action,
)
from factoryfloor.sim.observations import (
    MODE_KEYS,
    ObsLayout,
    Source,
    key_segments,
    obs_layout,
    split_keys,
    vector_keys,
)
from factoryfloor.sim.perturbation import SIM_AXES, apply_perturbation
from factoryfloor.sim.registry import task_entry
from factoryfloor.sim.robot import Arm
from factoryfloor.sim.tasks.base import RobotHooks

# observation key -> units, stated in the policy interface (``edge_runtime.spec``)
OBS_UNITS = {
    "observation": "robot: TCP position (m, world), TCP velocity (m/s), gripper opening "
    "(0 closed .. 1 open)[, joint angles (rad)]; then the task's object state (m, m/s)",
    "achieved_goal": "m (world frame)",
    "desired_goal": "m (world frame)",
    "image": "uint8 (H, W, C): RGB 0-255[, depth 0-255 near..far] from the fixed cell camera",
    "wrist_image": "uint8 (H, W, C): RGB 0-255[, depth 0-255 near..far] from the wrist camera",
    "privileged": "sim-only entries of the state vector (part poses m, velocities m/s); "
    "segments in env.unwrapped.key_segments()",
}
# obs_mode="camera": "observation" holds only the real-cell entries of the vector above.
RENDER_SIZE = (480, 360)  # (width, height) of render() frames


@dataclass
class EnvState:
    """A snapshot taken by ``FactoryEnv.save_state`` (valid within the same env)."""

    bullet_state: int
    task_state: dict[str, Any]
    robot_state: dict[str, np.ndarray]
    rng_state: dict[str, Any]


class FactoryEnv(gym.Env[dict[str, np.ndarray], np.ndarray], EzPickle):
    """A robot arm doing a task in the factory cell.

    Args:
        task: Registered task name ("reach", "pick_place", "conveyor_pick").
        robot: Registered robot name ("panda", "xarm6").
        control: "ee" (TCP deltas through IK) or "joints" (joint deltas).
        reward: "sparse" or "dense".
        obs_mode: "state", "rgb" or "rgbd" (adds an ``image`` key from the cell camera), or
            "camera": what a real cell has for the actor (``observation``: the arm's state
            and real-cell task entries, ``desired_goal``, ``image`` from the cell camera and
            ``wrist_image`` from the wrist camera) and the sim-only entries in
            ``privileged`` and ``achieved_goal`` (``actor_keys``, ``privileged_keys``).
        image_size: Side of the square camera observations (pixels, an int in 16..512).
        randomize: Domain randomisation of physics and camera (see ``Randomization``); a bool.
        render_mode: None, "rgb_array" (480x360 frames) or "human" (pybullet's window).
        physics: Physics settings (timestep, substeps, solver iterations): a ``PhysicsConfig``,
            or None for the defaults.
        task_options: Keyword arguments of the task, e.g. ``{"belt_speed_m_s": 0.12}`` for
            ConveyorPick (see each task class).
        camera_depth: In "camera" mode, add depth as a 4th channel to both images (a bool).
        perturb: Fixed physical perturbations, axis name -> level (``perturbation.SIM_AXES``:
            units and ranges), applied at every reset; None for the nominal cell.

    Attributes:
        actor_keys: Dict keys holding only what a real cell has (robot state, goals known
            from the cell layout, images): what a deployable actor may be given.
        privileged_keys: Dict keys holding any sim-only entry (for a critic, for HER).
        obs_layout: The declared segments of the state vector (``observations.ObsLayout``).
        visible_privileged: Indices into ``privileged`` of the entries one camera frame shows
            (what a camera actor's estimator learns to read off its images).

    Raises:
        ValueError: For a refused argument, before any pybullet world exists: its name, the
            value and what is allowed (``env_checks.ENV_ARG_CHECKS``). An unknown task or robot
            name is also a ``KeyError``.
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "render_fps": 24}  # noqa: RUF012

    def __init__(
        self,
        task: str = "reach",
        robot: str = "panda",
        control: str = "ee",
        reward: str = "sparse",
        obs_mode: str = "state",
        image_size: int = 84,
        randomize: bool = False,
        render_mode: str | None = None,
        physics: PhysicsConfig | None = None,
        task_options: dict[str, Any] | None = None,
        camera_depth: bool = False,
        perturb: dict[str, float] | None = None,
    ) -> None:
        EzPickle.__init__(
            self,
            task,
            robot,
            control,
            reward,
            obs_mode,
            image_size,
            randomize,
            render_mode,
            physics,
            task_options,
            camera_depth,
            perturb,
        )
        check_env_args(
            {
                "task": task, "robot": robot, "control": control, "reward": reward,
                "obs_mode": obs_mode, "image_size": image_size, "randomize": randomize,
                "render_mode": render_mode, "physics": physics, "task_options": task_options,
                "camera_depth": camera_depth, "perturb": perturb,
            }
        )  # fmt: skip
        self.task_entry = task_entry(task)
        spec, task_cls = get_robot_spec(robot), self.task_entry.load_task_class()
        self.obs_mode, self.image_size, self.render_mode = obs_mode, int(image_size), render_mode
        self.sim = PyBullet("gui" if render_mode == "human" else "direct", physics)
        try:
            self.robot = Arm(
                self.sim,
                spec,
                control,
                task_cls.workspace_low,
                task_cls.workspace_high,
                lowpoly=obs_mode != "state",
            )
            hooks = RobotHooks(self.robot.tcp_position, self.robot.gripper_opening)
            options = task_options or {}
            self.task = task_cls(self.sim, hooks, reward, bool(randomize), **options)
        except BaseException:
            self.sim.close()  # a refused construction leaves no pybullet world behind
            raise
        self.camera = Camera(self.sim, CameraConfig())
        self.wrist_camera = WristCamera(self.sim, "robot", spec.ee_link, spec.tcp_offset_m)
        self._setup_keys(obs_mode, bool(camera_depth))
        self.perturb = dict(perturb or {})
        self._check_perturb_applies()
        self.action_space = self.robot.action_space
        self._action_shape = self.action_space.shape
        self._desired_goal = np.zeros(3, dtype=np.float32)
        self._goal = [0.0, 0.0, 0.0]
        self.observation_space = self._make_observation_space()
        self.metadata = {**self.metadata, "render_fps": 1.0 / self.sim.physics.control_dt_s}
        self._last_frame_time = 0.0
        # Restored at each reset so that no contact cache survives from an earlier episode.
        self._initial_state = self.sim.save_state()

    def _setup_keys(self, obs_mode: str, camera_depth: bool) -> None:
        """Read the declared observation segments into this mode's Dict keys."""
        self.obs_layout: ObsLayout = obs_layout(
            self.robot.obs_segments(), self.task.obs_segments(), self.task.goal_sources
        )
        if self.obs_layout.size != self.robot.obs_size + self.task.obs_size:
            raise ValueError(f"declared segments {self.obs_layout.segments} miss entries")
        mode = MODE_KEYS[obs_mode]
        self._split, self._image_keys = mode.split, mode.image_keys
        self._depth = obs_mode == "rgbd" or camera_depth
        # "camera" mode's policy camera frames the work area (``WORKSPACE_CAMERA``); the
        # other modes' ``image`` and ``render()`` show the whole cell from ``self.camera``.
        self.policy_camera = (
            Camera(self.sim, WORKSPACE_CAMERA) if obs_mode == "camera" else self.camera
        )
        self._cameras: dict[str, Camera | WristCamera] = {
            "image": self.policy_camera,
            "wrist_image": self.wrist_camera,
        }
        self._real_idx = self.obs_layout.indices(Source.REAL)
        self._priv_idx = self.obs_layout.indices(Source.PRIVILEGED)
        self._vector_keys = vector_keys(obs_mode, self.obs_layout)
        self.actor_keys, self.privileged_keys = split_keys(self._vector_keys, self._image_keys)
        self.visible_privileged = [int(i) for i in self.obs_layout.visible_privileged()]

    def _make_observation_space(self) -> spaces.Dict:
        box: dict[str, spaces.Space[Any]] = {
            key: spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32)
            for key, _, n in self._vector_keys
        }
        channels = 4 if self._depth else OBS_MODES[self.obs_mode] or 3
        for key in self._image_keys:
            box[key] = spaces.Box(
                0, 255, shape=(self.image_size, self.image_size, channels), dtype=np.uint8
            )
        return spaces.Dict(box)

    def _get_obs(self) -> dict[str, np.ndarray]:
        task_obs, achieved = self.task.observe()
        vector = np.array(self.robot.get_obs() + task_obs, dtype=np.float32)
        if self._split:
            obs = {"observation": vector[self._real_idx]}
            if self._priv_idx.size:
                obs["privileged"] = vector[self._priv_idx]
        else:
            obs = {"observation": vector}
        obs["achieved_goal"] = np.array(achieved, dtype=np.float32)
        obs["desired_goal"] = self._desired_goal.copy()
        size = self.image_size
        for key in self._image_keys:
            obs[key] = self._cameras[key].image(size, size, self._depth)
        return obs

    def state_observation(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The "state"-mode observation inside an observation of this env's mode.

        In "camera" mode the full state vector is put back together from ``observation`` (the
        real-cell entries) and ``privileged``, so that a scripted expert, which reads part
        poses, can label what a camera policy sees. Other modes: the vectors, images left out.

        Args:
            obs: An observation of this env (any batch shape in front of the vectors).
        """
        out = {k: obs[k] for k in ("achieved_goal", "desired_goal")}
        if not self._split:
            return {"observation": obs["observation"], **out}
        real = np.asarray(obs["observation"])
        vector = np.empty((*real.shape[:-1], self.obs_layout.size), dtype=np.float32)
        vector[..., self._real_idx] = real
        if self._priv_idx.size:
            vector[..., self._priv_idx] = obs["privileged"]
        return {"observation": vector, **out}

    def key_segments(self) -> dict[str, dict[str, slice]]:
        """Vector Dict key -> segment name -> its slice there (see ``observations``)."""
        return key_segments(self.obs_mode, self.obs_layout)

    def camera_info(self) -> dict[str, dict[str, Any]]:
        """Per image key: width, height (px), fov_deg, near_m, far_m and pose or mount link.

        The cell camera gives ``eye_m`` (this episode's, jitter included) and ``target_m``
        (m, world); the wrist camera its ``body`` and ``link`` and the eye, target and up
        vector in that link's frame (m). Empty in "state" mode.
        """
        size = self.image_size
        return {k: self._cameras[k].info(size, size, self._depth) for k in self._image_keys}

    def _check_perturb_applies(self) -> None:
        """Refuse (closing the world) a perturbation axis this cell does not have."""
        missing = [n for n in self.perturb if not SIM_AXES[n].applies(self)]
        if missing:
            self.sim.close()
            raise EnvArgumentError(
                f"perturb={self.perturb!r} is not supported; {missing} do not apply to task "
                f"{self.task_entry.name!r} in obs_mode={self.obs_mode!r}"
            )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; ``seed`` seeds every random draw of the env."""
        super().reset(seed=seed)
        self.sim.restore_state(self._initial_state)
        self.sim.drop_stale_contacts()
        self.robot.reset()
        self.task.reset(self.np_random)
        self._desired_goal = self.task.desired_goal().astype(np.float32)
        self._goal = self._desired_goal.tolist()
        jitter = self.task.ranges.camera_jitter_m if self.task.randomize else 0.0
        self.camera.reset(self.np_random, jitter)
        if "wrist_image" in self._image_keys:  # no extra draws in the other modes
            if self.policy_camera is not self.camera:
                self.policy_camera.reset(self.np_random, jitter)
            wrist = self.task.ranges.wrist_camera_jitter_m if self.task.randomize else 0.0
            self.wrist_camera.reset(self.np_random, wrist)
        apply_perturbation(self, self.perturb)
        obs = self._get_obs()
        return obs, {
            "is_success": bool(self.task.is_success(obs["achieved_goal"], obs["desired_goal"]))
        }

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply an action for one control step; terminates on success.

        Raises:
            ValueError: For an action that is not finite real numbers of the action space's
                shape, before anything reaches the physics: the env is as it was.
        """
        self.robot.set_action(checked_action(action, self._action_shape))
        self.sim.step()
        self.robot.measure()
        self.task.after_step()
        obs = self._get_obs()
        success = self.task.success(obs["achieved_goal"].tolist(), self._goal)
        if self.task.reward_type == "sparse":
            reward = 0.0 if success else -1.0
        else:
            reward = float(self.task.compute_reward(obs["achieved_goal"], obs["desired_goal"]))
        if self.render_mode == "human":
            self.render()
        return obs, reward, success, False, {"is_success": success}

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any
    ) -> np.ndarray:
        """Vectorised reward for HER; shapes (..., 3) -> (...)."""
        return self.task.compute_reward(achieved_goal, desired_goal, info)

    def render(self) -> np.ndarray | None:
        """A (360, 480, 3) uint8 camera frame ("rgb_array"); real-time pacing ("human")."""
        if self.render_mode == "rgb_array":
            return self.camera.rgb(*RENDER_SIZE)
        if self.render_mode == "human":
            delay = self.sim.physics.control_dt_s - (time.perf_counter() - self._last_frame_time)
            if delay > 0:
                time.sleep(delay)
            self._last_frame_time = time.perf_counter()
        return None

    def save_state(self) -> EnvState:
        """Snapshot the episode (physics, task, controller targets, random state).

        The physics snapshot is freed when the returned object is garbage-collected.
        """
        state = EnvState(
            bullet_state=self.sim.save_state(),
            task_state=self.task.get_state(),
            robot_state=self.robot.get_state(),
            rng_state=self.np_random.bit_generator.state,
        )
        weakref.finalize(state, self.sim.remove_state, state.bullet_state)
        return state

    def restore_state(self, state: EnvState) -> None:
        """Return to a snapshot taken by ``save_state`` on this env, earlier in this episode.

        The future is then the same as after the snapshot, exactly. Across a reset it is the
        same up to about 1e-3 m: pybullet's snapshots do not keep the broadphase's pair order,
        which a reset's parking of parts (mass 0 and back) changes.
        """
        self.sim.restore_state(state.bullet_state)
        self.task.set_state(state.task_state)
        self._desired_goal = self.task.desired_goal().astype(np.float32)
        self._goal = self._desired_goal.tolist()
        self.robot.set_state(state.robot_state)
        self.np_random.bit_generator.state = state.rng_state

    def close(self) -> None:
        """Disconnect from pybullet; safe to call more than once."""
        self.sim.close()
