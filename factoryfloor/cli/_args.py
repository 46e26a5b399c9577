"""Argument types and options shared by the command groups (each refusal is one clear line)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}; give {minimum} or more")
        return value

    return parse


def key_id(text: str) -> str:
    """A publisher key id: 16 lowercase hex digits (``factoryfloor bundle verify`` prints it)."""
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a key id (16 hex digits, e.g. 85c1a877a48b64fd)"
        )
    return text


def task_id(text: str) -> str:
    """An argparse type: a registered factoryfloor env id."""
    from factoryfloor.sim.registry import ENV_IDS

    if text not in ENV_IDS:
        raise argparse.ArgumentTypeError(
            f"unknown task {text!r}; choose one of {', '.join(ENV_IDS)}"
        )
    return text


def robot_name(text: str) -> str:
    """An argparse type: a robot of ``factoryfloor.robots``."""
    from factoryfloor.robots import robot_names

    if text not in robot_names():
        raise argparse.ArgumentTypeError(
            f"unknown robot {text!r}; choose one of {', '.join(robot_names())}"
        )
    return text


def add_task(p: argparse.ArgumentParser, option: bool = False, default: str | None = None) -> None:
    """The task: positional ``TASK``, or ``--task`` when ``option``."""
    help_text = "environment id, e.g. factoryfloor/PickPlace-v0"
    if option:
        p.add_argument("--task", type=task_id, default=default, metavar="TASK", help=help_text)
    else:
        p.add_argument("task", type=task_id, metavar="TASK", help=help_text)


def add_robot(p: argparse.ArgumentParser, help_text: str = "robot name: panda or xarm6") -> None:
    """``--robot NAME``."""
    p.add_argument("--robot", type=robot_name, default="panda", help=help_text)


def add_ray(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--ray [ADDRESS]``: a local Ray without an address."""
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help=help_text)
