"""Runtime metrics: counters and latency statistics, as JSON lines and Prometheus text.

``Metrics`` holds named counters and ``LatencyStats`` (a bounded window of samples, in seconds);
``snapshot()`` gives a plain dict (percentiles in microseconds), ``prometheus_text()`` the
Prometheus exposition format, and ``MetricsHttpServer`` serves it on a localhost port.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES = (50.0, 99.0, 99.9)


class LatencyStats:
    """The last ``window`` samples of a duration (s), for percentiles; all-time count and max."""

    def __init__(self, window: int = 100_000) -> None:
        self.samples: deque[float] = deque(maxlen=window)
        self.count = 0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration (s)."""
        self.samples.append(seconds)
        self.count += 1
        self.max_s = max(self.max_s, seconds)

    def summary_us(self) -> dict[str, float]:
        """``count``, ``p50``, ``p99``, ``p99.9``, ``max`` in microseconds (0 when empty)."""
        out: dict[str, float] = {"count": float(self.count)}
        data = np.fromiter(self.samples, dtype=float) if self.samples else np.zeros(1)
        for q in PERCENTILES:
            out[f"p{q:g}"] = round(float(np.percentile(data, q)) * 1e6, 1)
        out["max"] = round(self.max_s * 1e6, 1)
        return out


class Metrics:
    """Counters and latency statistics of one runtime component.

    Args:
        component: Name used as the Prometheus metric prefix (``factoryfloor_<component>_``).
    """

    def __init__(self, component: str) -> None:
        self.component = component
        self.counters: Counter[str] = Counter()
        self.latencies: dict[str, LatencyStats] = {}
        self.gauges: dict[str, float] = {}
        self.lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self.lock:
            self.counters[name] += n

    def observe(self, name: str, seconds: float) -> None:
        """Record a duration (s) in latency statistics ``name``."""
        with self.lock:
            stats = self.latencies.get(name)  # not setdefault: that would build one per call
            if stats is None:
                stats = self.latencies[name] = LatencyStats()
            stats.add(seconds)

    def set_gauge(self, name: str, value: float) -> None:
        """Set gauge ``name`` (e.g. sessions open, resident memory in MB)."""
        with self.lock:
            self.gauges[name] = value

    def snapshot(self) -> dict[str, Any]:
        """Everything as a JSON-ready dict (latencies in microseconds)."""
        with self.lock:
            return {
                "component": self.component,
                "time_unix_s": round(time.time(), 3),
                "counters": dict(self.counters),
                "gauges": dict(self.gauges),
                "latency_us": {k: v.summary_us() for k, v in self.latencies.items()},
            }

    def prometheus_text(self) -> str:
        """The Prometheus text exposition of the snapshot."""
        snap, prefix = self.snapshot(), f"factoryfloor_{self.component}"
        lines = []
        for name, value in sorted(snap["counters"].items()):
            lines += [f"# TYPE {prefix}_{name}_total counter", f"{prefix}_{name}_total {value}"]
        for name, value in sorted(snap["gauges"].items()):
            lines += [f"# TYPE {prefix}_{name} gauge", f"{prefix}_{name} {value}"]
        for name, summary in sorted(snap["latency_us"].items()):
            metric = f"{prefix}_{name}_seconds"
            lines.append(f"# TYPE {metric} summary")
            for q in PERCENTILES:
                lines.append(f'{metric}{{quantile="{q / 100:g}"}} {summary[f"p{q:g}"] / 1e6:.9f}')
            lines.append(f"{metric}_count {int(summary['count'])}")
        return "\n".join(lines) + "\n"


class JsonLinesWriter:
    """Appends one metrics snapshot per line to a file (each line flushed whole)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one JSON line."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class MetricsHttpServer:
    """Serves ``/metrics`` (Prometheus text) on ``127.0.0.1:port`` from a daemon thread.

    Args:
        sources: The metrics to expose, concatenated.
        port: TCP port (0: any free port; see ``port`` after start).
    """

    def __init__(self, sources: list[Metrics], port: int = 0) -> None:
        handler = _handler_for(sources)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> MetricsHttpServer:
        """Start serving; returns self."""
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_for(sources: list[Metrics]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served")
                return
            body = "".join(m.prometheus_text() for m in sources).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: no access log on stderr."""

    return Handler


def resident_memory_mb() -> float:
    """This process's resident set size (MB), from /proc (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
