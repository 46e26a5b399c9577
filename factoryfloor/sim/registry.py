"""The task registry: one ``TaskEntry`` per task carries everything the package knows about it.

Adding a task is one task file (``factoryfloor/sim/tasks/<name>.py``) and one ``TaskEntry`` in
``TASKS`` below. The entry names its Task class, its scripted expert, its default training
algorithm (whose shipped config is ``policies/configs/<name>_<algo>.yaml``) and its pretrained
bundles. Classes are named as ``"module:Class"`` strings and imported on first use, so that
``import factoryfloor`` (which registers the Gymnasium ids) loads neither pybullet nor the
policies layer, and this layer (sim) never imports the one above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import gymnasium as gym


@dataclass(frozen=True, kw_only=True)
class TaskEntry:
    """One task of the suite.

    Attributes:
        name: Registry name, snake_case (``FactoryEnv(task=name)``, config file prefix).
        env_id: Gymnasium id, ``factoryfloor/<Task>-v<N>``.
        task_class: The ``Task`` subclass, as ``"module:Class"``.
        max_episode_steps: Time limit (control steps) of ``gymnasium.make``.
        expert: The scripted expert (``policies.scripted.ScriptedExpert``), as ``"module:Class"``.
        default_algo: Training algorithm when ``train`` is given none (a key of
            ``policies.train_config.ALGORITHMS``; a test checks it and its shipped config).
        pretrained: Robot name -> bundle file name in ``factoryfloor/policies/pretrained``.
    """

    name: str
    env_id: str
    task_class: str
    max_episode_steps: int
    expert: str
    default_algo: str
    pretrained: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.env_id.startswith("factoryfloor/") or "-v" not in self.env_id:
            raise ValueError(f"env_id {self.env_id!r} must look like factoryfloor/<Task>-v<N>")
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={self.max_episode_steps} must be >= 1")

    def config_file(self, algo: str | None = None) -> str:
        """File name of the shipped training config for ``algo`` (default: ``default_algo``)."""
        return f"{self.name}_{algo or self.default_algo}.yaml"

    def pretrained_path(self, robot: str) -> Path | None:
        """The shipped bundle for ``robot``, or None when there is none."""
        name = self.pretrained.get(robot)
        if name is None:
            return None
        return Path(str(files("factoryfloor.policies") / "pretrained" / name))

    def load_task_class(self) -> Any:
        """The ``Task`` subclass (imports its module)."""
        return load_object(self.task_class)

    def load_expert(self) -> Any:
        """The scripted expert class (imports the policies layer)."""
        return load_object(self.expert)


def load_object(path: str) -> Any:
    """The object named ``"package.module:Name"``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


_TASKS = "factoryfloor.sim.tasks"
_EXPERTS = "factoryfloor.policies.scripted"

TASKS: dict[str, TaskEntry] = {
    e.name: e
    for e in (
        TaskEntry(
            name="reach", env_id="factoryfloor/Reach-v0", task_class=f"{_TASKS}.reach:ReachTask",
            max_episode_steps=50, expert=f"{_EXPERTS}:ReachExpert", default_algo="sac",
            pretrained={"panda": "reach_panda.ffpolicy"},
        ),
        TaskEntry(
            name="pick_place", env_id="factoryfloor/PickPlace-v0",
            task_class=f"{_TASKS}.pick_place:PickPlaceTask", max_episode_steps=100,
            expert=f"{_EXPERTS}:PickPlaceExpert", default_algo="tqc",
            pretrained={"panda": "pick_place_panda.ffpolicy"},
        ),
        TaskEntry(
            name="conveyor_pick", env_id="factoryfloor/ConveyorPick-v0",
            task_class=f"{_TASKS}.conveyor_pick:ConveyorPickTask", max_episode_steps=200,
            expert=f"{_EXPERTS}:ConveyorPickExpert", default_algo="tqc",
        ),
    )
}  # fmt: skip
BY_ENV_ID: dict[str, TaskEntry] = {e.env_id: e for e in TASKS.values()}
ENV_IDS: tuple[str, ...] = tuple(BY_ENV_ID)


def task_entry(name_or_env_id: str) -> TaskEntry:
    """The entry of a task name or env id.

    Raises:
        KeyError: Naming the known env ids.
    """
    entry = TASKS.get(name_or_env_id) or BY_ENV_ID.get(name_or_env_id)
    if entry is None:
        known = ", ".join(f"{e.name} ({e.env_id})" for e in TASKS.values())
        raise KeyError(f"unknown task {name_or_env_id!r}; known tasks: {known}")
    return entry


def register_envs() -> None:
    """Register every entry's env id with Gymnasium (idempotent)."""
    for entry in TASKS.values():
        if entry.env_id not in gym.registry:
            gym.register(
                id=entry.env_id,
                entry_point="factoryfloor.sim.env:FactoryEnv",
                kwargs={"task": entry.name},
                max_episode_steps=entry.max_episode_steps,
            )
