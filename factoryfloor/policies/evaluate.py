"""Evaluate a policy on a factoryfloor task: success rate, returns, episode lengths."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import factoryfloor  # noqa: F401  (registers the envs)
from factoryfloor.policies.scripted import make_expert
from factoryfloor.policies.video import VideoWriter

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class EvalResult:
    """Evaluation summary; ``as_dict()`` is what ``factoryfloor eval --json`` prints."""

    env_id: str
    robot: str
    policy: str
    episodes: int
    seed: int
    success_rate: float
    mean_return: float
    mean_episode_length: float
    successes: list[bool]
    episode_lengths: list[int]
    wall_time_s: float
    env_steps_per_s: float

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def _expert_policy(env: gym.Env[Any, Any]) -> tuple[Policy, Callable[[], None]]:
    expert = make_expert(env)
    return expert.act, expert.reset


POLICIES: dict[str, Callable[[gym.Env[Any, Any]], tuple[Policy, Callable[[], None]]]] = {
    "expert": _expert_policy,
}


def evaluate(
    env_id: str,
    policy: str = "expert",
    episodes: int = 10,
    seed: int = 0,
    robot: str = "panda",
    video: Path | None = None,
    video_episodes: int = 3,
    env_kwargs: dict[str, Any] | None = None,
) -> EvalResult:
    """Run ``episodes`` seeded episodes (seeds ``seed``, ``seed + 1``, ...) and summarise.

    Args:
        env_id: Registered id, e.g. ``"factoryfloor/PickPlace-v0"``.
        policy: A name from ``POLICIES`` (``"expert"``: the task's scripted expert).
        episodes: Number of episodes (>= 1).
        seed: Seed of the first episode.
        robot: Robot name.
        video: Optional ``.mp4`` path: the cell camera over the first ``video_episodes``.
        video_episodes: Episodes recorded when ``video`` is given.
        env_kwargs: Extra keyword arguments for ``gymnasium.make``.

    Raises:
        ValueError: With the valid choices, for an unknown policy or a bad episode count.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {sorted(POLICIES)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    kwargs = {"robot": robot, **(env_kwargs or {})}
    if video is not None:
        kwargs["render_mode"] = "rgb_array"
    env = gym.make(env_id, **kwargs)
    act, reset_policy = POLICIES[policy](env)
    writer = VideoWriter(video, fps=env.metadata["render_fps"]) if video is not None else None
    returns, lengths, successes, steps = [], [], [], 0
    start = time.perf_counter()
    try:
        for episode in range(episodes):
            record = writer if writer is not None and episode < video_episodes else None
            ret, length, success = _run_episode(env, act, reset_policy, seed + episode, record)
            returns.append(ret)
            lengths.append(length)
            successes.append(success)
            steps += length
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    finally:
        env.close()
    if writer is not None:
        writer.close()
    wall = time.perf_counter() - start
    return EvalResult(
        env_id=env_id,
        robot=robot,
        policy=policy,
        episodes=episodes,
        seed=seed,
        success_rate=float(np.mean(successes)),
        mean_return=float(np.mean(returns)),
        mean_episode_length=float(np.mean(lengths)),
        successes=successes,
        episode_lengths=lengths,
        wall_time_s=wall,
        env_steps_per_s=steps / wall,
    )


def _run_episode(
    env: gym.Env[Any, Any],
    act: Policy,
    reset_policy: Callable[[], None],
    seed: int,
    writer: VideoWriter | None,
) -> tuple[float, int, bool]:
    """One episode; returns (return, length, success)."""
    obs, info = env.reset(seed=seed)
    reset_policy()
    total, length, done = 0.0, 0, False
    if writer is not None:
        writer.write(env.render())
    while not done:
        obs, reward, terminated, truncated, info = env.step(act(obs))
        total += float(reward)
        length += 1
        done = terminated or truncated
        if writer is not None:
            writer.write(env.render())
    return total, length, bool(info["is_success"])
