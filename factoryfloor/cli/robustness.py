"""``factoryfloor robustness BUNDLE``: success over a grid of perturbations (table, JSON, PNG)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from factoryfloor.cli._args import add_ray, count


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds") from None
    if not (math.isfinite(value) and 0 < value <= 10_000):
        raise argparse.ArgumentTypeError(f"{text} ms is outside (0, 10000]")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``robustness`` (no simulator import: ``--help`` stays fast)."""
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a .ffpolicy bundle")
    p.add_argument("--episodes", type=count(1), default=50, help="episodes per cell")
    p.add_argument(
        "--seed", type=count(0), default=500_000,
        help="seed of each cell's first episode (every cell runs the same seeds)",
    )  # fmt: skip
    p.add_argument(
        "--axes", default="all",
        help="comma-separated axes, or all (those that apply to the bundle); see "
        "docs/robustness.md for each axis's unit and levels",
    )  # fmt: skip
    p.add_argument(
        "--latency-from", type=Path, metavar="JSONL",
        help="add a latency axis at the round trip the edge runtime measured (a metrics JSON "
        "lines file of `edge run-sim --metrics-jsonl` or the demo)",
    )  # fmt: skip
    p.add_argument("--hold-window-ms", type=_milliseconds, default=20.0,
                   help="the controller's hold window, as `edge run-sim`'s (ms)")  # fmt: skip
    p.add_argument("--max-action-age-ms", type=_milliseconds, default=50.0,
                   help="the server's max action age, as `edge serve`'s (ms)")  # fmt: skip
    p.add_argument("--out", type=Path, help="folder for report.json and heatmap.png "
                   "(default: out/robustness/<bundle name>)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the JSON report, not the table")
    add_ray(p, "one Ray task per cell: a local Ray, or the cluster at ADDRESS")


def _axis_names(text: str, has_images: bool) -> list[str]:
    from factoryfloor.stack.robustness.axes import AXES

    if text == "all":
        return [n for n, a in AXES.items() if a.applies(has_images)]
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in AXES:
            raise ValueError(f"unknown axis {name!r}; choose from {', '.join(AXES)} (or all)")
        if not AXES[name].applies(has_images):
            kind = "camera" if has_images else "state"
            raise ValueError(f"axis {name!r} does not apply to a {kind} bundle")
    if not names:
        raise ValueError("--axes names no axis; give e.g. --axes drop_rate,part_friction")
    return names


def _progress(began: float) -> Any:
    def show(done: int, total: int, r: Any) -> None:
        level = "" if r.level is None else f"={r.level:g}"
        print(
            f"cell {done}/{total} {r.axis}{level}: {sum(r.successes)}/{len(r.successes)} "
            f"succeeded, {r.faults} faults ({time.monotonic() - began:.0f} s)",
            file=sys.stderr, flush=True,
        )  # fmt: skip

    return show


def run(args: argparse.Namespace) -> int:
    """Run the grid, print the table (or JSON), write report.json and heatmap.png."""
    from factoryfloor.edge_runtime.bundle import load_bundle, sha256_hex
    from factoryfloor.policies.atomic import atomic_write_json
    from factoryfloor.stack.robustness.axes import read_round_trip, resolve_axes
    from factoryfloor.stack.robustness.report import build_report, heat_map, table
    from factoryfloor.stack.robustness.run import LinkSettings, run_grid

    bundle = load_bundle(args.bundle)  # a bad bundle fails before any env or Ray starts
    manifest = bundle.manifest
    has_images = any(s.get("dtype") == "uint8" for s in manifest["observation"]["spaces"].values())
    names = _axis_names(args.axes, has_images)
    measured = read_round_trip(args.latency_from) if args.latency_from else None
    period = 1.0 / float(manifest["control_rate_hz"])
    axes = resolve_axes(names, measured, period)
    settings = LinkSettings(args.hold_window_ms / 1e3, args.max_action_age_ms / 1e3)
    out = args.out or Path("out/robustness") / args.bundle.stem
    out.mkdir(parents=True, exist_ok=True)
    show = _progress(time.monotonic())
    if args.ray:
        from factoryfloor.policies.ray_start import start_ray
        from factoryfloor.stack.robustness.ray_grid import run_grid_on_ray

        start_ray(None if args.ray == "local" else args.ray)
        results = run_grid_on_ray(args.bundle, names, measured, args.episodes, args.seed,
                                  settings, show)  # fmt: skip
    else:
        results = run_grid(args.bundle, axes, args.episodes, args.seed, settings, show)
    about = {
        "name": args.bundle.name, "sha256": sha256_hex(args.bundle.read_bytes()),
        "task_id": manifest["task_id"], "robot": manifest["robot"], "images": has_images,
    }  # fmt: skip
    report = build_report(about, axes, results, args.episodes, args.seed, settings)
    atomic_write_json(out / "report.json", report)
    heat_map(report, out / "heatmap.png")
    print(json.dumps(report) if args.json else table(report))
    print(f"wrote {out / 'report.json'} and {out / 'heatmap.png'}", file=sys.stderr)
    return 0
