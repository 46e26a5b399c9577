"""Gymnasium registration of every factoryfloor task (lazy string entry points)."""

from __future__ import annotations

import gymnasium as gym

# env id -> (task name, max_episode_steps). Adding a task = one task file + one line here.
ENV_SPECS: dict[str, tuple[str, int]] = {
    "factoryfloor/Reach-v0": ("reach", 50),
    "factoryfloor/PickPlace-v0": ("pick_place", 100),
    "factoryfloor/ConveyorPick-v0": ("conveyor_pick", 200),
}


def register_envs() -> None:
    """Register all ids in ``ENV_SPECS`` (idempotent)."""
    for env_id, (task, max_steps) in ENV_SPECS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="factoryfloor.sim.env:FactoryEnv",
                kwargs={"task": task},
                max_episode_steps=max_steps,
            )
