"""A slower machine on demand, and the short calibration every edge benchmark prints first.

The edge targets must hold on a machine about 2-3x slower per message than a fast day of this
kind of VM: bare pyzmq ping-pong p50 >= 100 us, where a fast day gives ~70 us. When the
machine is faster than that, the edge benchmarks' ``--hog N`` starts N busy neighbours beside
them. The default kind, ``pingpong``, is a pair of processes (nice 0) on two CPUs that wake each
other through pipes without pause: every CPU of the VM keeps taking cross-CPU wake-ups and
context switches, and each of the benchmark's messages costs more (measured here: ping-pong p50
71 -> 103-116 us, p99 110 -> 190-200 us), with no multi-millisecond stalls. ``spin`` hogs
(busy loops) barely slow a message at nice 19 and, at nice 0, add time-slice stalls of several
ms to processes under the default scheduler instead: they measure a loaded box, not a slow one.
A controller under ``SCHED_FIFO`` preempts any hog, as on a real controller. The calibration
(the bare ping-pong p50 with the hogs running) says how slow the machine was.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# the bare peer of every edge benchmark: a ROUTER answering each frame with argv[1] zero bytes
ECHO_SERVER = """
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.setsockopt(zmq.LINGER, 0)
port = s.bind_to_random_port("tcp://127.0.0.1"); print(port, flush=True)
reply = bytes(int(sys.argv[1]))
while True:
    ident, frame = s.recv_multipart()
    if frame == b"stop": break
    s.send_multipart([ident, reply])
"""
SPIN = "import os; os.sched_setaffinity(0, {{{cpu}}}); os.nice({nice})\nwhile True: pass"
# two processes, one on each of two CPUs, passing a byte back and forth through pipes: every
# message a cross-CPU wake-up, as a busy neighbour service makes them on an edge box
PING_PONG = """
import os
cpus = sorted(os.sched_getaffinity(0)); os.nice({nice})
r1, w1 = os.pipe(); r2, w2 = os.pipe()
if os.fork() == 0:
    os.sched_setaffinity(0, {{cpus[({cpu} + 1) % len(cpus)]}})
    while True:
        os.read(r1, 1); os.write(w2, b"x")
os.sched_setaffinity(0, {{cpus[{cpu} % len(cpus)]}})
while True:
    os.write(w1, b"x"); os.read(r2, 1)
"""
HOGS = {"spin": SPIN, "pingpong": PING_PONG}


@contextlib.contextmanager
def cpu_hogs(n: int, nice: int = 0, kind: str = "spin") -> Iterator[list[int]]:
    """``n`` hogs of ``kind`` at ``nice`` for the duration; yields their process groups.

    ``spin``: a process spinning on CPU ``i`` (modulo the CPUs this process may use).
    ``pingpong``: a pair of processes on CPUs ``i`` and ``i + 1`` waking each other through
    pipes (a busy neighbour: the p50 of every message on the machine rises, its tail little).
    """
    cpus = sorted(os.sched_getaffinity(0))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOGS[kind].format(cpu=cpus[i % len(cpus)], nice=nice)],
            start_new_session=True,
        )
        for i in range(n)
    ]
    try:
        if procs:
            time.sleep(0.3)  # running before anything is measured
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def machine_calibration() -> dict[str, Any] | None:
    """The shared calibration line (``../shared/tools/calibrate.py``), or None without it."""
    tool = Path(__file__).resolve().parents[2] / "shared" / "tools" / "calibrate.py"
    if not tool.exists():
        return None
    done = subprocess.run([sys.executable, str(tool)], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if done.returncode == 0 and lines else None
    except json.JSONDecodeError:
        return None


def calibration(n: int = 2_000, frame_bytes: int = 148) -> dict[str, Any]:
    """Bare pyzmq DEALER/ROUTER ping-pong between this process and another, back to back.

    Returns:
        ``ping_pong_p50_us``, ``ping_pong_p99_us`` (us), the CPUs and load of the machine.
    """
    import zmq

    peer = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, str(frame_bytes)], stdout=subprocess.PIPE, text=True
    )
    port = int(peer.stdout.readline())  # type: ignore[union-attr]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    frame, samples = bytes(frame_bytes), []
    for i in range(n + 100):
        t0 = time.perf_counter()
        sock.send(frame)
        sock.recv()
        if i >= 100:
            samples.append(time.perf_counter() - t0)
    sock.send(b"stop")
    peer.wait(5)
    sock.close()
    us = np.asarray(samples) * 1e6
    return {
        "ping_pong_p50_us": round(float(np.percentile(us, 50)), 1),
        "ping_pong_p99_us": round(float(np.percentile(us, 99)), 1),
        "cpus": len(os.sched_getaffinity(0)),
        "load_1min": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="calibration with N CPU hogs")
    parser.add_argument("--hog", type=int, default=0)
    parser.add_argument("--hog-nice", type=int, default=0)
    parser.add_argument("--hog-kind", choices=sorted(HOGS), default="spin")
    args = parser.parse_args()
    with cpu_hogs(args.hog, args.hog_nice, args.hog_kind):
        print(json.dumps(calibration()))
