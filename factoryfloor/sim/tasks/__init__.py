"""Tasks, one per module, each named by one entry of ``factoryfloor.sim.registry.TASKS``."""

from __future__ import annotations

from factoryfloor.sim.tasks.base import Task

__all__ = ["Task"]
