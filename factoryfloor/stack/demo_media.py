"""The demo's media: the cell video (re-simulated from the commands applied), and PNG charts.

Rendering a camera frame costs tens of milliseconds, more than a control period allows, so the
real-time run only records the commands it applied; ``write_replay_video`` then re-simulates
those episodes (the simulation is deterministic: same seed and commands, same trajectory) and
renders every step with an overlay (episode, outcome, the round trip of that step's action).
The charts are drawn with OpenCV, so the demo needs no plotting library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from factoryfloor.policies.video import VideoWriter

# RGB colours (reversed to BGR where OpenCV writes a PNG)
WHITE, GREY = (255, 255, 255), (90, 90, 90)
GREEN, RED, BLUE = (40, 170, 60), (210, 50, 40), (40, 90, 200)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay(frame: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """``frame`` (RGB) with text lines on a dark band at the top."""
    out = frame.copy()
    band = 18 * len(lines) + 8
    out[:band] = (out[:band] * 0.35).astype(np.uint8)
    for i, (text, color) in enumerate(lines):
        cv2.putText(out, text, (8, 18 + 18 * i), FONT, 0.5, color, 1, cv2.LINE_AA)
    return out


def write_replay_video(
    task_id: str,
    robot: str,
    episodes: list[dict[str, Any]],
    path: Path,
    fps: float,
    step_latency_ms: list[list[float | None]] | None = None,
) -> int:
    """Re-simulate ``episodes`` (``seed``, ``commands``, ``success``) and write an MP4.

    Args:
        task_id: Gymnasium id of the task.
        robot: Robot name.
        episodes: Episode records of ``SimController.results``.
        path: Output ``.mp4``.
        fps: Frames per second (the control rate plays it in real time).
        step_latency_ms: Per episode and step, the round trip of the applied action (ms), or
            None where the step held or braked.

    Returns:
        Frames written.
    """
    env = gym.make(task_id, robot=robot, render_mode="rgb_array")
    try:
        with VideoWriter(path, fps) as video:
            for i, episode in enumerate(episodes):
                env.reset(seed=int(episode["seed"]))
                latencies = step_latency_ms[i] if step_latency_ms else []
                done = len(episodes)
                for t, command in enumerate(episode["commands"]):
                    env.step(command)
                    frame = env.render()
                    assert frame is not None
                    ms = latencies[t] if t < len(latencies) else None
                    video.write(overlay(frame, _lines(i, done, t, episode, ms)))
            return video.frames
    finally:
        env.close()


def _lines(
    index: int, total: int, step: int, episode: dict[str, Any], latency_ms: float | None
) -> list[tuple[str, tuple[int, int, int]]]:
    last = step == len(episode["commands"]) - 1
    outcome = ("success" if episode["success"] else "failed") if last else "running"
    color = (GREEN if episode["success"] else RED) if last else WHITE
    rtt = f"{latency_ms:.2f} ms" if latency_ms is not None else "held"
    return [
        (f"episode {index + 1}/{total}  step {step + 1}  {outcome}", color),
        (f"policy round trip {rtt} (edge runtime, loopback)", WHITE),
    ]


def _axes(width: int, height: int, title: str) -> np.ndarray:
    img = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(img, title, (50, 24), FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.line(img, (50, height - 40), (width - 20, height - 40), GREY, 1)
    cv2.line(img, (50, 40), (50, height - 40), GREY, 1)
    return img


def latency_histogram_png(samples_ms: list[float], path: Path, bins: int = 30) -> None:
    """A histogram of round-trip latencies (ms) with p50/p99 marked, as a PNG."""
    width, height = 640, 360
    img = _axes(width, height, f"policy round trip over loopback ({len(samples_ms)} actions)")
    if samples_ms:
        data = np.asarray(samples_ms)
        top = float(np.percentile(data, 99.9)) * 1.1 or 1.0
        counts, _ = np.histogram(np.clip(data, 0, top), bins=bins, range=(0, top))
        plot_w, plot_h = width - 80, height - 90
        for i, count in enumerate(counts):
            x0 = 51 + int(i * plot_w / bins)
            x1 = 51 + int((i + 1) * plot_w / bins) - 2
            y = height - 41 - int(count / max(1, counts.max()) * plot_h)
            cv2.rectangle(img, (x0, y), (x1, height - 41), BLUE[::-1], -1)
        for q, color in ((50, GREEN), (99, RED)):
            v = float(np.percentile(data, q))
            x = 51 + int(v / top * plot_w)
            cv2.line(img, (x, 40), (x, height - 40), color[::-1], 1)
            label_y = 56 + (q == 99) * 18  # legend at the top right, clear of the bars
            cv2.putText(img, f"p{q} {v:.2f} ms", (width - 150, label_y), FONT, 0.45,
                        color[::-1], 1, cv2.LINE_AA)  # fmt: skip
        for frac in (0.0, 0.5, 1.0):
            x = 51 + int(frac * plot_w)
            cv2.putText(img, f"{frac * top:.2f}", (x - 12, height - 22), FONT, 0.4, GREY, 1)
    cv2.putText(img, "ms", (width - 40, height - 8), FONT, 0.45, GREY, 1)
    _write_png(img, path)


def success_png(successes: list[bool], path: Path) -> None:
    """One bar per episode: green for a success, red for a failure, as a PNG."""
    width, height = 640, 240
    rate = 100 * sum(successes) / max(1, len(successes))
    title = f"success per episode: {sum(successes)}/{len(successes)} ({rate:.0f}%)"
    img = _axes(width, height, title)
    n = max(1, len(successes))
    plot_w = width - 80
    for i, ok in enumerate(successes):
        x0 = 51 + int(i * plot_w / n)
        x1 = 51 + int((i + 1) * plot_w / n) - 2
        y = 60 if ok else height - 90
        cv2.rectangle(img, (x0, y), (x1, height - 41), (GREEN if ok else RED)[::-1], -1)
    cv2.putText(img, "episode", (width - 90, height - 8), FONT, 0.45, GREY, 1)
    _write_png(img, path)


def _write_png(img_rgb: np.ndarray, path: Path) -> None:
    """Write atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    if not cv2.imwrite(str(tmp), img_rgb):
        raise OSError(f"OpenCV could not write {path}")
    tmp.replace(path)
