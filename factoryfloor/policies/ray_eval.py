"""``factoryfloor eval ... --ray``: evaluation episodes spread over Ray actors.

The seeds ``seed .. seed + episodes - 1`` are cut into one consecutive chunk per actor; each
actor runs ``evaluate`` on its chunk and the results are merged in seed order, so the summary is
the same as a single-process ``evaluate`` with the same arguments (the episodes are
deterministic). A bundle is shipped to the actors as bytes (no shared file system needed); a run
folder must be readable at the same path on every node.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import ray

from factoryfloor.policies.evaluate import EvalResult, evaluate


def _evaluate_chunk(
    env_id: str, policy: str, bundle: bytes | None, episodes: int, seed: int, robot: str
) -> EvalResult:
    import factoryfloor  # noqa: F401  (registers the envs in the worker)

    if bundle is None:
        return evaluate(env_id, policy, episodes, seed, robot)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(policy).name
        path.write_bytes(bundle)
        return evaluate(env_id, str(path), episodes, seed, robot)


def evaluate_on_ray(
    env_id: str,
    policy: str = "expert",
    episodes: int = 10,
    seed: int = 0,
    robot: str = "panda",
    workers: int | None = None,
) -> EvalResult:
    """``evaluate`` with the episodes spread over ``workers`` Ray tasks (default: Ray's CPUs).

    Raises:
        RuntimeError: When Ray is not initialised.
        ValueError: For a bad episode count (as ``evaluate``).
    """
    if not ray.is_initialized():
        raise RuntimeError("evaluate_on_ray needs Ray: call ray.init() (or pass --ray) first")
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: evaluate at least 1 episode")
    workers = max(1, min(episodes, workers or int(ray.cluster_resources().get("CPU", 1))))
    bundle = Path(policy).read_bytes() if policy.endswith(".ffpolicy") else None
    bundle_ref = ray.put(bundle)
    counts = [len(c) for c in np.array_split(np.arange(episodes), workers)]
    starts = [seed + int(s) for s in np.cumsum([0, *counts[:-1]])]
    remote = ray.remote(num_cpus=1)(_evaluate_chunk)
    start = time.perf_counter()
    refs = [
        remote.remote(env_id, policy, bundle_ref, n, s, robot)
        for n, s in zip(counts, starts, strict=True)
        if n
    ]
    parts: list[EvalResult] = ray.get(refs)
    return _merge(parts, policy, seed, time.perf_counter() - start)


def _merge(parts: list[EvalResult], policy: str, seed: int, wall_s: float) -> EvalResult:
    successes = [s for p in parts for s in p.successes]
    lengths = [n for p in parts for n in p.episode_lengths]
    returns = sum(p.mean_return * p.episodes for p in parts)
    episodes = len(successes)
    result: dict[str, Any] = {
        "policy": policy,
        "episodes": episodes,
        "seed": seed,
        "success_rate": float(np.mean(successes)),
        "mean_return": returns / episodes,
        "mean_episode_length": float(np.mean(lengths)),
        "successes": successes,
        "episode_lengths": lengths,
        "wall_time_s": round(wall_s, 3),
        "env_steps_per_s": round(sum(lengths) / wall_s, 1) if wall_s > 0 else 0.0,
    }
    return replace(parts[0], **result)
