"""The ``factoryfloor`` command line: thin wrappers over library functions.

Subcommands are registered in ``COMMANDS`` (name -> (configure parser, run)).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from factoryfloor.policies.edge_commands import configure_edge, run_edge

# top-level module -> the extra of pyproject.toml that installs it
EXTRA_OF_MODULE = {
    "ray": "ray",
    "pybullet": "sim",
    "cv2": "sim",
    "zmq": "edge",
    "onnxruntime": "edge",
    "torch": "train",
    "stable_baselines3": "train",
    "sb3_contrib": "train",
    "yaml": "train",
}
Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def _configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("env_id", help="environment id, e.g. factoryfloor/PickPlace-v0")
    p.add_argument(
        "--policy",
        default="expert",
        help="expert, a run folder (its best checkpoint) or a .ffpolicy bundle (default: expert)",
    )
    p.add_argument("--episodes", type=int, default=10, help="number of episodes (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    p.add_argument("--robot", default="panda", help="robot name (default: panda)")
    p.add_argument(
        "--video", type=Path, help="write the cell camera of the first episodes to this .mp4"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="spread the episodes over Ray workers: a local Ray, or the cluster at ADDRESS",
    )  # fmt: skip


def _run_eval(args: argparse.Namespace) -> int:
    from factoryfloor.policies.evaluate import evaluate

    if args.ray:
        import ray

        from factoryfloor.policies.ray_eval import evaluate_on_ray

        if args.video is not None:
            raise ValueError("--video records in this process: drop --ray to record a video")
        address = None if args.ray == "local" else args.ray
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        result = evaluate_on_ray(
            args.env_id, args.policy, args.episodes, args.seed, args.robot
        ).as_dict()
    else:
        result = evaluate(
            args.env_id, args.policy, args.episodes, args.seed, args.robot, video=args.video
        ).as_dict()
    if args.json:
        print(json.dumps(result))
    else:
        for key in (
            "env_id",
            "robot",
            "policy",
            "episodes",
            "success_rate",
            "mean_return",
            "mean_episode_length",
            "env_steps_per_s",
        ):
            print(f"{key:>20}: {result[key]}")
    return 0


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="factoryfloor/PickPlace-v0", help="environment id")
    p.add_argument("--robot", default="panda", help="robot name (default: panda)")
    p.add_argument("--policy", help="a .ffpolicy bundle or expert (default: the pretrained one)")
    p.add_argument("--episodes", type=int, default=20, help="episodes (default: 20)")
    p.add_argument("--seed", type=int, default=5_000_000, help="seed of the first episode")
    p.add_argument("--video-episodes", type=int, default=3, help="episodes in the MP4")
    p.add_argument("--gui", action="store_true", help="open pybullet's window (needs a display)")
    p.add_argument("--view", action="store_true", help="serve a live view on localhost")
    p.add_argument("--view-port", type=int, default=8765, help="live view port (0: any)")
    p.add_argument("--view-linger", type=float, default=0.0, help="keep the view up N s more")
    p.add_argument("--min-success", type=float, default=0.9, help="fail below this rate")
    p.add_argument("--hold-window-ms", type=float, default=20.0, help="safety hold window (ms)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")


def _run_demo(args: argparse.Namespace) -> int:
    from factoryfloor.policies.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            task=args.task, robot=args.robot, policy=args.policy, episodes=args.episodes,
            seed=args.seed, video_episodes=args.video_episodes, gui=args.gui, view=args.view,
            view_port=args.view_port, view_linger_s=args.view_linger, out=args.out,
            min_success=args.min_success, hold_window_s=args.hold_window_ms / 1e3,
        )
    )  # fmt: skip


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK_ID", help="environment id, e.g. factoryfloor/Reach-v0")
    p.add_argument("--algo", help="sac, td3, tqc or ppo (default: the task's, e.g. sac for Reach)")
    p.add_argument("--timesteps", type=int, help="training budget in env steps (total)")
    p.add_argument("--n-envs", type=int, help="parallel envs (1: in-process; more: subprocesses)")
    p.add_argument("--seed", type=int, help="seed of the model, envs and random generators")
    p.add_argument("--device", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--out", help="run folder (default: runs/<env>_<algo>_seed<seed>)")
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig fields (any subset)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--demos",
        help="demonstrations folder (factoryfloor demos record) to seed the replay buffer",
    )
    p.add_argument(
        "--demo-episodes",
        type=int,
        help="without --demos: record this many expert episodes into the run folder first",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the envs in Ray actors: a local Ray, or the cluster at ADDRESS",
    )
    p.add_argument("--envs-per-actor", type=int, help="environments per Ray actor (default: 4)")
    p.add_argument(
        "--target-success", type=float, help="stop once an evaluation reaches this success rate"
    )
    p.add_argument(
        "--max-wall-time", type=float, help="stop after this many seconds of training (total)"
    )
    p.add_argument(
        "--bc-epochs", type=int, help="behaviour cloning epochs on the demos before RL (0: none)"
    )


def _run_train(args: argparse.Namespace) -> int:
    from factoryfloor.policies import train as training
    from factoryfloor.policies.train_config import resolve_config

    overrides = {
        "timesteps": args.timesteps,
        "n_envs": args.n_envs,
        "seed": args.seed,
        "device": args.device,
        "out": args.out,
        "progress_bar": False if args.no_progress else None,
        "demos": args.demos,
        "demo_episodes": args.demo_episodes,
        "bc_epochs": args.bc_epochs,
        "ray": True if args.ray else None,
        "ray_address": None if args.ray in (None, "local") else args.ray,
        "envs_per_actor": args.envs_per_actor,
        "target_success": args.target_success,
        "max_wall_time_s": args.max_wall_time,
    }
    cfg = resolve_config(args.task, args.algo, args.config, overrides, resume=args.resume)
    run_dir = training.train(cfg, resume=args.resume)
    summary = training.run_summary(run_dir)
    last = summary["last_evaluation"] or {}
    print(
        f"run {run_dir}: {summary['num_timesteps']} env steps, "
        f"success rate {last.get('success_rate')} (best {summary['best_success_rate']})"
        + (f"; stopped: {summary['stopped_because']}" if summary.get("stopped_because") else "")
    )
    if summary["interrupted_by"]:
        print(f"stopped by {summary['interrupted_by']}; continue with: factoryfloor train "
              f"{cfg.task} --out {run_dir} --resume", file=sys.stderr)  # fmt: skip
        return 128 + int(getattr(signal.Signals, summary["interrupted_by"]))
    return 0


def _configure_demos(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    rec = sub.add_parser(
        "record", help="record scripted-expert episodes", description="record scripted-expert "
        "episodes (format: factoryfloor.policies.demos)",
    )  # fmt: skip
    rec.add_argument("task", metavar="TASK_ID", help="environment id, e.g. factoryfloor/Reach-v0")
    rec.add_argument("--episodes", type=int, required=True, help="episodes to write")
    rec.add_argument("--out", type=Path, required=True, help="folder to write (must be new)")
    rec.add_argument("--robot", default="panda", help="robot name (default: panda)")
    rec.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    rec.add_argument(
        "--keep-failures", action="store_true", help="keep failed episodes (default: skip them)"
    )


def _run_demos(args: argparse.Namespace) -> int:
    from factoryfloor.policies.demos import record_demos

    index = record_demos(
        args.task, args.episodes, args.out, args.robot, args.seed, not args.keep_failures
    )
    n_ok = sum(e["success"] for e in index["episodes"])
    print(
        f"wrote {len(index['episodes'])} episodes ({index['total_transitions']} transitions, "
        f"{n_ok} successful, {index['attempts']} attempts) to {args.out}"
    )
    return 0


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dir", metavar="RUN", type=Path, help="run folder written by factoryfloor train"
    )
    p.add_argument("--out", type=Path, required=True, help="bundle to write (NAME.ffpolicy)")
    p.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="checkpoint (default: best)"
    )


def _run_export(args: argparse.Namespace) -> int:
    from factoryfloor.policies.export import export_run

    if args.out.suffix != ".ffpolicy":
        raise ValueError(f"--out {args.out} must end with .ffpolicy")
    if not args.run_dir.is_dir():
        raise ValueError(
            f"no run folder at {args.run_dir}; pass the --out folder of factoryfloor train"
        )
    manifest = export_run(args.run_dir, args.out, args.checkpoint)
    check = manifest["export_check"]
    diffs = ", ".join(f"{k} {v:.3g}" for k, v in check["max_abs_diff"].items())
    print(
        f"wrote {args.out} ({manifest['bytes']} bytes): {manifest['task_id']}, "
        f"{manifest['metrics']['checkpoint']} checkpoint at {manifest['metrics']['num_timesteps']} "
        f"steps; parity on {check['observations']} observations: max abs diff {diffs} "
        f"(tolerance {check['tolerance']:g})"
    )
    return 0


def _configure_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK_ID", help="environment id, e.g. factoryfloor/Reach-v0")
    p.add_argument("--algo", help="sac, td3, tqc or ppo (default: the task's)")
    p.add_argument("--seeds", default="0-3", help="seeds of each config: 0-7 or 0,3,5")
    p.add_argument("--grid", type=Path, help="YAML: TrainConfig field -> list of values")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="Ray cluster")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep folder")
    p.add_argument("--timesteps", type=int, help="training budget of every trial")
    p.add_argument("--no-early-stop", action="store_true", help="run every trial to the end")


def _run_sweep(args: argparse.Namespace) -> int:
    import ray

    from factoryfloor.policies.sweep import format_summary, load_grid, parse_seeds, run_sweep

    if args.ray and args.ray != "local":
        ray.init(address=args.ray, include_dashboard=False, log_to_driver=False)
    fixed = {"timesteps": args.timesteps} if args.timesteps else {}
    summary = run_sweep(
        args.task, args.algo or "sac", parse_seeds(args.seeds), load_grid(args.grid), args.out,
        fixed, early_stop=not args.no_early_stop,
    )  # fmt: skip
    print(format_summary(summary))
    print(f"summary: {args.out / 'summary.json'}")
    return 0


COMMANDS: dict[str, tuple[str, Configure, Run]] = {
    "train": (
        "train a policy with stable-baselines3 (HER for the goal tasks); writes a run folder",
        _configure_train,
        _run_train,
    ),
    "eval": ("evaluate a policy on a task and report its success rate", _configure_eval, _run_eval),
    "export": (
        "export a training run to a one-file .ffpolicy bundle (ONNX + manifest), parity-checked",
        _configure_export,
        _run_export,
    ),
    "demos": (
        "record scripted-expert demonstrations (train --demos seeds the replay buffer with them)",
        _configure_demos,
        _run_demos,
    ),
    "demo": (
        "the whole stack: pretrained bundle served over the edge runtime to a real-time sim",
        _configure_demo,
        _run_demo,
    ),
    "sweep": (
        "train configs x seeds on Ray Tune, stop hopeless trials, summarise success per config",
        _configure_sweep,
        _run_sweep,
    ),
    "edge": (
        "edge runtime: serve a policy over ZeroMQ, run the simulated controller, make keys",
        configure_edge,
        run_edge,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of ``COMMANDS``."""
    parser = argparse.ArgumentParser(prog="factoryfloor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, configure, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``factoryfloor`` console script; returns the exit status."""
    from gymnasium.error import Error as GymError

    from factoryfloor.edge_runtime.protocol import EdgeError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:  # Ctrl-C: cleanup ran in the commands' finally blocks
        print(f"factoryfloor {args.command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # an optional dependency (an extra) is missing
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0], "train")
        print(
            f"factoryfloor {args.command}: error: {exc}; install the extra that provides it: "
            f"pip install 'factoryfloor[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except (ValueError, KeyError, GymError, EdgeError) as exc:  # one clear line, no traceback
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"factoryfloor {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
