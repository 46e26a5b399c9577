"""The demo's live view: the cell camera as an MJPEG stream and live metrics, on localhost.

Rendering a frame costs more than a control period, so the view never renders in the control
loop: the loop sends the commands it applies (a queue put, microseconds) to a viewer process,
which re-simulates them in its own PyBullet world (the simulation is deterministic) and renders
the newest state as often as it can. The viewer process also serves::

    /                the page: the stream and a metrics table refreshed every 300 ms
    /stream.mjpg     multipart/x-mixed-replace JPEG frames
    /metrics.json    the latest metrics the demo published
"""

from __future__ import annotations

import contextlib
import http.server
import json
import multiprocessing as mp
import queue
import threading
import time
from typing import Any

import numpy as np

FRAME_SIZE = (320, 240)  # stream width, height (pixels)
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>factoryfloor live</title>
<style>body{font-family:sans-serif;background:#111;color:#eee;margin:16px}
td{padding:2px 12px}#cam{border:1px solid #444}</style></head>
<body><h2>factoryfloor: __TASK__</h2>
<img id="cam" src="/stream.mjpg" width="640" height="480">
<p id="status"></p>
<table id="metrics"></table>
<script>
const LABELS = __LABELS__;
async function refresh() {
  try {
    const m = await (await fetch('/metrics.json', {cache: 'no-store'})).json();
    document.getElementById('status').textContent = m.status || '';
    document.getElementById('metrics').innerHTML = Object.entries(LABELS)
      .filter(([k]) => k in m)
      .map(([k, [label, unit]]) =>
        `<tr><td>${label}</td><td><span id="m-${k}">${m[k]}</span> ${unit}</td></tr>`)
      .join('');
  } catch (e) {
    document.getElementById('status').textContent =
      'the demo has ended: this page is no longer live';
  }
}
setInterval(refresh, 300); refresh();
</script></body></html>
"""
# metric key -> (label, unit) shown on the page, in this order; values arrive rounded
LABELS: dict[str, tuple[str, str]] = {
    "episodes": ("episodes done", ""),
    "successes": ("successful episodes", ""),
    "state": ("safety state", ""),
    "reason": ("fault reason", ""),
    "faults": ("faults (re-armed)", ""),
    "cycles": ("control cycles", ""),
    "round_trip_p50_ms": ("policy round trip, median", "ms"),
    "round_trip_p99_ms": ("policy round trip, 99th percentile", "ms"),
    "deadline_misses": ("missed control deadlines", ""),
    "frames": ("frames streamed", ""),
}


class LiveView:
    """Starts the viewer process; feed it with ``episode``, ``step`` and ``metrics``.

    Args:
        task_id: Gymnasium id of the task shown.
        robot: Robot name.
        port: Localhost TCP port (0: any free port).
        fps: Most frames per second rendered.
    """

    def __init__(self, task_id: str, robot: str, port: int = 0, fps: float = 12.0) -> None:
        ctx = mp.get_context("spawn")
        self._queue: Any = ctx.Queue(maxsize=10_000)
        ready: Any = ctx.Queue()
        self._process = ctx.Process(
            target=_viewer_main, args=(self._queue, ready, task_id, robot, port, fps), daemon=True
        )
        self._process.start()
        self.port = int(ready.get(timeout=60))
        self.url = f"http://127.0.0.1:{self.port}/"

    def episode(self, seed: int) -> None:
        """A new episode starts from ``env.reset(seed=seed)``."""
        self._put(("episode", seed))

    def step(self, command: np.ndarray) -> None:
        """The controller applied ``command`` for one step."""
        self._put(("step", np.asarray(command, dtype=np.float32)))

    def metrics(self, values: dict[str, Any]) -> None:
        """Publish the latest metrics (JSON-ready values)."""
        self._put(("metrics", values))

    def status(self, text: str) -> None:
        """Show ``text`` above the metrics (e.g. that the run ended and the page lingers)."""
        self._put(("status", text))

    def _put(self, item: tuple[str, Any]) -> None:
        with contextlib.suppress(queue.Full):  # the viewer fell behind: the loop must not wait
            self._queue.put_nowait(item)

    def close(self) -> None:
        """Stop the viewer process (killed when it is still behind after 5 s).

        A viewer that fell behind may leave items in the queue's buffer that no one will read:
        the queue's feeder thread is then not waited for at exit (it would wait forever).
        """
        self._put(("stop", None))
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._queue.cancel_join_thread()
        self._queue.close()


class _State:
    def __init__(self) -> None:
        self.jpeg = b""
        self.frames = 0
        self.metrics: dict[str, Any] = {}
        self.cond = threading.Condition()


def _viewer_main(
    commands: Any, ready: Any, task_id: str, robot: str, port: int, fps: float
) -> None:
    import os

    import cv2
    import gymnasium as gym

    import factoryfloor  # noqa: F401  (registers the envs)

    os.nice(10)  # best effort: the control loop and the policy server come first
    state = _State()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _handler(state, task_id))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    ready.put(httpd.server_address[1])
    env = gym.make(task_id, robot=robot)
    camera = env.unwrapped.camera
    dirty, last_render = False, 0.0
    while True:
        try:
            kind, value = commands.get(timeout=0.05)
        except queue.Empty:
            kind, value = "idle", None
        if kind == "stop":
            break
        if kind == "episode":
            env.reset(seed=int(value))
            dirty = True
        elif kind == "step":
            env.step(value)
            dirty = True
        elif kind == "metrics":
            state.metrics = value
        elif kind == "status":
            state.metrics = {**state.metrics, "status": value}
        if dirty and time.monotonic() - last_render >= 1.0 / fps and commands.empty():
            rgb = camera.rgb(*FRAME_SIZE)
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if ok:
                with state.cond:
                    state.jpeg, state.frames = jpeg.tobytes(), state.frames + 1
                    state.cond.notify_all()
            dirty, last_render = False, time.monotonic()
    httpd.shutdown()
    env.close()


def _handler(state: _State, task_id: str) -> type[http.server.BaseHTTPRequestHandler]:
    page = PAGE.replace("__TASK__", task_id).replace("__LABELS__", json.dumps(LABELS))
    page_bytes = page.encode("utf-8")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = self.path.split("?")[0]
            if route == "/":
                self._send(200, "text/html; charset=utf-8", page_bytes)
            elif route == "/metrics.json":
                body = json.dumps({**state.metrics, "frames": state.frames}).encode()
                self._send(200, "application/json", body)
            elif route == "/stream.mjpg":
                self._stream()
            else:
                self.send_error(404)

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen = -1
            try:
                while True:
                    with state.cond:
                        state.cond.wait_for(lambda last=seen: state.frames != last, timeout=1.0)
                        jpeg, seen = state.jpeg, state.frames
                    if not jpeg:
                        continue
                    head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                    self.wfile.write(head.encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: no access log on stderr."""

    return Handler
