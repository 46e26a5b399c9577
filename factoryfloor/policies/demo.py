"""The headless demo: the scripted expert on a task, its success rate and a video of the cell."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from factoryfloor.policies.evaluate import evaluate


def run_demo(env_id: str, robot: str, episodes: int, video_episodes: int, out: Path) -> int:
    """Evaluate the expert, write ``demo.mp4`` and ``metrics.json`` into ``out``.

    Returns:
        0 when the success rate is at least 90%, else 1 (the demo failed).
    """
    out.mkdir(parents=True, exist_ok=True)
    video = out / "demo.mp4"
    result = evaluate(
        env_id, "expert", episodes, 0, robot, video=video, video_episodes=video_episodes
    )
    metrics = result.as_dict()
    _write_json(out / "metrics.json", metrics)
    print(
        f"{env_id} with {robot}: scripted expert succeeded in "
        f"{sum(result.successes)}/{result.episodes} episodes "
        f"({100 * result.success_rate:.0f}%), mean length {result.mean_episode_length:.0f} steps, "
        f"{result.env_steps_per_s:.0f} env steps/s"
    )
    print(f"video: {video}  metrics: {out / 'metrics.json'}")
    return 0 if result.success_rate >= 0.9 else 1


def _write_json(path: Path, data: object) -> None:
    """Write JSON atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
