"""README's commands chain: each parses with the real parser, and each path it reads exists in
the repository or was written by a command before it (the synopsis names only real options)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from factoryfloor.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> list[list[str]]:
    """The README's fenced blocks, as lists of lines."""
    return [b.splitlines() for b in re.findall(r"```[a-z]*\n(.*?)```", README.read_text(), re.S)]


def commands() -> list[str]:
    """Every ``factoryfloor ...`` command line of the README, in order, comments removed."""
    lines = [ln for block in blocks() for ln in block if ln.startswith("factoryfloor ")]
    return [ln.split("  #")[0].strip() for ln in lines if "[" not in ln]


def synopsis() -> list[str]:
    """The command-line synopsis (lines with ``[optional]`` parts)."""
    return [
        ln for block in blocks() for ln in block if ln.startswith("factoryfloor ") and "[" in ln
    ]


def inputs_and_outputs(args) -> tuple[list[str], list[str]]:
    """Paths a parsed command reads, and paths it writes."""
    reads = [args.policy] if getattr(args, "policy", None) not in (None, "expert") else []
    reads += [str(getattr(args, name)) for name in ("run_dir", "demos", "config")
              if getattr(args, name, None)]  # fmt: skip
    writes = [str(args.out)] if getattr(args, "out", None) else []
    if getattr(args, "resume", False):
        reads, writes = [*reads, str(args.out)], []
    return reads, writes


def test_every_readme_command_parses_and_reads_only_what_exists_or_was_written():
    found = commands()
    assert len(found) >= 10
    parser, written = build_parser(), set()
    for line in found:
        args = parser.parse_args(shlex.split(line)[1:])
        reads, writes = inputs_and_outputs(args)
        for path in reads:
            here = (README.parent / path).exists()
            assert here or path in written, f"{line!r} reads {path}, which nothing wrote before"
        written.update(writes)


@pytest.mark.parametrize("line", synopsis(), ids=lambda ln: " ".join(ln.split()[:3]))
def test_the_synopsis_names_real_options(line):
    words = line.split()
    command = [w for w in words[1:3] if re.fullmatch(r"[a-z-]+", w)]
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    if len(command) > 1 and sub._subparsers is not None:
        sub = sub._subparsers._group_actions[0].choices[command[1]]
    known = {s for action in sub._actions for s in action.option_strings}
    named = set(re.findall(r"(--[a-z][a-z0-9-]*)", line))
    assert named <= known, f"{command}: {sorted(named - known)} are not options"
