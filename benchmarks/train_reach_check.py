"""Must-show check: Reach (Panda, sparse reward) to >= 95% success within 60 s on 2 CPU cores.

Runs exactly what a user runs, ``factoryfloor train factoryfloor/Reach-v0`` with the shipped
default config (``factoryfloor/policies/configs/reach_sac.yaml``), once per seed, as a fresh
process pinned to 2 CPU cores (when the machine has more). The run's ``evaluations.jsonl``
(50 seeded evaluation episodes every 1,000 env steps) gives, for the first evaluation at >= 95%:

* wall time from launching the command (imports, env and model set-up, training and every
  evaluation so far included), and from the start of ``train()``;
* the env steps trained, and the part of the wall time spent evaluating.

Prints a table, writes JSON, exits 1 when a seed misses the target.

Usage::

    python benchmarks/train_reach_check.py --seeds 0 1 2 --out bench_results/train_reach_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TASK = "factoryfloor/Reach-v0"
TARGET_SUCCESS = 0.95
TARGET_WALL_S = 60.0
CORES = 2


def _pin_to_cores() -> None:
    """Run the child on at most ``CORES`` CPUs (the target machine's size)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > CORES:
        os.sched_setaffinity(0, cpus[:CORES])


def run_seed(seed: int, folder: Path) -> dict[str, Any]:
    """Train with the default config and seed ``seed``; where it first reached the target."""
    run = folder / f"reach_seed{seed}"
    cmd = [sys.executable, "-m", "factoryfloor.cli", "train", TASK, "--seed", str(seed)]
    cmd += ["--out", str(run), "--no-progress"]
    launched = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin_to_cores)
    total_s = time.time() - launched
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    lines = (run / "evaluations.jsonl").read_text().splitlines()
    evals = [json.loads(line) for line in lines]
    hit = next((e for e in evals if e["success_rate"] >= TARGET_SUCCESS), None)
    result: dict[str, Any] = {
        "seed": seed,
        "command": " ".join(["factoryfloor", *cmd[3:]]),
        "reached": hit is not None,
        "run_wall_s": round(total_s, 2),
        "final_success_rate": evals[-1]["success_rate"],
        "evaluations": evals,
    }
    if hit is not None:
        result.update(
            env_steps_to_target=hit["num_timesteps"],
            success_rate_at_target=hit["success_rate"],
            wall_s_to_target_from_launch=round(hit["time_unix_s"] - launched, 2),
            wall_s_to_target_in_train=hit["wall_time_s"],
            eval_wall_s_to_target=hit["eval_wall_time_s"],
        )
    result["passed"] = bool(hit) and result["wall_s_to_target_from_launch"] <= TARGET_WALL_S
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    head = f"{'seed':>4} {'steps':>6} {'success':>8} {'wall s':>7} {'in train()':>10}"
    print(f"{head} {'evaluating':>10}  target: >= {TARGET_SUCCESS:.0%} within {TARGET_WALL_S} s")
    for r in results:
        if not r["reached"]:
            final = r["final_success_rate"]
            print(f"{r['seed']:>4}  did not reach {TARGET_SUCCESS:.0%} (final {final})")
            continue
        print(
            f"{r['seed']:>4} {r['env_steps_to_target']:>6} {r['success_rate_at_target']:>8.0%} "
            f"{r['wall_s_to_target_from_launch']:>7.1f} {r['wall_s_to_target_in_train']:>10.1f} "
            f"{r['eval_wall_s_to_target']:>10.1f}  {'PASS' if r['passed'] else 'FAIL'}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        results = [run_seed(seed, folder) for seed in args.seeds]
    print_table(results)
    report = {
        "task": TASK,
        "target": {"success_rate": TARGET_SUCCESS, "wall_s": TARGET_WALL_S, "cores": CORES},
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "results": results,
        "passed": all(r["passed"] for r in results),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
