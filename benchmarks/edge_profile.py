"""Where an edge message's time goes: CPU per message by thread and by step, on both sides.

Two parts, in one run:

1. **Processes**: a paced client at ``--rate`` Hz sends ``--seconds`` of messages to (a) a bare
   pyzmq echo server and (b) ``factoryfloor edge serve`` with the pretrained PickPlace bundle.
   The CPU time (user and kernel) of every thread of the server process and of this process
   (the client side) is read from ``/proc`` before and after: CPU per message by thread
   (the Python main thread, ZeroMQ's I/O thread, others). The echo server is the floor that
   ZeroMQ and the kernel set; what the policy server spends above it is ours or onnxruntime's.
2. **Steps**: each step of the server's and the controller's per-message path, timed alone in
   this process (median of ``--repeat`` calls, us): the frame codec, session checks, the safety
   decision, inference.

Usage::

    python benchmarks/edge_profile.py --out bench_results/edge_profile.json
    python benchmarks/edge_profile.py --hog 1   # a slower machine (edge_slowdown.py)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from edge_latency import (
    BUNDLE,
    ECHO_SERVER,
    WARM_UP,
    StandInRobot,
    action_range,
    description,
    paced,
    start_server,
)
from edge_slowdown import calibration, cpu_hogs

from factoryfloor.edge_runtime import fastpath
from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import ControllerRuntime
from factoryfloor.edge_runtime.inference import RowInference
from factoryfloor.edge_runtime.metrics import LatencyStats, Metrics
from factoryfloor.edge_runtime.peers import Peer
from factoryfloor.edge_runtime.server_config import ServerConfig
from factoryfloor.policies.atomic import atomic_write_json

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """(user, kernel) CPU seconds of each thread of ``pid``, by thread name (summed per name)."""
    out: dict[str, tuple[float, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        name = "main" if int(tid) == pid else name
        fields = text.rsplit(")", 1)[1].split()
        user, kernel = int(fields[11]) * TICK_S, int(fields[12]) * TICK_S
        old = out.get(name, (0.0, 0.0))
        out[name] = (old[0] + user, old[1] + kernel)
    return out


def cpu_per_message(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], n: int
) -> dict[str, dict[str, float]]:
    """Per thread name: user and kernel CPU per message (us)."""
    table: dict[str, dict[str, float]] = {}
    for name, (user, kernel) in after.items():
        u0, k0 = before.get(name, (0.0, 0.0))
        table[name] = {
            "user_us": round((user - u0) / n * 1e6, 1),
            "kernel_us": round((kernel - k0) / n * 1e6, 1),
        }
    return table


def profile_echo(rate_hz: float, seconds: float, obs_size: int, action_size: int) -> dict:
    """CPU per message of a bare pyzmq echo server and of its client."""
    echo = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, str(p.HEADER.size + 4 * action_size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(echo.stdout.readline())
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    frame = bytes(p.HEADER.size + 4 * obs_size)

    def trip() -> None:
        sock.send(frame)
        sock.recv()

    paced(1 / rate_hz, int(rate_hz), trip, LatencyStats())  # warm up
    server0, client0 = thread_cpu(echo.pid), thread_cpu(os.getpid())
    n = int(rate_hz * seconds)
    paced(1 / rate_hz, n, trip, LatencyStats())
    n += WARM_UP  # paced also makes its WARM_UP calls, unrecorded
    result = {
        "server": cpu_per_message(server0, thread_cpu(echo.pid), n),
        "client": cpu_per_message(client0, thread_cpu(os.getpid()), n),
    }
    sock.send(b"stop")
    echo.wait(5)
    sock.close()
    return result


def profile_runtime(rate_hz: float, seconds: float) -> dict:
    """CPU per action of ``factoryfloor edge serve`` and of the controller side's loop."""
    desc, obs_size, _ = description(BUNDLE)
    with tempfile.TemporaryDirectory() as tmp:
        proc, endpoint = start_server(Path(tmp))
        try:
            client = EdgeClient(endpoint)
            robot = StandInRobot(desc, np.zeros(obs_size, np.float32))
            runtime = ControllerRuntime(
                robot, client, loop_rate_hz=rate_hz, max_change=action_range(desc)
            )
            runtime.rearm()
            runtime.run(max_cycles=int(rate_hz))  # warm up
            server0, client0 = thread_cpu(proc.pid), thread_cpu(os.getpid())
            n = int(rate_hz * seconds)
            report = runtime.run(max_cycles=n)
            result = {
                "server": cpu_per_message(server0, thread_cpu(proc.pid), n),
                "client": cpu_per_message(client0, thread_cpu(os.getpid()), n),
                "state": report.state,
                "held": report.safety["held"],
            }
            client.send_bye()
            client.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return result


def median_us(call: Callable[[], Any], repeat: int) -> float:
    """Median duration of ``call()`` over ``repeat`` calls, in batches of 20 (us)."""
    times = []
    for _ in range(max(1, repeat // 20)):
        t0 = time.perf_counter()
        for _ in range(20):
            call()
        times.append((time.perf_counter() - t0) / 20)
    return round(float(np.median(times)) * 1e6, 2)


def step_costs(repeat: int) -> dict[str, dict[str, float]]:
    """Each per-message step of both sides, timed alone (us): the kernels both ways."""
    desc, obs_size, action_size = description(BUNDLE)
    bundle = load_bundle(BUNDLE)
    obs = np.zeros((1, obs_size), np.float32)
    obs_codec = p.StreamCodec(p.MsgType.OBSERVATION, 7, obs_size)
    act_codec = p.StreamCodec(p.MsgType.ACTION, 7, action_size)
    obs_frame = obs_codec.encode(5, 0, time.monotonic_ns(), 0, obs.tobytes())
    action = np.zeros(action_size, np.float32)
    act_frame = act_codec.encode(3, 5, time.monotonic_ns(), time.monotonic_ns(), action.tobytes())
    budget = ServerConfig().budget(desc.control_rate_hz)
    peer = Peer.fresh(budget, time.monotonic())
    metrics = Metrics("profile")
    rows = RowInference(bundle, 8)
    obs_rows, act_rows = np.zeros((8, obs_size), np.float32), np.zeros((8, action_size), np.float32)
    server: dict[str, Callable[[], Any]] = {
        "StreamCodec.flags_of + TAIL.unpack_from": lambda: (
            obs_codec.flags_of(obs_frame),
            p.TAIL.unpack_from(obs_frame, p.FIXED_HEAD),
        ),
        "np.frombuffer + np.isfinite().all()": lambda: np.isfinite(
            np.frombuffer(obs_frame, "<f4", offset=48)
        ).all(),
        "Peer.admit (token bucket)": lambda: peer.admit(budget, time.monotonic()),
        "Metrics.count": lambda: metrics.count("frames_received"),
        "Metrics.observe": lambda: metrics.observe("inference", 1e-5),
        "inference: InferenceSession.run (act_flat, B=1)": lambda: bundle.act_flat(obs),
        "inference: RowInference.run (IOBinding, B=1)": lambda: rows.run([0]),
        "inference: RowInference.run (IOBinding, B=8)": lambda: rows.run(list(range(8))),
        "StreamCodec.encode + tobytes (ACTION)": lambda: act_codec.encode(
            4, 5, 1, 2, action.tobytes()
        ),
        "time.monotonic_ns": time.monotonic_ns,
    }
    kernels = [("reference", fastpath.ReferenceGate, fastpath.ReferenceEncoder)]
    if fastpath.COMPILED:
        kernels.append(("compiled", fastpath.CompiledGate, fastpath.CompiledEncoder))
    for name, gate_type, encoder_type in kernels:
        gate = gate_type(obs_codec, fastpath.SEQ, obs_rows)
        encoder = encoder_type(act_codec, act_rows)
        server[f"{name}: gate.check (frame, seq, finite, copy)"] = functools.partial(
            gate.check, obs_frame, 4, fastpath.U64_MAX, 0
        )
        server[f"{name}: encoder.encode (ACTION)"] = functools.partial(
            encoder.encode, 4, 5, 1, 2, 0
        )
    robot = StandInRobot(desc, obs[0])
    runtime = ControllerRuntime(robot, _NoClient(), max_change=action_range(desc))  # type: ignore[arg-type]
    runtime.safety.rearm(time.monotonic())
    controller: dict[str, Callable[[], Any]] = {
        "read_state (stand-in)": robot.read_state,
        "encode_floats + StreamCodec.encode (OBSERVATION)": lambda: obs_codec.encode(
            5, 0, 1, 0, p.encode_floats(obs[0])
        ),
        "SafetyLayer.decide (fresh action)": lambda: runtime.safety.decide(
            time.monotonic(), action
        ),
        "Metrics.observe (round trip)": lambda: metrics.observe("round_trip", 1e-4),
    }
    cfg = runtime.safety.config
    limits = (cfg.low, cfg.high, cfg.max_change, cfg.norm_limits)
    for name, gate_type, limiter_type in [
        ("reference", fastpath.ReferenceGate, fastpath.ReferenceLimiter)
    ] + (
        [("compiled", fastpath.CompiledGate, fastpath.CompiledLimiter)] if fastpath.COMPILED else []
    ):
        gate = gate_type(act_codec, fastpath.ACK_SEQ, act_rows)
        limiter = limiter_type(*limits)
        controller[f"{name}: gate.check (ACTION)"] = functools.partial(
            gate.check, act_frame, 4, 6, 0
        )
        controller[f"{name}: limiter.limit"] = functools.partial(limiter.limit, action, action)
    return {
        "server": {k: median_us(v, repeat) for k, v in server.items()},
        "controller": {k: median_us(v, repeat) for k, v in controller.items()},
    }


class _NoClient:
    """Stands in for the wire where only the safety layer is timed."""

    session_closed = ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="paced rate (Hz)")
    parser.add_argument("--seconds", type=float, default=8.0, help="paced seconds per side")
    parser.add_argument("--repeat", type=int, default=20_000, help="calls per step timing")
    parser.add_argument("--hog", type=int, default=0, help="ping-pong hog pairs (edge_slowdown)")
    parser.add_argument("--out", type=Path, default=Path("bench_results/edge_profile.json"))
    return parser.parse_args(argv)


def print_side(title: str, table: dict[str, dict[str, float]]) -> None:
    print(f"  {title}")
    for name, row in sorted(table.items()):
        if row["user_us"] or row["kernel_us"]:
            user, kernel = row["user_us"], row["kernel_us"]
            print(f"    {name:<22} user {user:7.1f} us  kernel {kernel:7.1f} us")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with cpu_hogs(args.hog, 0, "pingpong"):
        result: dict[str, Any] = {"calibration": calibration(), "rate_hz": args.rate}
        print(f"calibration: bare ping-pong p50 {result['calibration']['ping_pong_p50_us']} us")
        result["echo"] = profile_echo(args.rate, args.seconds, *description(BUNDLE)[1:])
        result["runtime"] = profile_runtime(args.rate, args.seconds)
        result["steps"] = step_costs(args.repeat)
    result["compiled"] = fastpath.COMPILED
    for name in ("echo", "runtime"):
        print(f"{name}: CPU per message at {args.rate:.0f} Hz, by thread")
        print_side("server process", result[name]["server"])
        print_side("client process", result[name]["client"])
    for side, steps in result["steps"].items():
        print(f"{side} steps, each alone (median us)")
        for step, us in steps.items():
            print(f"    {step:<52} {us:8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    print(json.dumps(result["calibration"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
