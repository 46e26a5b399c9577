"""Time to 90% success: factoryfloor's default training against panda-gym with the zoo's TQC+HER.

In one run, on this machine (pinned to 2 CPU cores when it has more), each row trains until an
evaluation of 50 seeded episodes reaches 90% success or its wall-time budget is spent:

* ``factoryfloor/Reach-v0`` with the shipped default config (SAC+HER);
* ``factoryfloor/PickPlace-v0`` with the shipped default config (TQC+HER whose actor is first
  cloned from 1,000 recorded scripted-expert episodes: ``demo_episodes``, ``bc_epochs``);
* panda-gym's ``PandaReach-v3`` and ``PandaPickAndPlace-v3`` with rl-baselines3-zoo's published
  TQC+HER hyperparameters for the Panda tasks (``hyperparams/tqc.yml``: TimeFeatureWrapper,
  MultiInputPolicy, net_arch [512, 512, 512], n_critics 2, batch 2048, buffer 1e6, gamma 0.95,
  learning rate 1e-3, tau 0.05, HER future with 4 sampled goals).

Every row goes through the same ``factoryfloor.policies.train.train`` (same evaluation, same
clock): only the task and the hyperparameters differ. The wall time counts everything inside
``train()``: recording demonstrations, behaviour cloning, env steps, updates and evaluations.
A row that misses 90% within its budget reports its best success rate and env steps per second,
and, for the zoo rows, how long the zoo's ~1M steps would take at that speed.

Prints a table, writes JSON.

Usage::

    python benchmarks/train_speed.py --out bench_results/train_speed.json
    python benchmarks/train_speed.py --rows ours-reach zoo-reach --peer-budget-s 120
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

TARGET = 0.9
EVAL_EPISODES = 50
CORES = 2
ZOO_STEPS_PICK_AND_PLACE = 1_000_000  # the zoo's n_timesteps for PandaPickAndPlace
ZOO_TQC_HER: dict[str, Any] = {
    "algo": "tqc",
    "normalize": False,  # the zoo's Panda entries do not normalise
    "net_arch": [512, 512, 512],
    "policy_kwargs": {"n_critics": 2},
    "batch_size": 2048,
    "buffer_size": 1_000_000,
    "gamma": 0.95,
    "learning_rate": 1e-3,
    "tau": 0.05,
    "her": True,
    "her_n_sampled_goal": 4,
    "her_goal_selection": "future",
    "learning_starts": 100,  # TQC's default (the zoo sets none)
}


@dataclass
class Row:
    """One training run of the comparison."""

    name: str
    task: str
    trainer: str
    overrides: dict[str, Any] = field(default_factory=dict)
    peer: bool = False


ROWS = {
    "ours-reach": Row("ours-reach", "factoryfloor/Reach-v0", "factoryfloor default (SAC+HER)"),
    "zoo-reach": Row("zoo-reach", "bench/PandaReachTF-v3", "zoo TQC+HER", ZOO_TQC_HER, True),
    "ours-pickplace": Row(
        "ours-pickplace", "factoryfloor/PickPlace-v0", "factoryfloor default (BC + TQC+HER)"
    ),
    "zoo-pickplace": Row(
        "zoo-pickplace", "bench/PandaPickAndPlaceTF-v3", "zoo TQC+HER", ZOO_TQC_HER, True
    ),
}


def register_peers() -> None:
    """panda-gym envs wrapped in sb3-contrib's TimeFeatureWrapper, as the zoo trains them."""
    import panda_gym  # noqa: F401  (registers the Panda envs)
    from sb3_contrib.common.wrappers import TimeFeatureWrapper

    for name in ("PandaReach", "PandaPickAndPlace"):
        env_id = f"bench/{name}TF-v3"
        if env_id not in gym.registry:
            base = f"{name}-v3"
            gym.register(
                env_id,
                entry_point=lambda base=base, **kw: TimeFeatureWrapper(gym.make(base, **kw)),
                max_episode_steps=gym.registry[base].max_episode_steps,
            )


def run_row(row: Row, folder: Path, budget_s: float, eval_every: int, seed: int) -> dict[str, Any]:
    """Train one row to the target or the budget; its figures."""
    from factoryfloor.policies.train import train
    from factoryfloor.policies.train_config import load_config

    overrides = {
        **row.overrides,
        "seed": seed,
        "out": str(folder / row.name),
        "target_success": TARGET,
        "max_wall_time_s": budget_s,
        "eval_episodes": EVAL_EPISODES,
        "eval_every_steps": eval_every,
        "checkpoint_every_steps": 0,
        "save_replay_buffer": False,
        "progress_bar": False,
        "tensorboard": False,
        "device": "cpu",
    }
    cfg = load_config(row.task, overrides.pop("algo", None), None, overrides)
    run = train(cfg)
    evals = [json.loads(ln) for ln in (run / "evaluations.jsonl").read_text().splitlines()]
    manifest = json.loads((run / "checkpoints" / "last" / "checkpoint.json").read_text())
    hit = next((e for e in evals if e["success_rate"] >= TARGET), None)
    steps = int(manifest["num_timesteps"])
    train_s = manifest["wall_time_s"] - manifest["eval_wall_time_s"]
    result: dict[str, Any] = {
        "row": row.name,
        "task": row.task,
        "trainer": row.trainer,
        "config": {k: v for k, v in cfg.to_dict().items() if k not in ("out",)},
        "budget_s": budget_s,
        "reached": hit is not None,
        "best_success_rate": max(e["success_rate"] for e in evals),
        "env_steps": steps,
        "wall_s": manifest["wall_time_s"],
        "env_steps_per_s_excluding_eval": round(steps / train_s, 2) if train_s > 0 else None,
        "evaluations": evals,
    }
    if hit is not None:
        result.update(steps_to_target=hit["num_timesteps"], wall_s_to_target=hit["wall_time_s"])
    if (bc := run / "bc.json").is_file():
        result["behaviour_cloning"] = json.loads(bc.read_text())
    speed = result["env_steps_per_s_excluding_eval"]
    if row.peer and hit is None and speed:
        result["projected_hours_for_zoo_1M_steps"] = round(
            ZOO_STEPS_PICK_AND_PLACE / speed / 3600, 1
        )
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    """The comparison as a text table."""
    print(
        f"\n{'row':<15} {'trainer':<36} {'90%?':>5} {'steps':>8} {'wall s':>8} "
        f"{'best':>5} {'steps/s':>8}"
    )
    for r in results:
        steps = r.get("steps_to_target", r["env_steps"])
        wall = r.get("wall_s_to_target", r["wall_s"])
        print(
            f"{r['row']:<15} {r['trainer']:<36} {'yes' if r['reached'] else 'no':>5} "
            f"{steps:>8} {wall:>8.1f} {r['best_success_rate']:>5.2f} "
            f"{r['env_steps_per_s_excluding_eval'] or 0:>8.1f}"
        )
    print("steps and wall s: to the first evaluation at >= 90%, or the whole budget when missed")


def speedups(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task, the peer's wall time to 90% over ours (a lower bound when the peer missed)."""
    by = {r["row"]: r for r in results}
    out: dict[str, Any] = {}
    for task in ("reach", "pickplace"):
        ours, zoo = by.get(f"ours-{task}"), by.get(f"zoo-{task}")
        if not ours or not zoo or not ours["reached"]:
            continue
        ratio = zoo.get("wall_s_to_target", zoo["wall_s"]) / ours["wall_s_to_target"]
        out[task] = {"wall_time_ratio": round(ratio, 1), "lower_bound": not zoo["reached"]}
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=1800.0, help="budget of our rows (s)")
    parser.add_argument("--peer-budget-s", type=float, default=600.0, help="zoo rows' budget (s)")
    parser.add_argument("--out", type=Path, default=Path("bench_results/train_speed.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rows, print the table, write the JSON report."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore", module="gymnasium")  # panda-gym's space warnings
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > CORES:
        os.sched_setaffinity(0, cpus[:CORES])
    import factoryfloor  # noqa: F401  (registers the envs)
    from factoryfloor.policies.checkpoint import atomic_write_text
    from factoryfloor.policies.provenance import environment_info

    register_peers()
    results = []
    with tempfile.TemporaryDirectory(prefix="ff-train-speed-") as tmp:
        for name in args.rows:
            row = ROWS[name]
            budget = args.peer_budget_s if row.peer else args.budget_s
            eval_every = 500 if "reach" in name or row.peer else 5_000
            print(f"training {name} ({row.task}, budget {budget:.0f} s) ...", flush=True)
            results.append(run_row(row, Path(tmp), budget, eval_every, args.seed))
    print_table(results)
    ratios = speedups(results)
    for task, r in ratios.items():
        bound = ">= " if r["lower_bound"] else ""
        print(f"{task}: zoo TQC+HER needs {bound}{r['wall_time_ratio']}x our wall time to 90%")
    report = {
        "benchmark": "train_speed",
        "target_success": TARGET,
        "eval_episodes": EVAL_EPISODES,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "machine": platform.processor() or platform.machine(),
        "environment": environment_info("cpu"),
        "results": results,
        "speedups": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
