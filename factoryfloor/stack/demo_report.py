"""The demo's results: ``metrics.json``, its pass rule, the video and the charts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import RuntimeReport
from factoryfloor.policies.atomic import atomic_write_json
from factoryfloor.stack import demo_media
from factoryfloor.stack.demo_console import Console
from factoryfloor.stack.sim_cell import SimController

if TYPE_CHECKING:
    from factoryfloor.stack.demo import DemoOptions


def required_successes(min_success: float, episodes: int) -> int:
    """Successful episodes the demo needs: ``floor(min_success * episodes)``, at least 1.

    With the shipped policy's ~95% success, 0.9 of a short run (say 6 episodes: 5.4) would
    fail one run in four by chance alone; the floor allows the one failure a rate of 0.9 permits.
    At least one episode must succeed (unless ``min_success`` is 0).
    """
    needed = math.floor(min_success * episodes + 1e-9)
    return max(needed, 1) if min_success > 0 else 0


def metrics(
    options: DemoOptions,
    policy: str,
    report: RuntimeReport,
    client: EdgeClient,
    server_ok: bool,
    faults: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything ``metrics.json`` holds, and whether the demo passed."""
    info = report.controller
    rate = info.get("success_rate") or 0.0
    episodes = int(info.get("episodes") or 0)
    needed = required_successes(options.min_success, options.episodes)
    rtt_ms = [s * 1e3 for s in client.metrics.latencies["round_trip"].samples] if (
        "round_trip" in client.metrics.latencies
    ) else []  # fmt: skip
    server_metrics = last_json_line(options.out / "server_metrics.jsonl")
    finished = episodes >= options.episodes
    passed = finished and int(info.get("successes") or 0) >= needed and server_ok
    return {
        "task": options.task,
        "robot": options.robot,
        "policy": policy,
        "episodes": info.get("episodes"),
        "successes": info.get("successes"),
        "success_rate": rate,
        "min_success": options.min_success,
        "successes_needed": needed,
        "passed": passed,
        "state": report.state,
        "faults": len(faults),
        "rearms": min(len(faults), options.max_rearms),
        "fault_details": faults,
        "reason": report.reason,
        "round_trip_ms": percentiles(rtt_ms),
        "loop": report.loop,
        "safety": report.safety,
        "client_counters": report.client["counters"],
        "server_ok": server_ok,
        "server": server_metrics,
        "seed": options.seed,
        "round_trip_samples_ms": [round(v, 4) for v in rtt_ms],
    }


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99, p99.9 and max of ``values`` (same units), rounded; {} for none."""
    if not values:
        return {}
    data = np.asarray(values)
    return {f"p{q:g}": round(float(np.percentile(data, q)), 4) for q in (50, 99, 99.9)} | {
        "max": round(float(data.max()), 4)
    }


def last_json_line(path: Path) -> dict[str, Any]:
    """The last JSON line of a JSON-lines file ({} when absent or empty)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def write_outputs(
    options: DemoOptions,
    controller: SimController,
    latencies: list[list[float | None]],
    metrics: dict[str, Any],
    console: Console,
) -> None:
    """Write the video, the two charts and ``metrics.json`` into ``options.out``."""
    out = options.out
    shown = controller.results[: options.video_episodes]
    with console.status("rendering the video"):
        frames = demo_media.write_replay_video(
            options.task, options.robot, shown, out / "demo.mp4",
            controller.description.control_rate_hz, latencies, controller.env_kwargs,
        )  # fmt: skip
    metrics["video"] = {"path": str(out / "demo.mp4"), "frames": frames, "episodes": len(shown)}
    samples = metrics["round_trip_samples_ms"]
    demo_media.latency_histogram_png(samples, out / "latency_histogram.png")
    successes = [r["success"] for r in controller.results]
    demo_media.success_png(successes, out / "success_per_episode.png")
    atomic_write_json(out / "metrics.json", metrics)
