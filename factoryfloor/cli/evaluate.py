"""``factoryfloor eval``: a policy's success rate on a task."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from factoryfloor.cli._args import add_ray, add_robot, add_task, count

SHOWN = (
    "env_id", "robot", "policy", "episodes", "success_rate", "mean_return",
    "mean_episode_length", "env_steps_per_s",
)  # fmt: skip


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``eval``."""
    add_task(p)
    p.add_argument(
        "--policy", default="expert",
        help="expert, a run folder (its best checkpoint) or a .ffpolicy bundle",
    )  # fmt: skip
    p.add_argument("--episodes", type=count(1), default=10, help="number of episodes")
    p.add_argument("--seed", type=count(0), default=0, help="seed of the first episode")
    add_robot(p)
    p.add_argument("--video", type=Path, help="write the first episodes' cell camera to this .mp4")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_ray(p, "spread the episodes over Ray workers: a local Ray, or the cluster at ADDRESS")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the result."""
    from factoryfloor.policies.evaluate import evaluate, resolve_policy

    resolve_policy(args.policy)  # a bad --policy fails before Ray or any env starts
    if args.ray:
        from factoryfloor.policies.ray_eval import evaluate_on_ray
        from factoryfloor.policies.ray_start import start_ray

        if args.video is not None:
            raise ValueError("--video records in this process: drop --ray to record a video")
        address = None if args.ray == "local" else args.ray
        start_ray(address)
        result = evaluate_on_ray(args.task, args.policy, args.episodes, args.seed, args.robot)
    else:
        result = evaluate(
            args.task, args.policy, args.episodes, args.seed, args.robot, video=args.video
        )
    summary = result.as_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        for key in SHOWN:
            print(f"{key:>20}: {summary[key]}")
    return 0
