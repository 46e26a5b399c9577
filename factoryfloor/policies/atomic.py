"""Atomic file writes (temporary sibling file, flushed, then ``os.replace``d), without torch.

A crash at any moment leaves either the old file or the new one, never half of one.
``checkpoint`` re-exports these for its writers; the demo, the demonstrations recorder, the
sweep and the benchmarks use them directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` with ``write(tmp_path)``, flush it to disk, then move it into place."""
    tmp = _tmp(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_stream(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Like ``atomic_write`` for writers that take an open binary file (e.g. ``np.savez``)."""

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write(path, to_file)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON (values JSON cannot hold become strings)."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
