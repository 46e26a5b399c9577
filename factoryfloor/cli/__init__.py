"""The ``factoryfloor`` command line: thin wrappers over library functions.

One module per command group; ``COMMANDS`` (below) is the registry: name -> (description,
configure the parser, run). Every refusal is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn

import factoryfloor
from factoryfloor.cli import bundle, demo, demos, edge, evaluate, export, robustness, train

# top-level module -> the extra of pyproject.toml that installs it
EXTRA_OF_MODULE = {
    "ray": "ray",
    "pybullet": "sim",
    "cv2": "sim",
    "av": "sim",
    "zmq": "edge",
    "onnxruntime": "edge",
    "torch": "train",
    "cryptography": "edge",
    "jsonschema": "edge",
    "stable_baselines3": "train",
    "sb3_contrib": "train",
    "yaml": "train",
    "matplotlib": "train",
}
EXIT_USAGE = 2


class Command(NamedTuple):
    """One subcommand: its description line, its arguments, and what it runs."""

    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "train": Command(
        "train a policy with stable-baselines3 (HER for the goal tasks); writes a run folder",
        train.configure_train, train.run_train,
    ),
    "eval": Command(
        "evaluate a policy on a task and report its success rate",
        evaluate.configure, evaluate.run,
    ),
    "robustness": Command(
        "a bundle's success over a grid of perturbations (physics, sensors, latency, losses)",
        robustness.configure, robustness.run,
    ),
    "export": Command(
        "export a training run to a one-file .ffpolicy bundle (ONNX + manifest), parity-checked",
        export.configure, export.run,
    ),
    "bundle": Command(
        "publisher keys, signing and verifying of .ffpolicy bundles (Ed25519)",
        bundle.configure, bundle.run,
    ),
    "demos": Command(
        "record scripted-expert demonstrations (train --demos seeds the replay buffer with them)",
        demos.configure, demos.run,
    ),
    "demo": Command(
        "the whole stack: a pretrained bundle served over the edge runtime to a real-time cell",
        demo.configure, demo.run,
    ),
    "sweep": Command(
        "train configs x seeds on Ray Tune, stop hopeless trials, summarise success per config",
        train.configure_sweep, train.run_sweep,
    ),
    "edge": Command(
        "edge runtime: serve a policy over ZeroMQ, run the simulated cell, make CURVE keys",
        edge.configure, edge.run,
    ),
}  # fmt: skip


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, stating each option's default where it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False
        unset = unset or action.default == argparse.SUPPRESS
        if unset or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: {action.default})"


class Parser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line: what is wrong, and where to look."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE; see PROG --help`` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of ``COMMANDS``."""
    parser = Parser(
        prog="factoryfloor", description=__doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {factoryfloor.__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name, help=command.description, description=command.description,
            formatter_class=HelpFormatter,
        )  # fmt: skip
        command.configure(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``factoryfloor`` console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a refusal already printed
        return int(exc.code or 0)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:  # Ctrl-C: cleanup ran in the commands' finally blocks
        print(f"factoryfloor {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the outermost boundary: known failures become one line
        message = refusal(exc)
        if message is None:
            raise
        where = " ".join(
            filter(
                None,
                (
                    args.command,
                    getattr(args, "edge_command", None) or getattr(args, "bundle_command", None),
                ),
            )
        )
        print(f"factoryfloor {where}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


def refusal(exc: BaseException) -> str | None:
    """The one-line message of a failure the user can fix, or None for a bug (re-raised)."""
    from gymnasium.error import Error as GymError

    from factoryfloor.edge_runtime.protocol import EdgeError

    if isinstance(exc, ModuleNotFoundError):  # an optional dependency (an extra) is missing
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0], "train")
        return f"{exc}; install the extra that provides it: pip install 'factoryfloor[{extra}]'"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, ValueError | KeyError | GymError | EdgeError | FileNotFoundError):
        return str(exc)
    return None
