"""Tasks, one per module; importing this package registers them all."""

from __future__ import annotations

from factoryfloor.sim.tasks import conveyor_pick, pick_place, reach
from factoryfloor.sim.tasks.base import TASKS, Task, get_task_class, register_task

__all__ = [
    "TASKS",
    "Task",
    "conveyor_pick",
    "get_task_class",
    "pick_place",
    "reach",
    "register_task",
]
