"""``factoryfloor demos record``: scripted-expert demonstrations."""

from __future__ import annotations

import argparse
from pathlib import Path

from factoryfloor.cli._args import add_robot, add_task, count


def configure(p: argparse.ArgumentParser) -> None:
    """The ``record`` action and its arguments."""
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    text = "record scripted-expert episodes (format: factoryfloor.policies.demos)"
    rec = sub.add_parser("record", help=text, description=text, formatter_class=p.formatter_class)
    add_task(rec)
    rec.add_argument("--episodes", type=count(1), required=True, help="episodes to write")
    rec.add_argument("--out", type=Path, required=True, help="folder to write (must be new)")
    add_robot(rec)
    rec.add_argument("--seed", type=count(0), default=0, help="seed of the first episode")
    rec.add_argument("--keep-failures", action="store_true", help="keep failed episodes too")


def run(args: argparse.Namespace) -> int:
    """Record and print what was written."""
    from factoryfloor.policies.demos import record_demos

    index = record_demos(
        args.task, args.episodes, args.out, args.robot, args.seed, not args.keep_failures
    )
    n_ok = sum(e["success"] for e in index["episodes"])
    print(
        f"wrote {len(index['episodes'])} episodes ({index['total_transitions']:,} transitions, "
        f"{n_ok} successful, {index['attempts']} attempts) to {args.out}"
    )
    return 0
