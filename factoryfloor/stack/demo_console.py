"""The demo's terminal: a rich progress bar and summary table (plain lines without rich)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from factoryfloor.edge_runtime.controller import RuntimeReport


class Console:
    """Progress and summary of ``factoryfloor demo``.

    The bar is redrawn from the control loop's own progress callback (``auto_refresh`` off):
    rich's refresh thread would compete with the loop for the GIL, and a thread holding the GIL
    while the OS runs something else stalls the loop (seen: 40-80 ms under load). Without a
    terminal, one line per finished episode replaces the bar.
    """

    def __init__(self) -> None:
        try:
            from rich.console import Console as RichConsole
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        except ImportError:
            self.rich: Any = None
        else:
            self.rich = RichConsole()
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), console=self.rich, transient=False,
                auto_refresh=False,
            )  # fmt: skip
        self.live = self.rich is not None and self.rich.is_terminal
        self._task: Any = None
        self._last_episodes = -1

    def note(self, text: str) -> None:
        """One line of information."""
        if self.rich is not None:
            self.rich.print(f"[cyan]{text}[/cyan]")
        else:
            print(text, flush=True)

    def start(self, options: Any, welcome: dict[str, Any], endpoint: str, url: str | None) -> None:
        """The header, then the progress bar."""
        self.note(
            f"{options.task} ({options.robot}): serving {welcome['model_sha256'][:12]}... on "
            f"{endpoint}, {welcome['control_rate_hz']:g} Hz, {options.episodes} episodes in "
            "real time"
        )
        if self.live:
            self._progress.start()
            self._task = self._progress.add_task("episodes", total=options.episodes, stats="")

    def progress(self, report: RuntimeReport) -> None:
        """Update from a runtime report."""
        info = report.controller
        rtt = report.client["latency_us"].get("round_trip", {})
        stats = (
            f"success {info.get('successes', 0)}/{info.get('episodes', 0)}  "
            f"rtt p50 {rtt.get('p50', 0) / 1e3:.2f} ms p99 {rtt.get('p99', 0) / 1e3:.2f} ms  "
            f"misses {report.loop['missed']}  {report.state}"
        )
        if self.live and self._task is not None:
            self._progress.update(self._task, completed=info.get("episodes", 0), stats=stats)
            self._progress.refresh()
        elif info.get("episodes", 0) != self._last_episodes:
            self._last_episodes = info.get("episodes", 0)
            print(f"episodes {self._last_episodes}: {stats}", flush=True)

    @contextlib.contextmanager
    def status(self, text: str) -> Iterator[None]:
        """A spinner (or a line) while something slow runs."""
        if self.rich is not None and self._task is not None:
            self._progress.stop()
        if self.rich is not None:
            with self.rich.status(text):
                yield
        else:
            print(f"{text} ...", flush=True)
            yield

    def summary(self, metrics: dict[str, Any]) -> None:
        """The final table."""
        rtt = metrics["round_trip_ms"]
        loop = metrics["loop"]
        rows = [
            ("success rate", f"{metrics['success_rate']:.0%} ({metrics['successes']}/"
                             f"{metrics['episodes']}; needs {metrics['successes_needed']})"),
            ("round trip p50 / p99", f"{rtt.get('p50', 0):.2f} / {rtt.get('p99', 0):.2f} ms"),
            ("deadline misses", f"{loop['missed']} of {loop['cycles']} cycles"),
            ("held cycles", str(metrics["safety"]["held"])),
            ("faults", _faults(metrics)),
            ("policy server", "ok" if metrics["server_ok"] else "FAILED"),
            ("video", f"{metrics['video']['path']} ({metrics['video']['frames']} frames)"),
            ("result", "PASSED" if metrics["passed"] else "FAILED"),
        ]  # fmt: skip
        if self.rich is None:
            for name, value in rows:
                print(f"{name:>22}: {value}")
            return
        from rich.table import Table

        table = Table(title="factoryfloor demo", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for name, value in rows:
            style = "green" if metrics["passed"] else "red"
            table.add_row(name, f"[{style}]{value}[/{style}]" if name == "result" else value)
        self.rich.print(table)


def _faults(metrics: dict[str, Any]) -> str:
    """``0``, or the count, the re-arms and each fault's explanation."""
    details = metrics["fault_details"]
    if not details:
        return "0"
    lines = [f"{len(details)} (re-armed {metrics['rearms']} times, as an operator would)"]
    lines += [f"{i}. episode {d['episode'] + 1}: {d['explanation']}" for i, d in
              enumerate(details, 1)]  # fmt: skip
    return "\n".join(lines)
