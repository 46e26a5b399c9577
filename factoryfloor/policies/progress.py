"""Progress for work longer than a few seconds: a rich bar on a terminal, lines elsewhere.

On a TTY, ``Progress`` draws a rich progress bar (on stderr, so stdout stays the command's
answer); when stderr is not a terminal (CI logs, pipes) it prints one line every
``every_s`` seconds and one at the end, so a long step is never silent.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO


class Progress:
    """Progress of ``total`` units of work.

    Args:
        label: What is being done, e.g. ``"recording expert demonstrations"``.
        total: Units of work (episodes, epochs, trials).
        unit: Name of a unit, e.g. ``"episodes"``.
        every_s: Seconds between lines when not on a terminal (s).
        stream: Where to write (default: stderr).
        enabled: False turns it off (e.g. ``--no-progress``).
    """

    def __init__(
        self, label: str, total: int, unit: str, every_s: float = 10.0,
        stream: TextIO | None = None, enabled: bool = True,
    ) -> None:  # fmt: skip
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self.note = ""
        self._start = self._last = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """A copy for pickling (e.g. Ray Tune's experiment state) has no stream or bar."""
        return {k: v for k, v in vars(self).items() if k not in ("stream", "_bar", "_task")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, stream=sys.stderr, _bar=None, _task=None)

    def __enter__(self) -> Progress:
        if self.enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1, note: str = "") -> None:
        """``n`` more units done; ``note`` (e.g. a loss) is shown beside the count."""
        self.done += n
        self.note = note or self.note
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=self._text())
        elif time.monotonic() - self._last >= self.every_s:
            self._line()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled and kind is None:
            self._line()

    def _text(self) -> str:
        return f"{self.label}{f' ({self.note})' if self.note else ''}"

    def _line(self) -> None:
        self._last = time.monotonic()
        elapsed = self._last - self._start
        print(
            f"{self._text()}: {self.done}/{self.total} {self.unit}, {elapsed:.0f} s",
            file=self.stream, flush=True,
        )  # fmt: skip
