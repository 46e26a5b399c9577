"""Shared helpers for the factoryfloor test suite (imported by tests; not a test module)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import factoryfloor  # noqa: F401  (registers the Gymnasium ids)
from factoryfloor.robots import robot_names
from factoryfloor.sim.registry import ENV_IDS as REGISTERED_IDS

ENV_IDS: list[str] = list(REGISTERED_IDS)  # the live registry: a new env is tested automatically
ROBOTS: list[str] = robot_names()  # the live robot registry

# Warnings of Gymnasium's checker that are expected for this project: goal-conditioned
# observation vectors are unbounded by design.
EXPECTED_CHECKER_WARNINGS = (
    "observation space minimum value is -infinity",
    "observation space maximum value is infinity",
)


@dataclass
class Transition:
    """What one ``env.step`` returned (the observation copied)."""

    obs: dict[str, np.ndarray]
    reward: float
    terminated: bool
    truncated: bool
    is_success: bool


def seeded_actions(space: gym.spaces.Box, n: int, seed: int) -> np.ndarray:
    """``n`` actions drawn uniformly from ``space`` with their own generator."""
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)


def copy_obs(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Deep copy of an observation dict."""
    return {k: np.array(v, copy=True) for k, v in obs.items()}


def rollout(env: gym.Env, actions: Sequence[np.ndarray], stop_on_done: bool = True) -> list:
    """Step ``env`` through ``actions``; stops after a terminal step when ``stop_on_done``."""
    out: list[Transition] = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append(
            Transition(copy_obs(obs), reward, terminated, truncated, bool(info["is_success"]))
        )
        if stop_on_done and (terminated or truncated):
            break
    return out


def assert_obs_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray], where: str = "") -> None:
    """Exact equality of two observation dicts (keys, dtypes, shapes and every value)."""
    assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{where}: obs[{key!r}] dtype/shape"
        if not np.array_equal(x, y):
            diff = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))
            raise AssertionError(f"{where}: obs[{key!r}] differs (max abs diff {diff:.3g})")


def assert_trajectories_equal(t1: list, t2: list) -> None:
    """Exact equality of two lists of ``Transition``."""
    assert len(t1) == len(t2), f"trajectory lengths differ: {len(t1)} != {len(t2)}"
    for i, (a, b) in enumerate(zip(t1, t2, strict=True)):
        assert_obs_equal(a.obs, b.obs, where=f"step {i}")
        assert a.reward == b.reward, f"step {i}: reward {a.reward} != {b.reward}"
        assert a.terminated == b.terminated, f"step {i}: terminated differs"
        assert a.truncated == b.truncated, f"step {i}: truncated differs"
        assert a.is_success == b.is_success, f"step {i}: is_success differs"


def unexpected_warnings(caught: list[Any]) -> list[str]:
    """Messages of recorded warnings that are not in ``EXPECTED_CHECKER_WARNINGS``."""
    messages = [str(w.message) for w in caught]
    return [m for m in messages if not any(e in m for e in EXPECTED_CHECKER_WARNINGS)]
