"""What obs_mode="camera" costs: env steps/s against state mode, and frames/s of each camera.

For every registered task (Panda, "ee" control, random seeded actions, resets through the
``TimeLimit`` of ``gymnasium.make`` included) it measures env steps/s in ``obs_mode="camera"``
and in ``obs_mode="state"``, and the frames/s of the cell camera and of the wrist camera alone
(``image()`` of each camera in a reset camera-mode env). All measurements run in ``--repeats``
windows interleaved round-robin, so a noisy spell of the machine hits every one alike; the best
window is reported. ``--sweep`` adds the frames/s of each camera of PickPlace at other sizes
(the cost side of choosing the default ``image_size``). The machine calibration line of
``../shared/tools/calibrate.py`` is recorded first. With ``--samples DIR`` one PNG per task
and camera is written there (x4).

Usage::

    python benchmarks/camera_render.py --seconds 2 --out bench_results/camera_render.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

import factoryfloor  # noqa: F401  (registers the factoryfloor envs)
from factoryfloor.sim.observations import MODE_KEYS
from factoryfloor.sim.registry import ENV_IDS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_slowdown import machine_calibration

ROBOT = "panda"
SEED = 0
UPSCALE = 4
IMAGE_KEYS = MODE_KEYS["camera"].image_keys


def env_stepper(env_id: str, obs_mode: str, image_size: int) -> tuple[gym.Env, Callable[[], None]]:
    """A made env and a function doing one step (a reset when the episode ended)."""
    env = gym.make(env_id, robot=ROBOT, obs_mode=obs_mode, image_size=image_size)
    env.reset(seed=SEED)
    env.action_space.seed(SEED)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    return env, step


def camera_renderer(env: gym.Env, key: str, image_size: int) -> Callable[[], None]:
    """One frame of one camera of a camera-mode env, nothing else."""
    camera = env.unwrapped._cameras[key]
    return lambda: camera.image(image_size, image_size, False)


def best_rates(work: dict[str, Callable[[], None]], seconds: float, repeats: int) -> dict:
    """Calls/s of each workload: best of ``repeats`` windows, interleaved across workloads."""
    window = seconds / repeats
    best = dict.fromkeys(work, 0.0)
    for _ in range(repeats):
        for name, fn in work.items():
            n, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < window:
                fn()
                n += 1
            best[name] = max(best[name], n / elapsed)
    return best


def save_samples(envs: dict[str, gym.Env], out_dir: Path) -> list[str]:
    """One PNG per task and camera (nearest-neighbour x``UPSCALE``); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for env_id, env in envs.items():
        obs, _ = env.reset(seed=SEED)
        for key in IMAGE_KEYS:
            image = np.kron(obs[key][..., :3], np.ones((UPSCALE, UPSCALE, 1), dtype=np.uint8))
            path = out_dir / f"{env_id.split('/')[1]}_{ROBOT}_{key}.png"
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            paths.append(str(path))
    return paths


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the run, with the machine and settings."""
    calibration = machine_calibration()
    work: dict[str, Callable[[], None]] = {}
    envs, cameras = [], {}
    for env_id in ENV_IDS:
        for mode in ("camera", "state"):
            env, step = env_stepper(env_id, mode, args.image_size)
            envs.append(env)
            work[f"{env_id}|{mode}"] = step
            if mode == "camera":
                cameras[env_id] = env
                for key in IMAGE_KEYS:
                    work[f"{env_id}|{key}"] = camera_renderer(env, key, args.image_size)
    sweep = [int(v) for v in args.sweep.split(",") if v]
    pick = cameras[ENV_IDS[min(1, len(ENV_IDS) - 1)]]
    for size in sweep:
        for key in IMAGE_KEYS:
            work[f"sweep|{size}|{key}"] = camera_renderer(pick, key, size)
    rates = best_rates(work, args.seconds, args.repeats)
    samples = save_samples(cameras, Path(args.samples)) if args.samples else []
    for env in envs:
        env.close()
    rows = []
    for env_id in ENV_IDS:
        camera, state = rates[f"{env_id}|camera"], rates[f"{env_id}|state"]
        rows.append(
            {
                "env_id": env_id,
                "camera_steps_per_s": camera,
                "state_steps_per_s": state,
                "camera_over_state": camera / state,
                **{f"{key}_frames_per_s": rates[f"{env_id}|{key}"] for key in IMAGE_KEYS},
            }
        )
    return {
        "benchmark": "camera_render",
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "calibration": calibration,
        "settings": {
            "robot": ROBOT,
            "image_size": args.image_size,
            "seconds_per_measurement": args.seconds,
            "repeats": args.repeats,
            "timer": "time.perf_counter; best of the interleaved windows",
        },
        "rows": rows,
        "sweep": {
            "env_id": pick.spec.id if pick.spec else "",
            "frames_per_s": {
                str(size): {key: rates[f"sweep|{size}|{key}"] for key in IMAGE_KEYS}
                for size in sweep
            },
        },
        "samples": samples,
    }


def table(results: dict[str, Any]) -> str:
    """The rows as a fixed-width text table."""
    head = (
        f"{'env':28} {'camera/s':>9} {'state/s':>9} {'ratio':>6} {'cell fps':>9} {'wrist fps':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in results["rows"]:
        lines.append(
            f"{r['env_id']:28} {r['camera_steps_per_s']:9.1f} {r['state_steps_per_s']:9.1f} "
            f"{r['camera_over_state']:9.3f} {r['image_frames_per_s']:9.1f} "
            f"{r['wrist_image_frames_per_s']:9.1f}"
        )
    sweep = results["sweep"]["frames_per_s"]
    if sweep:
        lines += ["", f"frames/s by size ({results['sweep']['env_id']}):"]
        lines += [
            f"  {size:>4} px: " + ", ".join(f"{k} {v:.1f}" for k, v in fps.items())
            for size, fps in sweep.items()
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (s)")
    parser.add_argument("--repeats", type=int, default=4, help="interleaved windows")
    parser.add_argument("--image-size", type=int, default=84, help="pixels (square)")
    parser.add_argument("--sweep", default="64,84,128", help="sizes for camera frames/s")
    parser.add_argument("--samples", default="", help="folder for sample PNGs (none if empty)")
    parser.add_argument("--out", default="bench_results/camera_render.json", help="JSON path")
    args = parser.parse_args(argv)
    results = measure(args)
    print("calibration:", json.dumps(results["calibration"]))
    print(table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
