"""The live view's page and metrics, without a browser: named rows, units, the lingering note."""

from __future__ import annotations

import json
import time
import urllib.request

from factoryfloor.stack.live_view import LABELS, LiveView


def fetch(url: str) -> bytes:
    return urllib.request.urlopen(url, timeout=5).read()


def test_page_names_every_metric_and_the_status_says_the_view_lingers():
    view = LiveView("factoryfloor/Reach-v0", "panda", port=0)
    try:
        page = fetch(view.url).decode()
        for label, unit in LABELS.values():
            assert label in page and unit in page
        view.metrics({"cycles": 12, "round_trip_p50_ms": 1.23, "state": "FAULT",
                      "reason": "no valid action for 61.0 ms"})  # fmt: skip
        view.status("the run has ended; this page stays up 30 s more (Ctrl-C ends it)")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = json.loads(fetch(view.url + "metrics.json"))
            if "status" in metrics:
                break
            time.sleep(0.1)
        assert metrics["status"].startswith("the run has ended; this page stays up 30 s")
        assert metrics["reason"] == "no valid action for 61.0 ms" and metrics["cycles"] == 12
    finally:
        view.close()


BEHIND = """
import os, signal, time
import numpy as np
from factoryfloor.stack.live_view import LiveView
if __name__ == "__main__":
    view = LiveView("factoryfloor/PickPlace-v0", "panda")
    os.kill(view._process.pid, signal.SIGSTOP)  # a viewer far behind: it reads nothing more
    for _ in range(10_000):
        view.step(np.zeros(4, np.float32))
    view.close()
    print("closed", flush=True)
"""


def test_a_viewer_far_behind_does_not_keep_the_demo_from_exiting(tmp_path):
    """Items left in the queue's buffer used to make the interpreter wait forever at exit."""
    import subprocess
    import sys

    script = tmp_path / "behind.py"  # a file: the spawned viewer re-imports __main__
    script.write_text(BEHIND)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )  # raised TimeoutExpired before the fix
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "closed"
