"""``factoryfloor train`` and ``factoryfloor sweep``: training runs and Ray Tune sweeps."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from factoryfloor.cli._args import add_ray, add_task, count, robot_name


def configure_train(p: argparse.ArgumentParser) -> None:
    """Arguments of ``train`` (unset options keep the task's shipped config)."""
    add_task(p)
    p.add_argument("--robot", type=robot_name, help="robot name: panda or xarm6 (config: panda)")
    p.add_argument("--algo", help="sac, td3, tqc or ppo (default: the task's, e.g. sac for Reach)")
    p.add_argument(
        "--obs", choices=("state", "camera"), default="state",
        help="state: the simulator's full state; camera: the actor sees what a real cell has "
        "(real-cell state, cell and wrist images; the shipped <task>_sac_camera.yaml)",
    )  # fmt: skip
    p.add_argument("--timesteps", type=count(1), help="training budget in env steps (total)")
    p.add_argument("--n-envs", type=count(1), help="parallel envs (1: in-process; more: processes)")
    p.add_argument("--seed", type=count(0), help="seed of the model, envs and random generators")
    p.add_argument("--device", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--out", help="run folder (default: runs/<env>_<algo>_seed<seed>)")
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig fields (any subset)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--demos", help="demonstrations: a Minari dataset id or folder (factoryfloor demos record)"
    )
    p.add_argument(
        "--demo-episodes", type=count(0),
        help="without --demos: record this many expert episodes into the run folder first",
    )  # fmt: skip
    add_ray(p, "run the envs in Ray actors: a local Ray, or the cluster at ADDRESS")
    p.add_argument("--envs-per-actor", type=count(1), help="environments per Ray actor")
    p.add_argument("--target-success", type=float, help="stop once an evaluation reaches this rate")
    p.add_argument("--max-wall-time", type=float, help="stop after this many seconds (total)")
    p.add_argument("--bc-epochs", type=count(0), help="behaviour cloning epochs before RL")


def run_train(args: argparse.Namespace) -> int:
    """Train, then print one line about the run (exit 128 + signal when interrupted)."""
    from factoryfloor.policies import train as training
    from factoryfloor.policies.train_config import resolve_config

    overrides = {
        "robot": args.robot, "timesteps": args.timesteps, "n_envs": args.n_envs,
        "seed": args.seed, "device": args.device, "out": args.out,
        "progress_bar": False if args.no_progress else None, "demos": args.demos,
        "demo_episodes": args.demo_episodes, "bc_epochs": args.bc_epochs,
        "ray": True if args.ray else None,
        "ray_address": None if args.ray in (None, "local") else args.ray,
        "envs_per_actor": args.envs_per_actor, "target_success": args.target_success,
        "max_wall_time_s": args.max_wall_time,
    }  # fmt: skip
    cfg = resolve_config(
        args.task, args.algo, args.config, overrides, resume=args.resume, obs=args.obs
    )
    run_dir = training.train(cfg, resume=args.resume)
    summary = training.run_summary(run_dir)
    last = summary["last_evaluation"] or {}
    stopped = summary.get("stopped_because")
    print(
        f"run {run_dir}: {summary['num_timesteps']:,} env steps, success rate "
        f"{_rate(last.get('success_rate'))} (best {_rate(summary['best_success_rate'])})"
        + (f"; stopped: {stopped}" if stopped else "")
    )
    if summary["interrupted_by"]:
        print(f"stopped by {summary['interrupted_by']}; continue with: factoryfloor train "
              f"{cfg.task} --out {run_dir} --resume", file=sys.stderr)  # fmt: skip
        return 128 + int(getattr(signal.Signals, summary["interrupted_by"]))
    return 0


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def configure_sweep(p: argparse.ArgumentParser) -> None:
    """Arguments of ``sweep``."""
    add_task(p)
    p.add_argument("--algo", default="sac", help="sac, td3, tqc or ppo")
    p.add_argument("--seeds", default="0-3", help="seeds of each config: 0-7 or 0,3,5")
    p.add_argument("--grid", type=Path, help="YAML: TrainConfig field -> list of values")
    add_ray(p, "the Ray cluster at ADDRESS (default: a local Ray)")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep folder")
    p.add_argument("--timesteps", type=count(1), help="training budget of every trial")
    p.add_argument("--no-early-stop", action="store_true", help="run every trial to the end")


def run_sweep(args: argparse.Namespace) -> int:
    """Run the sweep and print its summary table."""
    from factoryfloor.policies.ray_start import start_ray
    from factoryfloor.policies.sweep import format_summary, load_grid, parse_seeds, run_sweep

    if args.ray and args.ray != "local":
        start_ray(args.ray)
    fixed = {"timesteps": args.timesteps} if args.timesteps else {}
    summary = run_sweep(
        args.task, args.algo, parse_seeds(args.seeds), load_grid(args.grid), args.out,
        fixed, early_stop=not args.no_early_stop,
    )  # fmt: skip
    print(format_summary(summary))
    print(f"summary: {args.out / 'summary.json'}")
    return 0
