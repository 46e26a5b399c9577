"""The simulated robot controller: a factoryfloor cell behind the edge protocol.

``SimController`` implements ``edge_runtime.controller.RobotController`` on a ``FactoryEnv``:
each control cycle applies one command for one control period of simulated time, and the
``ControllerRuntime`` paces the cycles in real time at the task's control rate. Braking commands
zero TCP motion (the gripper keeps its last command, so a held part is not dropped); standstill
is a TCP speed below ``STANDSTILL_M_S``. ``run_sim`` connects it to a policy server and runs
episodes (``factoryfloor edge run-sim``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np

from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import (
    ControllerRuntime,
    ControllerStatus,
    RobotController,
)
from factoryfloor.edge_runtime.spec import PolicySpec, space_fields
from factoryfloor.policies.evaluate import bundle_env_kwargs
from factoryfloor.sim.env import OBS_UNITS

STANDSTILL_M_S = 0.005  # TCP speed below which the arm counts as standing still (m/s)
TCP_VELOCITY = slice(3, 6)  # TCP velocity (m/s) in the robot part of "observation"


def describe_env(env: gym.Env[Any, Any], task_id: str, robot: str) -> PolicySpec:
    """The interface of a factoryfloor env, as its controller states it in HELLO.

    The control rate is exactly ``1 / control_dt_s`` of the env's physics, as in the bundles.
    In ``obs_mode="camera"`` the observation is the actor keys only, in their order (what a
    camera bundle takes: real-cell vectors float32, images uint8 HWC); no sim-only key leaves
    the cell.
    """
    observation, action = space_fields(sent_space(env), env.action_space, OBS_UNITS)
    rate_hz = 1.0 / float(env.unwrapped.sim.physics.control_dt_s)  # type: ignore[attr-defined]
    return PolicySpec(
        task_id=task_id, robot=robot, control_rate_hz=rate_hz,
        observation=observation, action=action,
        control=str(env.unwrapped.robot.control),  # type: ignore[attr-defined]
    )  # fmt: skip


def cell_kwargs(manifest: dict[str, Any]) -> dict[str, Any]:
    """``gymnasium.make`` arguments of a cell that feeds a bundle with this manifest.

    A bundle whose inputs hold uint8 images is a camera bundle: the cell runs in
    ``obs_mode="camera"`` at the images' size. Others need the default (state) cell.
    """
    return bundle_env_kwargs(manifest)


def sent_keys(env: gym.Env[Any, Any]) -> list[str]:
    """The observation keys the cell sends: the actor keys in camera mode, else all, sorted."""
    base: Any = env.unwrapped
    if getattr(base, "obs_mode", "state") == "camera":
        return list(base.actor_keys)
    return sorted(env.observation_space.spaces)  # type: ignore[attr-defined]


def sent_space(env: gym.Env[Any, Any]) -> gym.spaces.Dict:
    """The Dict space of ``sent_keys``, in that order (an OrderedDict: a dict would be sorted)."""
    spaces = env.observation_space.spaces  # type: ignore[attr-defined]
    return gym.spaces.Dict(OrderedDict((k, spaces[k]) for k in sent_keys(env)))


class SimController(RobotController):
    """A simulated cell running ``episodes`` seeded episodes.

    Args:
        task_id: Gymnasium id of a factoryfloor task.
        robot: Robot name.
        episodes: Episodes to run before ``status().finished``.
        seed: Seed of the first episode (then ``seed + 1``, ...).
        render_mode: ``gymnasium.make``'s render mode (``"human"``: pybullet's window).
        env_kwargs: Other keyword arguments of ``gymnasium.make`` (e.g. ``physics``).
        wrap: A wrapper put around the env (e.g. a sensor perturbation), or None.

    Attributes:
        results: Per finished episode: ``{"success", "steps", "seed", "commands"}``, where
            ``commands`` ``(steps, A)`` are the commands applied, so that ``replay`` can
            re-simulate the episode exactly (the simulation is deterministic).
    """

    def __init__(
        self,
        task_id: str,
        robot: str = "panda",
        episodes: int = 10,
        seed: int = 0,
        render_mode: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        wrap: Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]] | None = None,
    ) -> None:
        self.env_kwargs = dict(env_kwargs or {})
        self.env = gym.make(task_id, robot=robot, render_mode=render_mode, **self.env_kwargs)
        if wrap is not None:
            self.env = wrap(self.env)
        self.description = describe_env(self.env, task_id, robot)
        self._keys = sent_keys(self.env)
        self._images = any(f["dtype"] == "uint8" for f in self.description.observation)
        self.episodes, self.seed = episodes, seed
        self.results: list[dict[str, Any]] = []
        self._commands: list[np.ndarray] = []
        # optional observers (e.g. the demo's live view): an episode's seed, each command applied
        self.on_reset: Callable[[int], None] | None = None
        self.on_step: Callable[[np.ndarray], None] | None = None
        self._obs: dict[str, np.ndarray] | None = None
        self._steps = 0
        self._last_grip = 1.0

    def read_state(self) -> tuple[np.ndarray | dict[str, np.ndarray], bool]:
        """The observation this cycle; resets the env at an episode's start.

        Returns:
            A flat float32 vector of the sent keys, or, when they hold images (camera mode),
            the mapping key -> array (the client packs it: images stay uint8, rendered
            this cycle); and whether the observation starts an episode.
        """
        start = self._obs is None
        if start:
            seed = self.seed + len(self.results)
            self._obs, _ = self.env.reset(seed=seed)
            self._steps, self._commands = 0, []
            if self.on_reset is not None:
                self.on_reset(seed)
        assert self._obs is not None
        if self._images:
            return {k: self._obs[k] for k in self._keys}, start
        flat = np.concatenate([np.ravel(self._obs[k]) for k in self._keys])
        return flat.astype(np.float32), start

    def apply_action(self, action: np.ndarray) -> None:
        """One env step with ``action``."""
        self._step(action)

    def hold(self, action: np.ndarray) -> None:
        """One env step with the last command (or standing still before the first)."""
        self._step(action)

    def brake(self) -> None:
        """One env step commanding no TCP motion and the last gripper command."""
        command = np.zeros(self.env.action_space.shape, dtype=np.float32)
        command[-1] = self._last_grip
        self._commands.append(command)
        self._obs, *_ = self.env.step(command)  # braking ignores the episode's end
        if self.on_step is not None:
            self.on_step(command)

    def abort_episode(self, reason: str) -> None:
        """End the running episode as a failure (the runtime latched FAULT: ``reason``)."""
        if self._obs is None:
            return
        self.results.append(
            {"success": False, "steps": self._steps, "seed": self.seed + len(self.results),
             "commands": np.stack(self._commands) if self._commands else np.zeros((0, 0)),
             "fault": reason}
        )  # fmt: skip
        self._obs = None

    def status(self) -> ControllerStatus:
        """Standstill from the TCP speed; finished after ``episodes`` episodes."""
        speed = 0.0 if self._obs is None else float(np.linalg.norm(self._tcp_velocity()))
        successes = sum(r["success"] for r in self.results)
        info = {
            "episodes": len(self.results),
            "successes": successes,
            "success_rate": successes / len(self.results) if self.results else None,
            "tcp_speed_m_s": round(speed, 5),
        }
        finished = len(self.results) >= self.episodes
        return ControllerStatus(speed < STANDSTILL_M_S, finished, info)

    def _tcp_velocity(self) -> np.ndarray:
        assert self._obs is not None
        return self._obs["observation"][TCP_VELOCITY]

    def _step(self, action: np.ndarray) -> None:
        self._last_grip = float(action[-1])
        self._commands.append(np.array(action, dtype=np.float32))
        self._obs, _, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        if self.on_step is not None:
            self.on_step(self._commands[-1])
        if terminated or truncated:
            self.results.append(
                {
                    "success": bool(info.get("is_success", False)),
                    "steps": self._steps,
                    "seed": self.seed + len(self.results),
                    "commands": np.stack(self._commands),
                }
            )
            self._obs = None

    def close(self) -> None:
        """Close the env."""
        self.env.close()


def run_sim(
    task_id: str,
    connect: str,
    episodes: int,
    robot: str = "panda",
    seed: int = 0,
    hold_window_s: float = 0.020,
    client: EdgeClient | None = None,
    report_every_s: float | None = None,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    rt_priority: int | None = None,
    max_change: np.ndarray | None = None,
    publisher: str | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` episodes of ``task_id`` in real time against the server at ``connect``.

    Args:
        task_id: Gymnasium id of a factoryfloor task.
        connect: Server endpoint.
        episodes: Episodes to run.
        robot: Robot name.
        seed: Seed of the first episode.
        hold_window_s: Hold window of the safety layer (s).
        client: A configured client (e.g. with CURVE keys); None connects a plain one.
        report_every_s: Call ``on_report`` with the runtime report (a dict) this often (s).
        on_report: Receives the periodic reports.
        rt_priority: ``SCHED_FIFO`` priority of the control loop (None: default scheduler).
        max_change: Rate limit per action component and cycle (None: the robot's limits,
            ``SafetyConfig.for_robot``; the action range turns it off).
        publisher: Accept only a bundle signed by this publisher key id (None: any).

    Returns:
        The runtime report as a dict, with the episodes' results.
    """
    controller = SimController(task_id, robot, episodes, seed)
    client = client or EdgeClient(connect)
    try:
        runtime = ControllerRuntime(
            controller, client, hold_window_s, name=f"sim-{robot}", rt_priority=rt_priority,
            max_change=max_change, publisher=publisher,
        )  # fmt: skip
        welcome = runtime.rearm()
        forward = (lambda r: on_report(asdict(r))) if on_report is not None else None
        report = asdict(runtime.run(None, report_every_s, forward))
        client.send_bye()
    finally:
        client.close()
        controller.close()
    episodes = [{k: v for k, v in r.items() if k != "commands"} for r in controller.results]
    return {"welcome": welcome, **report, "episodes": episodes}
