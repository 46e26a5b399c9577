"""The scripted experts solve every registered task from a short seeded set of episodes."""

from __future__ import annotations

import numpy as np
import pytest
from ff_testing import ENV_IDS, ROBOTS

from factoryfloor.policies.scripted import make_expert

N_EPISODES = 8  # seeds 0..7
MIN_SUCCESS = 0.8

# Tasks a robot's expert is known to fail more often than MIN_SUCCESS allows, reported as
# xfail rather than hidden behind a lower bar: (env id, robot) -> reason. None at present: over
# seeds 0..99 every expert succeeds in >= 95% of episodes (the xArm6 in 100% of PickPlace and
# ConveyorPick since its gripper model re-expresses the linkage, see robots/xarm6.py).
KNOWN_WEAK: dict[tuple[str, str], str] = {}


def _cases():
    for env_id in ENV_IDS:
        for robot in ROBOTS:
            reason = KNOWN_WEAK.get((env_id, robot))
            marks = [pytest.mark.xfail(strict=False, reason=reason)] if reason else []
            yield pytest.param(env_id, robot, marks=marks, id=f"{env_id.split('/')[1]}-{robot}")


def _episode(env, expert, seed: int) -> tuple[bool, int]:
    obs, _ = env.reset(seed=seed)
    expert.reset()
    for step in range(1, env.spec.max_episode_steps + 1):
        action = expert.act(obs)
        assert action.shape == env.action_space.shape and env.action_space.contains(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return bool(info["is_success"]), step
    raise AssertionError("TimeLimit did not truncate the episode")


@pytest.mark.parametrize(("env_id", "robot"), list(_cases()))
def test_expert_success_rate(make_env, env_id, robot):
    env = make_env(env_id, robot=robot)
    expert = make_expert(env)
    results = [_episode(env, expert, seed) for seed in range(N_EPISODES)]
    successes = [ok for ok, _ in results]
    rate = float(np.mean(successes))
    failed = [seed for seed, ok in enumerate(successes) if not ok]
    assert rate >= MIN_SUCCESS, f"{env_id} / {robot}: success {rate:.2f}, failed seeds {failed}"
    # Successful episodes finish well inside the time limit.
    lengths = [n for ok, n in results if ok]
    assert max(lengths) < env.spec.max_episode_steps


def test_expert_needs_ee_control(make_env):
    env = make_env(ENV_IDS[0], control="joints")
    with pytest.raises(ValueError, match="control='ee'"):
        make_expert(env)


def test_expert_reset_forgets_the_episode(make_env):
    env = make_env("factoryfloor/PickPlace-v0")
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    first = [expert.act(obs) for _ in range(3)]
    expert.reset()
    again = [expert.act(obs) for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
