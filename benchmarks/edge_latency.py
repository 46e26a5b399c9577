"""Edge runtime latency and loop timing, against bare pyzmq and bare inference in the same run.

Measures, with the server in its own process as on an edge box:

1. bare pyzmq DEALER/ROUTER ping-pong over loopback TCP with the runtime's payload sizes (a
   48-byte header plus the observation, the header plus the action back);
2. bare bundle inference (one observation, ``RowInference.run``: the server's own call, on
   preallocated rows with onnxruntime IOBinding);
3. the full runtime round trip (``EdgeClient`` -> ``factoryfloor edge serve`` -> ACTION);
4. the controller loop (``ControllerRuntime`` with a stand-in robot) at 100, 250, 500 and
   1000 Hz: deadline-miss rate, longest run of misses, round trip;
5. 8 robots at 100 Hz (8 controller processes) served by one server process;
6. the server's CPU time per action against the CPU time per message of the bare echo server
   plus bare inference's, over the same paced turns, and its resident memory.

The table opens with the calibration of the run: the bare ping-pong p50 under the run's own
conditions (and the shared calibration line of the quiet machine in the JSON). On a machine
faster than the edge targets' slow reference (ping-pong p50 >= 100 us), ``--hog 2 --hog-nice
19`` slows it (``edge_slowdown.py``).

At each rate the bare peers and the runtime take turns (``--rounds`` turns, 10 by default: bare
ping-pong, bare inference, then a fresh session's loop), so that the machine's noise, which comes
in bursts on a shared or virtual machine, falls on both sides of the comparison alike; each side's
samples are pooled over the turns (30 s of each per rate by default). ``--rt-priority N`` runs
the controller side (loops and the bare peers' client) under ``SCHED_FIFO``, as a real
controller would, and both servers (the policy server through its own ``--rt-priority``, the
echo server alike) under ``SCHED_FIFO`` ten below it, as an edge box serving robots runs them.
``--pin`` puts the controller side (this process) on the first CPU and the servers (policy
server, echo server) on the last, as an edge box that runs both would: a thread then wakes its
own process's other threads on the same core. The fleet (8 controller processes and the
server) is not pinned; its loops run ``SCHED_FIFO`` 20 below N. The JSON records the
scheduler and the pinning used.

Targets (``edge_latency_report.py``): runtime p99 <= 1.5 x (ping-pong p99 + inference p99) at
every rate; miss rate <= 0.1% at 500 Hz; 8 robots x 100 Hz with p99 < 2 ms; server CPU per
action <= 1.5 x (echo + inference); server RSS <= 150 MB. Prints a table and writes JSON.

Usage::

    python benchmarks/edge_latency.py --rt-priority 80 --pin  # as `make bench-edge` runs it
    python benchmarks/edge_latency.py --out bench_results/edge_latency_default.json  # no RT
    python benchmarks/edge_latency.py --loop-seconds 3 --bare-seconds 3 --fault-runs 2  # a look
    python benchmarks/edge_latency.py --rt-priority 80 --pin --hog 1  # a slower machine
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
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import (
    ControllerRuntime,
    ControllerStatus,
    RobotController,
)
from factoryfloor.edge_runtime.loop import LoopStats
from factoryfloor.edge_runtime.metrics import LatencyStats
from factoryfloor.edge_runtime.protocol import EdgeError
from factoryfloor.edge_runtime.realtime import (
    realtime_priority,
    scheduling_policy,
    set_realtime_priority,
    set_threads_realtime,
)
from factoryfloor.edge_runtime.safety import State
from factoryfloor.edge_runtime.served import BundleServedPolicy
from factoryfloor.edge_runtime.spec import PolicySpec
from factoryfloor.policies.atomic import atomic_write_json

sys.path.insert(0, str(Path(__file__).parent))
from edge_latency_report import print_table, targets
from edge_slowdown import ECHO_SERVER, HOGS, cpu_hogs, machine_calibration

BUNDLE = str(files("factoryfloor.policies") / "pretrained" / "pick_place_panda.ffpolicy")
RATES_HZ = (100, 250, 500, 1000)
WARM_UP = 50  # calls or cycles after each start that are not measured, on both sides alike


class StandInRobot(RobotController):
    """A robot that reports a fixed state and applies commands to nothing (timing only)."""

    def __init__(self, description: PolicySpec, state: np.ndarray) -> None:
        self.description, self.state = description, state

    def read_state(self) -> tuple[np.ndarray, bool]:
        """The fixed state; never an episode start."""
        return self.state, False

    def apply_action(self, action: np.ndarray) -> None:
        """Nothing to move."""

    def hold(self, action: np.ndarray) -> None:
        """Nothing to move."""

    def brake(self) -> None:
        """Nothing to stop."""

    def status(self) -> ControllerStatus:
        """Always still, never finished."""
        return ControllerStatus(standstill=True)


def action_range(desc: PolicySpec) -> np.ndarray:
    """``high - low`` of the action: a rate limit that limits nothing."""
    (act,) = desc.action
    return np.asarray(act["high"], np.float32) - np.asarray(act["low"], np.float32)


def description(bundle_path: str) -> tuple[PolicySpec, int, int]:
    """The HELLO description matching the bundle, and its observation and action sizes."""
    spec = PolicySpec.from_manifest(load_bundle(bundle_path, backend="numpy").manifest)
    return spec, spec.obs_size, spec.action_size


def paced(period_s: float, n: int, call: Any, stats: LatencyStats) -> None:
    """Add to ``stats`` the durations of ``call()`` made ``n`` times, once per ``period_s``.

    ``period_s`` 0 calls back to back; the first ``WARM_UP`` calls are not recorded.
    """
    due = time.monotonic()
    for i in range(n + WARM_UP):
        due += period_s
        if period_s:
            time.sleep(max(0.0, due - time.monotonic()))
        t0 = time.perf_counter()
        call()
        if i >= WARM_UP:
            stats.add(time.perf_counter() - t0)


SERVER_BELOW = 10  # with --rt-priority N, the servers (policy and echo) run SCHED_FIFO N - 10
SERVER_CPUS: set[int] | None = None  # where servers run (--pin); None: anywhere
ALL_CPUS = os.sched_getaffinity(0)  # where this process could run before any pinning


def pin_process(pid: int, cpus: set[int] | None) -> None:
    """Put every thread ``pid`` has now (ZeroMQ's I/O threads too) on ``cpus`` (None: no-op)."""
    if cpus is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def pinning(pin: bool) -> dict[str, list[int]] | None:
    """With ``pin``, put this process on the first CPU and the servers on the last."""
    global SERVER_CPUS
    cpus = sorted(ALL_CPUS)
    if not pin or len(cpus) < 2:
        if pin:
            print("warning: --pin needs two CPUs; measuring unpinned", file=sys.stderr)
        return None
    SERVER_CPUS = {cpus[-1]}
    pin_process(os.getpid(), {cpus[0]})  # before ZeroMQ starts its threads: they inherit it
    return {"controller": [cpus[0]], "servers": [cpus[-1]]}


class BarePeers:
    """The two bare peers: a pyzmq echo server process and in-process bundle inference.

    ``measure(period_s, seconds)`` adds paced samples of both to the statistics of that
    period, so runs before and after the runtime's loop pool into one distribution.
    """

    def __init__(self, obs_size: int, action_size: int, rt_priority: int = 0) -> None:
        import zmq

        self.echo = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER, str(p.HEADER.size + 4 * action_size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(self.echo.stdout.readline())
        pin_process(self.echo.pid, SERVER_CPUS)
        if rt_priority:  # the same scheduling as the policy server's
            set_threads_realtime(rt_priority, self.echo.pid)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.frame = bytes(p.HEADER.size + 4 * obs_size)
        # the server's own inference call: preallocated rows, onnxruntime IOBinding
        self.rows = BundleServedPolicy(load_bundle(BUNDLE)).rows(1)
        self.ping_pong: dict[str, LatencyStats] = {}
        self.inference: dict[str, LatencyStats] = {}
        self.echo_cpu_s = self.inference_cpu_s = 0.0  # over the paced turns
        self.paced_calls = 0

    def _round_trip(self) -> None:
        self.sock.send(self.frame)
        self.sock.recv()

    def _infer(self) -> None:
        t0 = time.thread_time()  # onnxruntime runs on the calling thread (one intra-op thread)
        self.rows.run([0])
        self.inference_cpu_s += time.thread_time() - t0

    def measure(self, name: str, period_s: float, n: int) -> None:
        """``n`` paced ping-pongs, then ``n`` paced inferences, pooled under ``name``.

        Paced turns also add up the echo server's CPU time and inference's thread CPU time.
        """
        echo0 = proc_cpu_s(self.echo.pid)
        paced(period_s, n, self._round_trip, self.ping_pong.setdefault(name, _stats()))
        if period_s:
            self.echo_cpu_s += proc_cpu_s(self.echo.pid) - echo0
            self.paced_calls += n + WARM_UP
        cpu0 = self.inference_cpu_s
        paced(period_s, n, self._infer, self.inference.setdefault(name, _stats()))
        if not period_s:
            self.inference_cpu_s = cpu0  # back-to-back calls are not the paced turns' peers

    def close(self) -> None:
        """Stop the echo server."""
        self.sock.send(b"stop")
        self.echo.wait(5)
        self.sock.close()


def _stats() -> LatencyStats:
    """Statistics that keep every sample of a run (percentiles over all of them)."""
    return LatencyStats(window=1_000_000)


def start_server(folder: Path, rt_priority: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """``factoryfloor edge serve`` of the bundle (``--rt-priority`` when given); its endpoint."""
    ready = folder / "ready"
    cmd = [
        sys.executable,
        "-m",
        "factoryfloor.cli",
        "edge",
        "serve",
        "--policy",
        BUNDLE,
        "--bind",
        "tcp://127.0.0.1:0",
        "--ready-file",
        str(ready),
        "--report-every",
        "3600",
        *(("--rt-priority", str(rt_priority)) if rt_priority else ()),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError("the policy server did not start")
        time.sleep(0.05)
    pin_process(proc.pid, SERVER_CPUS)
    return proc, ready.read_text().strip()


def proc_cpu_s(pid: int) -> float:
    """CPU time (user + system) of a process so far (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _round_trip_samples(client: EdgeClient) -> list[float]:
    stats = client.metrics.latencies.get("round_trip")
    return list(stats.samples) if stats is not None else []


def warm_up(runtime: ControllerRuntime, tries: int = 3) -> int:
    """``WARM_UP`` cycles, not measured (like the bare peers' first calls); FAULTs re-armed.

    A cold start on a loaded machine can spend the hold window before its first action (the
    safety layer then latches FAULT, as it should); that is counted and re-armed, as an
    operator would, up to ``tries`` times. Returns the FAULTs.
    """
    for fault in range(tries + 1):
        if all(runtime.cycle().state is not State.FAULT for _ in range(WARM_UP)):
            return fault
        if fault < tries:
            runtime.rearm()
    return tries + 1


def run_loop(
    endpoint: str,
    rate_hz: float,
    seconds: float,
    rt_priority: int = 0,
    rounds: int = 1,
    between: Any = None,
) -> dict[str, Any]:
    """The controller loop at ``rate_hz`` against the server, ``seconds`` of cycles in all.

    With ``rounds`` > 1 the cycles are cut into that many rounds, each a fresh session (``rearm``)
    and a continuous loop, and ``between()`` runs before each round: the bare peers measured in
    between see the same machine conditions as the runtime. The first ``WARM_UP`` cycles of each
    round are not measured (as the bare peers' first calls are not). Loop figures are pooled.
    """
    desc, obs_size, _ = description(BUNDLE)
    robot = StandInRobot(desc, np.zeros(obs_size, np.float32))
    client = EdgeClient(endpoint)
    # The loop runs a stateless policy faster than its rate (a timing study): the robot's rate
    # limits, which hold per policy period, are off (the action range); the safety layer's
    # decisions are timed all the same.
    runtime = ControllerRuntime(
        robot, client, hold_window_s=0.02, loop_rate_hz=rate_hz, rt_priority=rt_priority or None,
        max_change=action_range(desc),
    )  # fmt: skip
    pooled, lateness, round_trips, held, states = LoopStats(), _stats(), _stats(), 0, []
    warm_up_faults = 0
    for _ in range(rounds):
        if between is not None:
            between()
        runtime.rearm()  # a fresh session, safety state and due-time grid after the pause
        with realtime_priority(rt_priority or None):
            warm_up_faults += warm_up(runtime)
            runtime.loop.stats = LoopStats()  # figures from here on; the same due-time grid
            trips = client.metrics.latencies.get("round_trip")
            seen = len(trips.samples) if trips is not None else 0  # no copy between cycles
            report = runtime.run(max_cycles=int(rate_hz * seconds / rounds))
        for sample in _round_trip_samples(client)[seen:]:
            round_trips.add(sample)
        stats = runtime.loop.stats
        pooled.cycles += stats.cycles
        pooled.overruns += stats.overruns
        pooled.skipped += stats.skipped
        pooled.longest_miss_run = max(pooled.longest_miss_run, stats.longest_miss_run)
        for sample in stats.lateness.samples:
            lateness.add(sample)
        held += report.safety["held"]
        states.append((report.state, report.reason))
    counters = client.metrics.counters  # every action the server sent, warm-up included
    answered = sum(counters[k] for k in ("actions_accepted", "actions_stale_or_replayed",
                                         "actions_too_old", "actions_nonfinite"))  # fmt: skip
    client.send_bye()
    client.close()
    worst = next((s for s in states if s[0] == "FAULT"), states[-1])
    return {
        "rate_hz": rate_hz,
        "rounds": rounds,
        "state": worst[0],
        "reason": worst[1],
        "cycles": pooled.cycles,
        "missed": pooled.missed,
        "miss_rate": pooled.miss_rate,
        "longest_miss_run": pooled.longest_miss_run,
        "lateness_us": lateness.summary_us(),
        "round_trip_us": round_trips.summary_us(),
        "held": held,
        "warm_up_faults": warm_up_faults,
        "actions_answered": answered,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--loop-seconds", type=float, default=30.0, help="per loop rate (s)")
    parser.add_argument("--samples", type=int, default=20_000, help="back-to-back samples")
    parser.add_argument(
        "--bare-seconds",
        type=float,
        default=30.0,
        help="paced bare runs per rate (s), cut into the rounds",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="turns per rate: bare peers, then the runtime's loop, this many times",
    )
    parser.add_argument("--fault-runs", type=int, default=6, help="server kills/stops injected")
    parser.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        help="run the controller loops (and the bare peers' client side) under SCHED_FIFO at "
        "this priority, as a real controller would (0: the default scheduler)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="controller side on the first CPU, servers on the last (both sides of the "
        "comparison alike)",
    )
    parser.add_argument(
        "--hog",
        type=int,
        default=0,
        help="CPU hogs to run beside the benchmark, one per CPU in turn (a slower machine: "
        "benchmarks/edge_slowdown.py)",
    )
    parser.add_argument("--hog-nice", type=int, default=0, help="nice value of the hogs")
    parser.add_argument(
        "--hog-kind", choices=sorted(HOGS), default="pingpong", help="edge_slowdown.HOGS"
    )
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="measure the back-to-back ping-pong under these conditions, print it and stop",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_results/edge_latency.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _, obs_size, action_size = description(BUNDLE)
    results: dict[str, Any] = {"bundle": BUNDLE, "obs_size": obs_size, "action_size": action_size}
    results["calibration_quiet"] = machine_calibration()  # before the hogs, if any
    results["pinning"] = pinning(args.pin)
    results["conditions"] = (
        (f"{args.hog} {args.hog_kind} hog(s) at nice {args.hog_nice}" if args.hog else "no hog")
        + (", pinned" if results["pinning"] else "")
        + (
            f", SCHED_FIFO {args.rt_priority} (servers {args.rt_priority - SERVER_BELOW})"
            if args.rt_priority
            else ""
        )
    )
    with cpu_hogs(args.hog, args.hog_nice, args.hog_kind), tempfile.TemporaryDirectory() as tmp:
        for i in range(args.fault_runs):
            (Path(tmp) / f"fault{i}").mkdir()
        results["faults"] = fault_injection(Path(tmp), args.fault_runs)
        if args.rt_priority:  # after the faults: their simulated cells need not run real time
            try:
                set_realtime_priority(args.rt_priority)
            except EdgeError as exc:  # measure anyway, and say which scheduler was measured
                print(f"warning: {exc}; measuring under the default scheduler", file=sys.stderr)
                args.rt_priority = 0
        results["scheduling"] = scheduling_policy()
        server_rt = max(1, args.rt_priority - SERVER_BELOW) if args.rt_priority else 0
        peers = BarePeers(obs_size, action_size, server_rt)
        proc, endpoint = start_server(Path(tmp), server_rt)
        try:
            peers.measure("back_to_back", 0.0, args.samples)
            if args.calibrate_only:
                summary = peers.ping_pong["back_to_back"].summary_us()
                print(f"{results['conditions']}: ping-pong p50 {summary['p50']:.1f} us, "
                      f"p99 {summary['p99']:.1f} us")  # fmt: skip
                return 0
            cpu0, loops = proc_cpu_s(proc.pid), []
            for rate in RATES_HZ:  # bare peers and runtime take turns: the same conditions
                n = int(rate * args.bare_seconds / args.rounds)
                between = functools.partial(peers.measure, f"{rate}hz", 1 / rate, n)
                loop = run_loop(
                    endpoint, rate, args.loop_seconds, args.rt_priority, args.rounds, between
                )
                loops.append(loop)
            results["loops"] = loops
            cpu1, single = proc_cpu_s(proc.pid), sum(r["actions_answered"] for r in loops)
            # a server box for robots that have their own machines: no pinning; with
            # --rt-priority the 8 loops run SCHED_FIFO below the server, so that no robot's
            # loop delays its answers (real robots' loops run on their own CPUs)
            pin_process(proc.pid, ALL_CPUS if SERVER_CPUS else None)
            fleet_rt = max(1, server_rt - SERVER_BELOW) if server_rt else 0
            results["robots_8x100hz"] = fleet(endpoint, 8, 100.0, args.loop_seconds, fleet_rt)
            fleet_actions = results["robots_8x100hz"]["actions"]
            results["cpu_us_per_message"] = {
                "server_per_action": round((cpu1 - cpu0) / single * 1e6, 1),
                "server_per_action_fleet": round(
                    (proc_cpu_s(proc.pid) - cpu1) / fleet_actions * 1e6, 1
                ),
                "bare_echo": round(peers.echo_cpu_s / peers.paced_calls * 1e6, 1),
                "bare_inference": round(peers.inference_cpu_s / peers.paced_calls * 1e6, 1),
            }
            results["server_rss_mb"] = round(proc_rss_mb(proc.pid), 1)
        finally:
            proc.terminate()
            proc.wait(10)
            peers.close()
    results["ping_pong_us"] = {k: v.summary_us() for k, v in peers.ping_pong.items()}
    results["inference_us"] = {k: v.summary_us() for k, v in peers.inference.items()}
    results["targets"] = targets(results)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0 if all(t["met"] for t in results["targets"].values()) else 1


def fault_injection(folder: Path, kills: int) -> dict[str, Any]:
    """SIGKILL / SIGSTOP of the server mid-episode: detection time and time to standstill (ms)."""
    import signal

    from factoryfloor.stack.sim_cell import SimController

    rows = []
    for i in range(kills):
        how = ("SIGKILL", "SIGSTOP")[i % 2]
        proc, endpoint = start_server(folder / f"fault{i}")
        controller = SimController("factoryfloor/PickPlace-v0", episodes=100, seed=5_000_000 + i)
        client = EdgeClient(endpoint)
        runtime = ControllerRuntime(controller, client, hold_window_s=0.02)
        runtime.rearm()
        for _ in range(15):  # mid-episode, the arm moving
            runtime.cycle()
        proc.send_signal(getattr(signal, how))
        cycles = 0
        while runtime.safety.state.value != "FAULT" and cycles < 500:
            runtime.cycle()
            cycles += 1
        report = runtime.report(cycles)
        detected_s, still_s = report.fault_detected_after_s or 0, report.standstill_after_s or 0
        rows.append(
            {
                "signal": how,
                "state": report.state,
                "reason": report.reason,
                "detected_ms": round(detected_s * 1e3, 1),
                "standstill_ms": round(still_s * 1e3, 1),
            }
        )
        if how == "SIGSTOP":
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        client.close()
        controller.close()
    detected = [r["detected_ms"] for r in rows] or [0.0]
    standstill = [r["standstill_ms"] for r in rows] or [0.0]
    return {
        "injected": len(rows), "faulted": sum(r["state"] == "FAULT" for r in rows),
        "detected_ms": {"median": float(np.median(detected)), "max": max(detected)},
        "standstill_ms": {"median": float(np.median(standstill)), "max": max(standstill)},
        "runs": rows,
    }  # fmt: skip


FLEET_CHILD = """
import json, os, sys, time
os.sched_setaffinity(0, {cpus!r})  # 8 robots, on their own machines in a plant: not pinned
sys.path.insert(0, {here!r})
from edge_latency import run_loop
print("ready", flush=True)
sys.stdin.read()  # all robots start together (at EOF), after every interpreter has started
time.sleep(float(sys.argv[5]))  # robot i's phase: i / robots of a period
print(json.dumps(run_loop(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))))
"""


def fleet(
    endpoint: str, robots: int, rate_hz: float, seconds: float, rt_priority: int = 0
) -> dict[str, Any]:
    """``robots`` controller processes at ``rate_hz`` against one server.

    The robots start their loops once all have started (8 interpreters importing at once would
    otherwise load a small machine during the first robots' measured cycles), robot ``i`` at
    ``i / robots`` of a period, as independent robots' phases spread.
    """
    code = FLEET_CHILD.format(here=str(Path(__file__).parent), cpus=sorted(ALL_CPUS))
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", code, endpoint),
                *(str(rate_hz), str(seconds), str(rt_priority), str(i / robots / rate_hz)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(robots)
    ]
    pipes = [(proc.stdin, proc.stdout) for proc in procs if proc.stdin and proc.stdout]
    if any(out.readline().strip() != "ready" for _, out in pipes):
        raise RuntimeError("a fleet controller did not start")
    for into, _ in pipes:  # go
        into.close()
    reports = [json.loads(out.read().strip().splitlines()[-1]) for _, out in pipes]
    for proc in procs:
        proc.wait()
    p99s = [r["round_trip_us"]["p99"] for r in reports]
    return {
        "robots": robots,
        "rate_hz": rate_hz,
        "actions": sum(r["cycles"] for r in reports),
        "round_trip_p50_us_median": float(np.median([r["round_trip_us"]["p50"] for r in reports])),
        "round_trip_p99_us_worst": max(p99s),
        "miss_rate_worst": max(r["miss_rate"] for r in reports),
        "faults": sum(r["state"] == "FAULT" for r in reports),
        "warm_up_faults": sum(r["warm_up_faults"] for r in reports),
        "per_robot": reports,
    }


if __name__ == "__main__":
    raise SystemExit(main())
