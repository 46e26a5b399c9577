"""Fixtures shared by the whole suite."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
import pytest

# Make the helper module importable from every test directory, whatever the import mode.
sys.path.insert(0, str(Path(__file__).parent))

import factoryfloor  # noqa: F401  (registers the Gymnasium ids)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_env() -> Iterator[Callable[..., gym.Env]]:
    """Factory ``make_env(env_id, **kwargs)`` returning ``gym.make`` envs closed at teardown."""
    envs: list[gym.Env] = []

    def _make(env_id: str, **kwargs: object) -> gym.Env:
        env = gym.make(env_id, **kwargs)
        envs.append(env)
        return env

    yield _make
    for env in envs:
        env.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The source checkout (holds pyproject.toml and factoryfloor/)."""
    return REPO_ROOT
