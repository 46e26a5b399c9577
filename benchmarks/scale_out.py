"""Scale-out: env steps/s of RayVecEnv with 1-16 actors vs SubprocVecEnv with as many envs.

In one run on this machine (local Ray): for each actor count N (1, 2, 4, 8, 16) with K envs per
actor, the vectorised env steps/s of ``RayVecEnv`` and of SB3's ``SubprocVecEnv`` over the same
N x K envs (random actions, resets included), plus the round trip of one empty remote call. From
those it writes a short projection to a 16-node cluster: a vectorised step costs about
``K * t_env + t_call + N * t_gather`` (the slowest actor's envs, one call, the driver gathering N
results), so each node's actors add throughput until the driver's per-actor gathering cost
dominates. Prints a table and writes JSON.

Usage::

    python benchmarks/scale_out.py --seconds 5 --out bench_results/scale_out.json
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv

from factoryfloor.policies import train as training
from factoryfloor.policies.atomic import atomic_write_json
from factoryfloor.policies.ray_vec_env import RayVecEnv

TASK = "factoryfloor/PickPlace-v0"
ACTORS = (1, 2, 4, 8, 16)


def steps_per_s(venv: VecEnv, seconds: float) -> float:
    """Env steps per second (vectorised steps x envs) with random actions."""
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    n, steps = venv.num_envs, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        venv.step(rng.uniform(-1, 1, (n, 4)).astype(np.float32))
        steps += 1
    return steps * n / (time.perf_counter() - start)


@ray.remote(num_cpus=0)
class Pinger:
    """An actor with an empty method: the cost of one remote call."""

    def ping(self) -> None:
        """Nothing."""


def call_overhead_us(n: int = 2000) -> dict[str, float]:
    """Round trip of an empty remote call (us)."""
    actor = Pinger.remote()  # type: ignore[attr-defined]
    ray.get(actor.ping.remote())
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        ray.get(actor.ping.remote())
        samples.append(time.perf_counter() - t0)
    ray.kill(actor)
    data = np.asarray(samples) * 1e6
    return {
        "p50": round(float(np.median(data)), 1),
        "p99": round(float(np.percentile(data, 99)), 1),
    }


def measure(n_actors: int, per_actor: int, seconds: float, cpus: int) -> dict[str, Any]:
    """RayVecEnv and SubprocVecEnv over n_actors x per_actor envs."""
    n_envs = n_actors * per_actor
    ray_env = RayVecEnv(TASK, n_envs, per_actor, num_cpus_per_actor=min(1.0, cpus / n_actors))
    try:
        ray_rate = steps_per_s(ray_env, seconds)
    finally:
        ray_env.close()
    sub = make_vec_env(partial(training._make_env, TASK, True), n_envs, vec_env_cls=SubprocVecEnv)
    try:
        sub_rate = steps_per_s(sub, seconds)
    finally:
        sub.close()
    return {
        "actors": n_actors,
        "envs": n_envs,
        "ray_steps_per_s": round(ray_rate, 1),
        "subproc_steps_per_s": round(sub_rate, 1),
        "ray_over_subproc": round(ray_rate / sub_rate, 2),
    }


def fanout_us(counts: Sequence[int] = ACTORS, rounds: int = 300) -> dict[int, float]:
    """Median time (us) for the driver to call N empty actors and gather their N results."""
    pingers = [Pinger.remote() for _ in range(max(counts))]  # type: ignore[attr-defined]
    ray.get([a.ping.remote() for a in pingers])
    out = {}
    for n in counts:
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            ray.get([a.ping.remote() for a in pingers[:n]])
            samples.append(time.perf_counter() - t0)
        out[n] = round(float(np.median(samples)) * 1e6, 1)
    for a in pingers:
        ray.kill(a)
    return out


def projection(
    rows: list[dict[str, Any]], fanout: dict[int, float], per_actor: int
) -> dict[str, Any]:
    """Env steps/s of 16 nodes x 8 actors, from this machine's measured costs.

    One vectorised step costs the slowest actor's ``K`` env steps plus the driver's fan-out to
    ``N`` actors (measured with empty actors: ``fanout(N) ~ a + b * N``). Actors on other nodes
    run in parallel, so only the fan-out grows with N.
    """
    counts = sorted(fanout)
    slope, intercept = np.polyfit(counts, [fanout[n] for n in counts], 1)
    t_vec_one = per_actor / rows[0]["ray_steps_per_s"]  # one actor: K env steps + one call (s)
    t_env = max(1e-6, (t_vec_one - fanout[1] * 1e-6) / per_actor)
    actors = 16 * 8
    t_step = per_actor * t_env + (intercept + slope * actors) * 1e-6
    limit = int(per_actor * t_env / max(slope * 1e-6, 1e-9))
    return {
        "cluster": "16 nodes x 8 actors",
        "envs": actors * per_actor,
        "env_step_ms": round(t_env * 1e3, 3),
        "fanout_us": {"per_actor": round(float(slope), 1), "fixed": round(float(intercept), 1)},
        "projected_steps_per_s": round(actors * per_actor / t_step),
        "note": f"the driver's fan-out (~{slope:.0f} us per actor) equals the actors' own work "
        f"({per_actor} env steps) at ~{limit} actors; beyond that, more envs per actor (or "
        "several learners) scale, more actors do not",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per configuration (s)")
    parser.add_argument("--envs-per-actor", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_results/scale_out.json"))
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        call = call_overhead_us()
        fanout = fanout_us()
        rows = [measure(n, args.envs_per_actor, args.seconds, cpus) for n in ACTORS]
    finally:
        ray.shutdown()
    proj = projection(rows, fanout, args.envs_per_actor)
    print(
        f"\n{'actors':>6} {'envs':>5} {'RayVecEnv steps/s':>18} {'SubprocVecEnv':>14} {'ratio':>6}"
    )
    for r in rows:
        print(f"{r['actors']:>6} {r['envs']:>5} {r['ray_steps_per_s']:>18.0f} "
              f"{r['subproc_steps_per_s']:>14.0f} {r['ray_over_subproc']:>6.2f}")  # fmt: skip
    print(f"empty remote call: p50 {call['p50']} us, p99 {call['p99']} us ({cpus} CPUs here)")
    print(f"driver fan-out to N empty actors (us): {fanout}")
    print(f"projection, {proj['cluster']}: ~{proj['projected_steps_per_s']} env steps/s")
    print(f"  {proj['note']}")
    report = {
        "task": TASK, "cpus": cpus, "remote_call_us": call, "fanout_us": fanout, "rows": rows,
        "projection": proj,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
