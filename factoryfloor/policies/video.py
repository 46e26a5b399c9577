"""MP4 writing with OpenCV, atomic: frames go to a temporary file renamed on close."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np


class VideoWriter:
    """Write RGB frames to an MP4 file (``mp4v`` codec), as a context manager.

    The file appears at ``path`` only when the writer closes without an exception, so a crash
    never leaves half a video behind.

    Args:
        path: Output ``.mp4`` path.
        fps: Frames per second.
    """

    def __init__(self, path: Path, fps: float) -> None:
        if path.suffix.lower() != ".mp4":
            raise ValueError(f"video path must end in .mp4, got {path.name!r}")
        self.path, self.fps = path, fps
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of shape (height, width, 3)."""
        if self._writer is None:
            self._open(frame.shape[1], frame.shape[0])
        assert self._writer is not None
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".mp4")
        os.close(fd)
        self._tmp = Path(tmp)
        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (width, height))
        if not self._writer.isOpened():
            raise RuntimeError(f"OpenCV could not open an MP4 writer for {self.path}")

    def close(self, keep: bool = True) -> None:
        """Finish the file; with ``keep`` False (an error happened) discard it."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None:
            if keep and self.frames:
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
            else:
                self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(keep=exc_type is None)
