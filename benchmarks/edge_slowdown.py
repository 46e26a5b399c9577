"""A slower machine on demand, and the short calibration every edge benchmark prints first.

The edge targets must hold on a machine about 2-3x slower per message than a fast day of this
kind of VM (bare pyzmq ping-pong p50 >= 100 us). When the machine is faster than that, the edge
benchmarks' ``--hog N`` starts N CPU hogs: processes at the default priority (nice 0) that
spin on every CPU of the benchmark, so the servers, which keep the default scheduler, share
their CPU with a busy neighbour and each wake-up, cache and TLB refill costs more, as on a
loaded edge box. A controller under ``SCHED_FIFO`` preempts them, as it would preempt any
other process on a real controller. The calibration (bare ping-pong p50 between two
processes, with the hogs running) says how slow the machine was.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

PING_PONG_PEER = """
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.setsockopt(zmq.LINGER, 0)
print(s.bind_to_random_port("tcp://127.0.0.1"), flush=True)
while True:
    ident, frame = s.recv_multipart()
    s.send_multipart([ident, frame])
    if frame == b"stop": break
"""
HOG = "while True: pass"


@contextlib.contextmanager
def cpu_hogs(n: int, nice: int = 0) -> Iterator[list[int]]:
    """``n`` spinning processes at ``nice`` for the duration; yields their pids.

    Hog ``i`` runs on CPU ``i`` modulo the CPUs this process may use.
    """
    cpus = sorted(os.sched_getaffinity(0))
    procs = []
    for i in range(n):
        cpu = cpus[i % len(cpus)]
        code = f"import os; os.sched_setaffinity(0, {{{cpu}}}); os.nice({nice})\n{HOG}"
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
    try:
        if procs:
            time.sleep(0.3)  # running before anything is measured
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
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
        [sys.executable, "-c", PING_PONG_PEER], stdout=subprocess.PIPE, text=True
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
    sock.recv()
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
    args = parser.parse_args()
    with cpu_hogs(args.hog, args.hog_nice):
        print(json.dumps(calibration()))
