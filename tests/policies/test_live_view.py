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
