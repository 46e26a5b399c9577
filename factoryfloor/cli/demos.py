"""``factoryfloor demos record``: scripted-expert demonstrations as a Minari dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from factoryfloor.cli._args import add_robot, add_task, count


def configure(p: argparse.ArgumentParser) -> None:
    """The ``record`` action and its arguments."""
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    text = (
        "record scripted-expert episodes as a Minari dataset (format: factoryfloor.policies.demos)"
    )
    rec = sub.add_parser("record", help=text, description=text, formatter_class=p.formatter_class)
    add_task(rec)
    rec.add_argument("--episodes", type=count(1), required=True, help="episodes to write")
    rec.add_argument(
        "--out", type=Path,
        help="Minari datasets root to write under (default: MINARI_DATASETS_PATH or "
        "~/.minari/datasets)",
    )  # fmt: skip
    rec.add_argument(
        "--dataset-id",
        help="Minari dataset id (default: factoryfloor/<task>-<robot>-<obs>-v0)",
    )
    rec.add_argument(
        "--obs", choices=("state", "camera"), default="state",
        help="observation mode of the env (camera: real-cell state and two 84x84 images)",
    )  # fmt: skip
    add_robot(rec)
    rec.add_argument("--seed", type=count(0), default=0, help="seed of the first episode")
    rec.add_argument("--keep-failures", action="store_true", help="keep failed episodes too")
    rec.add_argument(
        "--action-noise", type=_noise, default=0.0, metavar="STD",
        help="std of Gaussian noise on the expert's motion commands, in normalised action units "
        "(DART: the episodes show it correcting; default 0)",
    )  # fmt: skip


def _noise(text: str) -> float:
    """A noise std in [0, 1] (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # (NaN fails too)
        raise argparse.ArgumentTypeError(f"{text!r} is not a noise std in [0, 1], e.g. 0.2")
    return value


def run(args: argparse.Namespace) -> int:
    """Record and print what was written."""
    from factoryfloor.policies.demos import dataset_folder, record_demos

    index = record_demos(
        args.task, args.episodes, args.out, args.robot, args.seed, not args.keep_failures,
        obs_mode=args.obs, dataset_id=args.dataset_id, action_noise=args.action_noise,
    )  # fmt: skip
    n_ok = sum(e["success"] for e in index["episodes"])
    print(
        f"wrote {len(index['episodes'])} episodes ({index['total_transitions']:,} transitions, "
        f"{n_ok} successful, {index['attempts']} attempts) as Minari dataset "
        f"{index['dataset_id']} in {dataset_folder(index['dataset_id'], args.out).parent}"
    )
    return 0
