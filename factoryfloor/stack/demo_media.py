"""The demo's media: the cell video (re-simulated from the commands applied), and PNG charts.

Rendering a camera frame costs tens of milliseconds, more than a control period allows, so the
real-time run only records the commands it applied; ``write_replay_video`` then re-simulates
those episodes (the simulation is deterministic: same seed and commands, same trajectory) and
renders every step from a wide view of the whole cell (``DEMO_VIEW``; the env's own camera,
which observations and tests use, is left as it is). The text (episode, outcome, the round trip
of that step's action) sits in a band above the camera image, never over the arm, and the last
frame of each episode, with its outcome, is held for ``HOLD_S`` seconds.

The charts are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display) and
written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from factoryfloor.policies.atomic import atomic_write
from factoryfloor.policies.video import VideoWriter
from factoryfloor.sim.camera import Camera, CameraConfig

# RGB colours of the video overlay
WHITE, GREEN, RED = (255, 255, 255), (60, 200, 80), (235, 70, 60)
BAND_RGB = (30, 30, 30)
FONT = cv2.FONT_HERSHEY_SIMPLEX
LINE_PX = 22  # height of one overlay line (pixels)
BAND_PX = 2 * LINE_PX + 12  # the text band above the camera image (pixels, even)
HOLD_S = 1.0  # how long the last frame of an episode, with its outcome, stays on screen (s)
VIDEO_SIZE = (480, 360)  # camera image (width, height) in pixels, both even
POLICY_VIEW_KEYS = ("image", "wrist_image")  # camera-mode images shown beside the cell view

# A wide view from the front right: the whole table, the bin (or belt) and the arm at full
# reach fit in the frame, with room above the arm.
DEMO_VIEW = CameraConfig(
    eye_m=(1.9, 0.55, 1.35), target_m=(0.3, 0.0, 0.18), fov_deg=50.0, far_m=5.0
)

# matplotlib colours of the charts
CHART_BLUE, CHART_GREEN, CHART_RED = "#3a66c4", "#2e9e4a", "#d1422f"
CHART_DPI = 100
LATENCY_FIGSIZE_IN = (8.0, 4.5)  # 800 x 450 pixels at CHART_DPI
SUCCESS_FIGSIZE_IN = (8.0, 3.6)  # 800 x 360 pixels at CHART_DPI


def overlay(frame: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """``frame`` (RGB, H x W) below a dark text band: the result is (H + BAND_PX) x W.

    Args:
        frame: Camera image, uint8 of shape (height, width, 3).
        lines: Text lines and their RGB colours, top to bottom (two fit).

    Returns:
        A new uint8 frame; the camera pixels are unchanged, nothing is drawn over them.
    """
    band = np.empty((BAND_PX, frame.shape[1], 3), np.uint8)
    band[:] = BAND_RGB
    for i, (text, color) in enumerate(lines):
        y = LINE_PX * (i + 1)
        cv2.putText(band, text, (10, y), FONT, 0.55, color, 1, cv2.LINE_AA)
    return np.vstack([band, frame])


def beside(frame: np.ndarray, images: list[np.ndarray]) -> np.ndarray:
    """``frame`` (H x W RGB) with ``images`` stacked in a column on its right.

    Each image (uint8 RGB, any square size, e.g. the policy's 84x84 views) is scaled with
    nearest-neighbour (its pixels stay visible) to ``H / len(images)`` px square.

    Returns:
        A new uint8 frame of H x (W + H / len(images)) pixels (even sizes for H.264).
    """
    side = (frame.shape[0] // len(images)) // 2 * 2
    column = np.zeros((frame.shape[0], side, 3), np.uint8)
    for i, image in enumerate(images):
        scaled = cv2.resize(image[..., :3], (side, side), interpolation=cv2.INTER_NEAREST)
        column[i * side : (i + 1) * side] = scaled
    return np.hstack([frame, column])


def hold_frames(fps: float) -> int:
    """Extra copies of an episode's last frame that keep it on screen ``HOLD_S`` (>= 0)."""
    return max(0, round(HOLD_S * fps) - 1)


def write_replay_video(
    task_id: str,
    robot: str,
    episodes: list[dict[str, Any]],
    path: Path,
    fps: float,
    step_latency_ms: list[list[float | None]] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> int:
    """Re-simulate ``episodes`` (``seed``, ``commands``, ``success``) and write an MP4.

    Each step is one frame from ``DEMO_VIEW`` under a text band; each episode's last frame
    (its outcome in green or red) is repeated ``hold_frames(fps)`` times, so it shows for
    ``HOLD_S`` seconds.

    Args:
        task_id: Gymnasium id of the task.
        robot: Robot name.
        episodes: Episode records of ``SimController.results``.
        path: Output ``.mp4`` (H.264, yuv420p).
        fps: Frames per second (the control rate plays it in real time); may be non-integer.
        step_latency_ms: Per episode and step, the round trip of the applied action (ms), or
            None where the step held or braked.
        env_kwargs: The cell's ``gymnasium.make`` arguments; in ``obs_mode="camera"`` each
            frame shows, right of the cell view, the images the policy acted on at that step.

    Returns:
        Frames written, held frames included.
    """
    env = gym.make(task_id, robot=robot, **(env_kwargs or {}))
    camera = Camera(env.unwrapped.sim, DEMO_VIEW)  # type: ignore[attr-defined]
    try:
        with VideoWriter(path, fps) as video:
            for i, episode in enumerate(episodes):
                latencies = (
                    step_latency_ms[i] if step_latency_ms and i < len(step_latency_ms) else []
                )
                frame = _replay_episode(env, camera, episode, (i, len(episodes)), latencies, video)
                if frame is not None:
                    for _ in range(hold_frames(fps)):
                        video.write(frame)
            return video.frames
    finally:
        env.close()


def _replay_episode(
    env: gym.Env[Any, Any],
    camera: Camera,
    episode: dict[str, Any],
    index: tuple[int, int],
    latencies: list[float | None],
    video: VideoWriter,
) -> np.ndarray | None:
    """Step ``env`` through one episode's commands, writing a frame per step.

    Args:
        env: The task's env (no render mode needed: ``camera`` renders).
        camera: The demo's view of the cell.
        episode: ``seed``, ``commands`` and ``success`` of the episode.
        index: (episode index, episodes in the video).
        latencies: The round trip of each step's action (ms), None where it held.
        video: Where the frames go.

    Returns:
        The last frame written (outcome shown), or None for an episode without a step.
    """
    obs, _ = env.reset(seed=int(episode["seed"]))
    keys = [k for k in POLICY_VIEW_KEYS if k in obs]
    frame = None
    for t, command in enumerate(episode["commands"]):
        seen = [obs[k] for k in keys]  # what the policy acted on for this command
        obs, *_ = env.step(command)
        ms = latencies[t] if t < len(latencies) else None
        view = camera.rgb(*VIDEO_SIZE)
        frame = overlay(beside(view, seen) if seen else view, _lines(*index, t, episode, ms))
        video.write(frame)
    return frame


def _lines(
    index: int, total: int, step: int, episode: dict[str, Any], latency_ms: float | None
) -> list[tuple[str, tuple[int, int, int]]]:
    last = step == len(episode["commands"]) - 1
    outcome = ("SUCCESS" if episode["success"] else "FAILED") if last else "running"
    color = (GREEN if episode["success"] else RED) if last else WHITE
    rtt = f"{latency_ms:.2f} ms" if latency_ms is not None else "held"
    return [
        (f"episode {index + 1}/{total}   step {step + 1}   {outcome}", color),
        (f"policy round trip {rtt} (edge runtime, loopback)", WHITE),
    ]


def latency_histogram_png(samples_ms: list[float], path: Path, bins: int = 30) -> None:
    """A histogram of round-trip latencies with p50 and p99 marked, as an 800 x 450 PNG.

    The x axis ends at 1.5 x p99; slower samples are counted in the last bin and the legend
    says how many, so one stall does not squash the rest of the histogram.

    Args:
        samples_ms: Round trips of the actions (ms).
        path: Output ``.png``, written atomically.
        bins: Histogram bins.
    """
    fig = _figure(LATENCY_FIGSIZE_IN)
    ax = fig.add_subplot()
    if samples_ms:
        _draw_latencies(ax, np.asarray(samples_ms, dtype=float), bins)
    else:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"Policy round trip over loopback ({len(samples_ms)} actions)")
    ax.set_xlabel("round trip (ms)")
    ax.set_ylabel("count (actions)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)
    _save_png(fig, path)


def _draw_latencies(ax: Axes, data_ms: np.ndarray, bins: int) -> None:
    """The histogram bars, the p50 / p99 lines and their legend on ``ax`` (ms on x)."""
    p50, p99 = (float(np.percentile(data_ms, q)) for q in (50, 99))
    top = 1.5 * p99 or 1.0
    ax.hist(np.clip(data_ms, 0.0, top), bins=bins, range=(0.0, top), color=CHART_BLUE,
            edgecolor="white", linewidth=0.5, label="actions")  # fmt: skip
    ax.axvline(p50, color=CHART_GREEN, linestyle="--", linewidth=1.8, label=f"p50 = {p50:.3f} ms")
    ax.axvline(p99, color=CHART_RED, linestyle="-", linewidth=1.8, label=f"p99 = {p99:.3f} ms")
    slow = int((data_ms > top).sum())
    if slow:
        note = f"{slow} above {top:.2f} ms (max {data_ms.max():.2f} ms), in the last bin"
        ax.plot([], [], " ", label=note)
    ax.set_xlim(0.0, top)
    ax.legend(loc="upper right", frameon=True)


def success_png(successes: list[bool], path: Path) -> None:
    """One bar per episode, up and green for a success, down and red for a failure (800 x 360).

    Args:
        successes: Outcome of each episode, in order.
        path: Output ``.png``, written atomically.
    """
    fig = _figure(SUCCESS_FIGSIZE_IN)
    ax = fig.add_subplot()
    n = len(successes)
    episodes = np.arange(1, n + 1)
    ok = np.asarray(successes, dtype=bool)
    ax.bar(episodes[ok], 1.0, width=0.8, color=CHART_GREEN)
    ax.bar(episodes[~ok], -1.0, width=0.8, color=CHART_RED)
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_ylim(-1.3, 1.3)
    ax.set_yticks([-1.0, 1.0], ["failure", "success"])
    ax.set_xlim(0.3, max(n, 1) + 0.7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=20))
    ax.set_xlabel("episode")
    ax.set_ylabel("outcome")
    ax.set_title(f"Success per episode: {int(ok.sum())}/{n} ({100 * ok.sum() / max(1, n):.0f} %)")
    handles = [Patch(color=CHART_GREEN, label="success"), Patch(color=CHART_RED, label="failure")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _save_png(fig, path)


def _figure(size_in: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas (no pyplot state), laid out so labels never overlap."""
    fig = Figure(figsize=size_in, dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG atomically (temporary sibling file, fsync, ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=CHART_DPI))
