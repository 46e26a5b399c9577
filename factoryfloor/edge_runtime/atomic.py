"""Atomic writes for the edge runtime (which cannot import ``policies``): temp file + rename.

The temporary sibling is created with its final mode (a secret key is never readable by
others, not even for a moment), flushed to disk, then ``os.replace``d over the target, so that
a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically, the file having permission bits ``mode``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask may have cleared bits of mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
