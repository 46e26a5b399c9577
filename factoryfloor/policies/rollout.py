"""The one episode loop: evaluation, training's evaluations, demo recording and export parity.

``run_episode`` resets a Gymnasium env with a seed, steps it with a policy until the episode
ends (or ``max_steps``), and returns an ``Episode``. What differs between the callers is passed
in: the policy, a per-step observer (video frames), and whether to keep the trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

Obs = dict[str, np.ndarray]
Policy = Callable[[Obs], np.ndarray]
Observer = Callable[[gym.Env[Any, Any]], None]


@dataclass
class Episode:
    """One finished (or cut) episode.

    Attributes:
        seed: Seed of ``env.reset``.
        total_return: Sum of rewards (-).
        length: Steps taken.
        success: ``info["is_success"]`` of the last step (False when absent).
        observations: With ``keep``: per key ``(length + 1, *shape)``, the reset observation first.
        actions: With ``keep``: ``(length, A)`` float32.
        rewards: With ``keep``: ``(length,)`` float32.
        terminated: With ``keep``: ``(length,)`` bool.
        truncated: With ``keep``: ``(length,)`` bool.
        is_success: With ``keep``: ``(length,)`` bool, per step.
    """

    seed: int
    total_return: float = 0.0
    length: int = 0
    success: bool = False
    observations: dict[str, list[np.ndarray]] = field(default_factory=dict)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    is_success: list[bool] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        """The kept trajectory as arrays (``obs/<key>``, ``actions``, ``rewards``, flags)."""
        out = {f"obs/{k}": np.stack(v) for k, v in self.observations.items()}
        out["actions"] = np.asarray(self.actions, dtype=np.float32)  # (0,) when no step
        out["rewards"] = np.asarray(self.rewards, dtype=np.float32)
        for name in ("terminated", "truncated", "is_success"):
            out[name] = np.asarray(getattr(self, name), dtype=bool)
        return out


def run_episode(
    env: gym.Env[Any, Any],
    policy: Policy,
    seed: int,
    *,
    reset_policy: Callable[[], None] | None = None,
    observer: Observer | None = None,
    keep: bool = False,
    max_steps: int | None = None,
) -> Episode:
    """Run one seeded episode of ``policy`` in ``env``.

    Args:
        env: A Gymnasium env (its own time limit ends the episode).
        policy: Observation dict -> action.
        seed: Seed of ``env.reset``.
        reset_policy: Called after the reset (stateful policies forget the last episode).
        observer: Called with the env after the reset and after every step (e.g. a video frame).
        keep: Keep the trajectory in the returned ``Episode``.
        max_steps: Stop after this many steps even if the episode goes on (None: no limit).
    """
    obs, info = env.reset(seed=seed)
    if reset_policy is not None:
        reset_policy()
    episode = Episode(seed=seed)
    if keep:
        episode.observations = {k: [np.asarray(v)] for k, v in obs.items()}
    if observer is not None:
        observer(env)
    done = False
    while not done and (max_steps is None or episode.length < max_steps):
        action = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        episode.total_return += float(reward)
        episode.length += 1
        done = bool(terminated or truncated)
        if keep:
            _keep(episode, obs, action, float(reward), terminated, truncated, info)
        if observer is not None:
            observer(env)
    episode.success = bool(info.get("is_success", False))
    return episode


def _keep(
    episode: Episode, obs: Obs, action: np.ndarray, reward: float, terminated: bool,
    truncated: bool, info: dict[str, Any],
) -> None:  # fmt: skip
    for k, v in obs.items():
        episode.observations[k].append(np.asarray(v))
    episode.actions.append(action)
    episode.rewards.append(reward)
    episode.terminated.append(bool(terminated))
    episode.truncated.append(bool(truncated))
    episode.is_success.append(bool(info.get("is_success", False)))


def with_action_noise(act: Policy, std: float, rng: np.random.Generator) -> Policy:
    """``act`` with Gaussian noise on its motion commands (DART's noise injection).

    Recording an expert this way shows it correcting from off its path, which cloning needs
    (a cloned actor drifts off the expert's states). The noise is zero-mean and independent of
    the state, so the mean action a regression fits is still the expert's (up to the clip).

    Args:
        act: The policy; its actions are in [-1, 1], the last entry the gripper command.
        std: Standard deviation of the noise (normalised action units; 0: ``act`` itself).
        rng: Source of the noise (seed it per episode for a reproducible recording).

    Returns:
        A policy whose actions are ``act``'s plus the noise on every entry but the last
        (the gripper command is left alone), clipped to [-1, 1], float32.
    """
    if std <= 0:
        return act

    def noisy(obs: Obs) -> np.ndarray:
        action = np.array(act(obs), dtype=np.float32)
        action[:-1] += rng.normal(0.0, std, size=action.shape[0] - 1).astype(np.float32)
        return np.clip(action, -1.0, 1.0)

    return noisy
