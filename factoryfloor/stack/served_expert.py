"""The scripted expert behind the edge policy server (``factoryfloor edge serve --policy expert``).

One expert per session (experts keep their phase between steps); the wire specs are those of the
task's env, exactly as the simulated controller describes them, so the same controller can be
driven by the expert or by a bundle.
"""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np

from factoryfloor.policies.scripted import ScriptedExpert, make_expert
from factoryfloor.stack.sim_cell import describe_env


class ExpertServedPolicy:
    """Serves the task's scripted expert.

    Args:
        task_id: Gymnasium id of a factoryfloor task.
        robot: Robot name.
    """

    def __init__(self, task_id: str, robot: str = "panda") -> None:
        self.env = gym.make(task_id, robot=robot)
        self.spec = replace(
            describe_env(self.env, task_id, robot), model_sha256=f"scripted-expert:{task_id}"
        )
        self._keys = [item["name"] for item in self.spec.observation]
        self._sizes = [int(np.prod(item["shape"])) for item in self.spec.observation]
        self._experts: dict[int, ScriptedExpert] = {}

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        """One expert action per session's flat observation."""
        return np.stack([self._act(s, row) for s, row in zip(sessions, obs, strict=True)])

    def _act(self, session: int, flat: np.ndarray) -> np.ndarray:
        expert = self._experts.get(session)
        if expert is None:
            expert = self._experts[session] = make_expert(self.env)
        parts = np.split(flat, np.cumsum(self._sizes)[:-1])
        return expert.act(dict(zip(self._keys, parts, strict=True)))

    def reset(self, session: int) -> None:
        """Forget the session's episode."""
        expert = self._experts.get(session)
        if expert is not None:
            expert.reset()
