"""``VideoWriter``: browser-playable MP4 (H.264, yuv420p) written atomically with PyAV."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from factoryfloor.policies.video import VideoWriter, even_size, frame_rate


def _frames(n: int, height: int, width: int) -> list[np.ndarray]:
    """Frames whose red level steps up by 20 per frame; green and blue stay 0."""
    frames = []
    for i in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = 20 * i
        frames.append(frame)
    return frames


def _read(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "rate": stream.average_rate,
            "size": (stream.width, stream.height),
            "format": container.format.name,
        }
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return info, decoded


def test_non_integer_fps_round_trips_as_h264_yuv420p(tmp_path):
    path = tmp_path / "clip.mp4"
    fps = 1 / 0.03  # a control period of 30 ms: 33.33... frames/s
    with VideoWriter(path, fps) as video:
        for frame in _frames(10, 36, 48):
            video.write(frame)
    assert video.frames == 10 and video.rate == Fraction(100, 3)
    info, decoded = _read(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert "mp4" in info["format"] and info["rate"] == Fraction(100, 3)
    assert len(decoded) == 10 and decoded[0].shape == (36, 48, 3)
    red = [float(f[..., 0].mean()) for f in decoded]
    assert red == pytest.approx([20 * i for i in range(10)], abs=4)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary file left


def test_odd_frame_sizes_are_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, 25.0) as video:
        for frame in _frames(3, 35, 51):
            video.write(frame)
    info, decoded = _read(path)
    assert info["size"] == (52, 36) == even_size(51, 35)
    assert info["rate"] == 25 and len(decoded) == 3


def test_an_error_leaves_no_file(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), VideoWriter(path, 25.0) as video:
        video.write(_frames(1, 16, 16)[0])
        raise RuntimeError("crash mid-recording")
    assert not list(tmp_path.iterdir())


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.mp4"):
        VideoWriter(tmp_path / "clip.avi", 25.0)
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "clip.mp4", 0.0)
    with pytest.raises(ValueError, match="differs"), VideoWriter(tmp_path / "c.mp4", 25) as video:
        video.write(_frames(1, 16, 16)[0])
        video.write(_frames(1, 16, 18)[0])
    with pytest.raises(ValueError, match="uint8"), VideoWriter(tmp_path / "d.mp4", 25) as video:
        video.write(np.zeros((16, 16, 3), np.float32))
    assert not list(tmp_path.iterdir())


def test_frame_rate_is_exact():
    assert frame_rate(25.0) == 25
    assert frame_rate(1 / 0.04) == 25
    assert frame_rate(30000 / 1001) == Fraction(30000, 1001)
    assert frame_rate(Fraction(50, 3)) == Fraction(50, 3)
