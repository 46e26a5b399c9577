"""Must-show check: ``make demo`` passes on a busy 2-core machine.

Runs ``factoryfloor demo`` (the command ``make demo`` runs) N times in each load condition and
counts the runs that passed, the faults (each with the demo's own explanation: who was late, by
how much, against which window) and the re-arms:

* ``stress``: ``stress-ng --cpu 1`` (Debian's stress-ng) running beside the demo;
* ``browser``: ``demo --view`` with headless Chromium showing the live view page all along.

The target is every run passing (10 of 10 under stress, 5 of 5 with the browser). Prints a
table, writes JSON with the machine's calibration line (``../shared/tools/calibrate.py``) and
exits 1 when a run failed.

Usage::

    python benchmarks/demo_under_load.py --stress-runs 10 --browser-runs 5
        --out bench_results/demo_under_load.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CALIBRATE = ROOT.parent / "shared" / "tools" / "calibrate.py"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def calibration() -> dict[str, Any] | None:
    """The machine's calibration line, when the tool is there."""
    if not CALIBRATE.is_file():
        return None
    out = subprocess.run([sys.executable, str(CALIBRATE)], capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def demo_command(out: Path, view: bool, episodes: int) -> list[str]:
    cmd = [sys.executable, "-m", "factoryfloor.cli", "demo", "--out", str(out),
           "--episodes", str(episodes), "--video-episodes", "1"]  # fmt: skip
    return [*cmd, "--view", "--view-port", "0", "--view-linger", "0"] if view else cmd


def start_browser(url: str, profile: Path) -> subprocess.Popen[bytes]:
    """Headless Chromium showing ``url`` (it keeps decoding the MJPEG stream)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: install Debian's chromium (make browser)")
    return subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_once(condition: str, episodes: int, tmp: Path) -> dict[str, Any]:
    """One demo run under ``condition``; its figures from ``metrics.json``."""
    out = tmp / f"{condition}-{time.monotonic_ns()}"
    load: list[subprocess.Popen[bytes]] = []
    if condition == "stress":
        load.append(subprocess.Popen(["stress-ng", "--cpu", "1", "--quiet"]))
    start = time.monotonic()
    demo = subprocess.Popen(
        demo_command(out, condition == "browser", episodes),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    text = []
    for line in demo.stdout:
        text.append(line)
        found = re.search(r"live view: (http://\S+)", line)
        if found and condition == "browser":
            load.append(start_browser(found.group(1), out / "chromium-profile"))
    code = demo.wait()
    for proc in load:
        proc.terminate()
        proc.wait(10)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return {
        "condition": condition, "exit": code, "passed": code == 0 and metrics.get("passed", False),
        "wall_s": round(time.monotonic() - start, 1),
        "success_rate": metrics.get("success_rate"), "faults": metrics.get("faults"),
        "explanations": [f["explanation"] for f in metrics.get("fault_details", [])],
        "round_trip_ms": metrics.get("round_trip_ms"),
        "missed": metrics.get("loop", {}).get("missed"),
        "output_tail": "".join(text[-5:]) if code else "",
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stress-runs", type=int, default=10)
    parser.add_argument("--browser-runs", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=20, help="episodes per demo run")
    parser.add_argument("--out", type=Path, default=Path("bench_results/demo_under_load.json"))
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    plan = ["stress"] * args.stress_runs + ["browser"] * args.browser_runs
    with tempfile.TemporaryDirectory(prefix="ff-demo-load-") as tmp:
        for i, condition in enumerate(plan, 1):
            runs.append(run_once(condition, args.episodes, Path(tmp)))
            r = runs[-1]
            print(
                f"[{i}/{len(plan)}] {condition}: {'passed' if r['passed'] else 'FAILED'}, "
                f"success {r['success_rate']}, faults {r['faults']}, {r['wall_s']} s",
                flush=True,
            )
            for text in r["explanations"]:
                print(f"    fault: {text}", flush=True)
    summary = summarise(runs)
    print_table(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"calibration": calibration(), "summary": summary,
                                    "runs": runs}, indent=1) + "\n")  # fmt: skip
    print(f"wrote {args.out}")
    return 0 if all(r["passed"] for r in runs) else 1


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for condition in sorted({r["condition"] for r in runs}):
        mine = [r for r in runs if r["condition"] == condition]
        p99 = [r["round_trip_ms"]["p99"] for r in mine if r["round_trip_ms"]]
        out[condition] = {
            "runs": len(mine), "passed": sum(r["passed"] for r in mine),
            "runs_with_faults": sum(bool(r["faults"]) for r in mine),
            "faults": sum(r["faults"] or 0 for r in mine),
            "round_trip_p99_ms_max": max(p99) if p99 else None,
        }  # fmt: skip
    return out


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'condition':<10} {'passed':>8} {'runs with faults':>17} {'faults':>7} "
          f"{'worst p99 (ms)':>15}")  # fmt: skip
    for condition, s in summary.items():
        print(f"{condition:<10} {s['passed']:>3} of {s['runs']:<2} {s['runs_with_faults']:>17} "
              f"{s['faults']:>7} {s['round_trip_p99_ms_max']!s:>15}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
