"""The kit's report: a table on the terminal (rich on a TTY, plain lines otherwise) and JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from factoryfloor.edge_runtime.atomic import atomic_write_bytes
from factoryfloor.edge_runtime.conformance.kit import FAILED, PASSED, PROTOCOL, SKIPPED, CheckResult

STYLES = {PASSED: "green", FAILED: "bold red", SKIPPED: "yellow"}


def report_json(endpoint: str, results: Sequence[CheckResult]) -> dict[str, Any]:
    """The JSON report: endpoint, protocol, every check, and the counts."""
    return {
        "endpoint": endpoint,
        "protocol": PROTOCOL,
        "checks": [
            {
                "name": r.name,
                "section": r.section,
                "status": r.status,
                "detail": r.detail,
                "seconds": r.seconds,
            }
            for r in results
        ],
        **{
            status: sum(r.status == status for r in results) for status in (PASSED, FAILED, SKIPPED)
        },
    }


def write_json(path: Path, endpoint: str, results: Sequence[CheckResult]) -> None:
    """Write ``report_json`` to ``path`` (UTF-8, indented), atomically."""
    text = json.dumps(report_json(endpoint, results), indent=2) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def summary(results: Sequence[CheckResult]) -> str:
    """``N passed, N failed, N skipped``."""
    counts = {s: sum(r.status == s for r in results) for s in (PASSED, FAILED, SKIPPED)}
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def result_line(result: CheckResult) -> str:
    """One plain line of a result."""
    detail = f"  {result.detail}" if result.detail else ""
    return f"{result.status.upper():7} {result.name} ({result.section}){detail}"


def write_table(title: str, results: Sequence[CheckResult], stream: TextIO | None = None) -> None:
    """The results as a table: rich when ``stream`` is a terminal, else one line per check."""
    out = stream or sys.stdout
    if not out.isatty():
        for result in results:
            print(result_line(result), file=out)
        print(f"{title}: {summary(results)}", file=out)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("check", "section", "result", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(r.name, r.section, f"[{STYLES[r.status]}]{r.status}[/]", r.detail)
    console = Console(file=out)
    console.print(table)
    console.print(summary(results))
