"""MP4 writing with PyAV (H.264, yuv420p), atomic: frames go to a temporary file renamed on close.

H.264 in yuv420p inside an MP4 container (with the index at the front, ``+faststart``) is what
every browser plays. PyAV ships its own FFmpeg with libx264, so no system FFmpeg is needed.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np

CODEC = "h264"
PIX_FMT = "yuv420p"
CRF = 20  # x264 constant rate factor: lower is better quality; 18-23 looks clean at 480x360


def frame_rate(fps: float | Fraction) -> Fraction:
    """``fps`` as an exact fraction, e.g. 33.333... -> 100/3 and 29.97 -> 2997/100.

    Args:
        fps: Frames per second (> 0), possibly non-integer (1 / control_dt).

    Raises:
        ValueError: For a rate that is not positive and finite.
    """
    if not np.isfinite(float(fps)) or float(fps) <= 0:
        raise ValueError(f"fps must be positive and finite, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def even_size(width: int, height: int) -> tuple[int, int]:
    """The frame size rounded up to even numbers (pixels), as yuv420p needs."""
    return width + width % 2, height + height % 2


class VideoWriter:
    """Write RGB frames to a browser-playable MP4 file (H.264, yuv420p), as a context manager.

    The file appears at ``path`` only when the writer closes without an exception, so a crash
    never leaves half a video behind. Frames of odd width or height are padded by one pixel
    (edge colour) to an even size.

    Args:
        path: Output ``.mp4`` path.
        fps: Frames per second; a float such as ``1 / control_dt`` is kept exact as a fraction.

    Attributes:
        frames: Frames written so far.
        rate: The frame rate in the file (frames/s, exact).
    """

    def __init__(self, path: Path, fps: float | Fraction) -> None:
        if path.suffix.lower() != ".mp4":
            raise ValueError(f"video path must end in .mp4, got {path.name!r}")
        self.path, self.fps = path, fps
        self.rate = frame_rate(fps)
        self._container: Any = None
        self._stream: Any = None
        self._shape: tuple[int, int] | None = None
        self._tmp: Path | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of shape (height, width, 3); all frames share one size.

        Raises:
            ValueError: For a frame of another dtype, layout or size than the first one.
        """
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if self._shape is None:
            self._open(frame.shape[1], frame.shape[0])
        if frame.shape[:2] != self._shape:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first {self._shape}")
        width, height = self._stream.width, self._stream.height
        padded = np.pad(
            frame, ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0)), "edge"
        )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")
        video_frame.pts = self.frames
        video_frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(video_frame))
        self.frames += 1

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".mp4"
        )
        os.close(fd)
        self._tmp, self._shape = Path(tmp), (height, width)
        self._container = av.open(
            str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        stream = self._container.add_stream(CODEC, rate=self.rate)
        stream.width, stream.height = even_size(width, height)
        stream.pix_fmt = PIX_FMT
        stream.time_base = 1 / self.rate
        stream.options = {"crf": str(CRF)}
        self._stream = stream

    def close(self, keep: bool = True) -> None:
        """Finish the file; with ``keep`` False (an error happened) discard it."""
        if self._container is not None:
            try:
                if keep and self.frames:
                    self._container.mux(self._stream.encode(None))  # flush the encoder
            finally:
                self._container.close()
                self._container = self._stream = None
        if self._tmp is not None:
            if keep and self.frames:
                with open(self._tmp, "rb+") as f:
                    os.fsync(f.fileno())
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
