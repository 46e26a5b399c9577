"""``factoryfloor demo``: the whole stack on one machine (``make demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from factoryfloor.cli._args import add_robot, add_task, count


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``demo``."""
    add_task(p, option=True, default="factoryfloor/PickPlace-v0")
    add_robot(p)
    p.add_argument("--policy", help="a .ffpolicy bundle or expert (default: the shipped bundle)")
    p.add_argument("--episodes", type=count(1), default=20, help="episodes to run")
    p.add_argument("--seed", type=count(0), default=5_000_000, help="seed of the first episode")
    p.add_argument("--video-episodes", type=count(0), default=3, help="episodes in the MP4")
    p.add_argument("--gui", action="store_true", help="open pybullet's window (needs a display)")
    p.add_argument("--view", action="store_true", help="serve a live view on localhost")
    p.add_argument("--view-port", type=count(0), default=8765, help="live view port (0: any)")
    p.add_argument(
        "--view-linger", type=float, default=30.0,
        help="with --view: keep the live view up this long after the run (s)",
    )  # fmt: skip
    p.add_argument("--min-success", type=float, default=0.9, help="fail below this success rate")
    p.add_argument(
        "--hold-window-ms", type=float, default=20.0, help="the safety layer's hold window (ms)"
    )
    p.add_argument(
        "--max-rearms", type=count(0), default=3,
        help="faults after which the demo re-arms, as an operator would (one more stops it)",
    )  # fmt: skip
    p.add_argument(
        "--rt-priority", type=int,
        help="run the control loop and the server under SCHED_FIFO at this priority (1-99)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")


def run(args: argparse.Namespace) -> int:
    """Run the demo; its exit status."""
    from factoryfloor.stack.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            task=args.task, robot=args.robot, policy=args.policy, episodes=args.episodes,
            seed=args.seed, video_episodes=args.video_episodes, gui=args.gui, view=args.view,
            view_port=args.view_port, view_linger_s=args.view_linger, out=args.out,
            min_success=args.min_success, hold_window_s=args.hold_window_ms / 1e3,
            max_rearms=args.max_rearms, rt_priority=args.rt_priority,
        )
    )  # fmt: skip
