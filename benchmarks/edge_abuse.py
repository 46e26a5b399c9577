"""Edge policy server under hostile peers: a well-behaved 100 Hz controller beside each attack.

The policy server (``PolicyServer`` with the defaults of ``docs/protocol.md`` section 8, serving
a small stateless policy with a 100 Hz spec) runs in a child process, so that its CPU time and
resident memory are read from ``/proc``. A well-behaved victim controller (``ControllerRuntime``
with a stand-in robot and ``EdgeClient``) runs at 100 Hz in this process. Each attack runs in its
own process, so that it competes for the machine's cores as a real peer would:

=================  ===========================================================================
baseline           no attack (measured in the same run: every other row is compared with it)
garbage_flood      random bytes and malformed FFEP frames from one peer, as fast as it can send
never_reading      a valid session that sends valid OBSERVATIONs unpaced and never reads;
                   a new connection (a new session) every few seconds
hello_poison       adversarial HELLOs (5000-digit integers, 1e400, NaN, deep nesting, huge
                   strings, wrong types, duplicate keys, lone surrogates) as fast as it can send
silent_sessions    500 peers each send one valid HELLO, then nothing; then the victim must get
                   its WELCOME within 1 s (it retries on TOO_MANY_SESSIONS)
rehello            64 peers re-send HELLO every 5 s (holding every session slot); the victim
                   must get in within 1 s and run
identities         20,000 short-lived connections each sending one frame; the server's RSS
                   before, after and after a pause must grow by at most 32 MB
=================  ===========================================================================

Each row reports the victim's round trip p50/p99 (us), faults, cycles and held cycles, the
server's CPU (% of one core) and RSS (MB), the attack's frames sent and the server's counters of
interest. A row passes when its victim p99 is at most 2.0 x the baseline p99 of the same run and
the victim had no FAULT (plus the row's own limit above). The exit status is 1 when any row
fails. The calibration line of ``../shared/tools/calibrate.py`` is taken before and after.

Usage::

    python benchmarks/edge_abuse.py --quick                 # about a minute
    python benchmarks/edge_abuse.py --out bench_results/edge_abuse.json   # about 4-5 minutes
    python benchmarks/edge_abuse.py --only baseline,garbage_flood --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import random
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from factoryfloor.edge_runtime.conformance.kit import frame as kit_frame
from factoryfloor.edge_runtime.protocol import HEADER

# Top-level imports stay light (stdlib, numpy, zmq, the codec): every attack process re-imports
# this module ('spawn'); the server and the victim import the rest where they need it.

HELLO, OBSERVATION, HEARTBEAT, ERROR, BYE, DESCRIBE = 1, 3, 5, 6, 7, 8
TOO_MANY_SESSIONS = 14
OBS_FIELDS = [{"name": "observation", "shape": [6], "units": "m"}]
ACT_FIELDS = [
    {"name": "action", "shape": [2], "low": [-1.0, -1.0], "high": [1.0, 1.0], "units": "-"}
]
RATE_HZ = 100.0
P99_RATIO_LIMIT = 2.0
WELCOME_LIMIT_S = 1.0
RSS_GROWTH_LIMIT_MB = 32.0
PEERS_TRACKED_LIMIT = 4_096
CALIBRATE = Path(__file__).resolve().parents[2] / "shared" / "tools" / "calibrate.py"
COUNTERS = (
    "frames_received", "frames_throttled", "frame_failures", "sessions_opened",
    "sessions_evicted", "sessions_expired", "sessions_closed_unread", "sessions_closed_flooding",
    "peers_banned", "error_replies_suppressed", "send_blocked", "observations_superseded",
)  # fmt: skip
GAUGES = ("sessions", "peers_tracked", "resident_memory_mb")


def spec() -> Any:
    """The served interface: 6 observations, 2 actions, 100 Hz (like the tests' ``SPEC``)."""
    from factoryfloor.edge_runtime.spec import PolicySpec

    return PolicySpec(
        task_id="bench/Abuse-v0",
        robot="panda",
        control_rate_hz=RATE_HZ,
        observation=OBS_FIELDS,
        action=ACT_FIELDS,
        model_sha256="ab" * 32,
    )


class LinearPolicy:
    """A stateless policy: action = obs[:2] / 10."""

    def __init__(self) -> None:
        self.spec = spec()

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        """Actions for a batch of observations."""
        return obs[:, :2] / 10.0

    def reset(self, session: int) -> None:
        """Stateless: nothing to forget."""


def frame(mtype: int, payload: bytes = b"", **fields: Any) -> bytes:
    """A frame packed by hand, with no checks (the server must make them): ``kit.frame``."""
    fields.setdefault("seq", 1)
    if "length" in fields:
        fields["payload_len"] = fields.pop("length")
    return kit_frame(mtype, payload, **fields)


def good_hello(controller: str = "peer") -> dict[str, Any]:
    """A HELLO the server accepts."""
    return dict(spec().hello(controller, 20.0, None))


def hello_text(
    overrides: dict[str, str] | None = None, drop: Sequence[str] = (), head: str = ""
) -> bytes:
    """A valid HELLO as JSON text, some values replaced by raw JSON text (``overrides``)."""
    doc = {k: v for k, v in good_hello().items() if k not in drop}
    raws = {}
    for i, (key, raw) in enumerate((overrides or {}).items()):
        marker = f"@@RAW{i}@@"
        doc[key], raws[json.dumps(marker)] = marker, raw
    text = json.dumps(doc, separators=(",", ":"))
    for marker, raw in raws.items():
        text = text.replace(marker, raw)
    if head:
        text = "{" + head + "," + text[1:]
    return text.encode("utf-8")


def poison_hellos() -> list[bytes]:
    """HELLO payloads each of which the server must refuse with BAD_PAYLOAD."""
    big = "9" * 5_000
    out = [hello_text({key: big}) for key in good_hello()]
    out += [
        hello_text({"control_rate_hz": "1e400"}),
        hello_text({"control_rate_hz": "-1e400"}),
        hello_text({"control_rate_hz": "NaN"}),
        hello_text({"hold_window_ms": "Infinity"}),
        hello_text({"junk": "[" * 40 + "]" * 40}),
        hello_text({"junk": '{"a":' * 40 + "1" + "}" * 40}),
        hello_text({}, head='"robot":"panda"'),
        hello_text({"controller": '"\\ud800"'}),
        hello_text({"hold_window_ms": '"twenty"'}),
        hello_text({"controller": json.dumps("c" * 10_000)}),
        hello_text({"junk": json.dumps("x" * 60_000)}),
        hello_text({"observation": '"garbage"'}),
        hello_text({"action": "[1,2,3]"}),
        hello_text({}, drop=("controller", "robot")),
        b'{"controller":"\xff\xfe"}',
        b"[1,2,3]",
        hello_text()[:-9],
    ]
    return out


def garbage_frames(rng: random.Random, n: int) -> list[bytes]:
    """Random bytes and malformed FFEP frames (each one the server must refuse)."""
    obs = struct.pack("<6f", *range(6))
    out = []
    for i in range(n):
        kind = i % 8
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 200)))
        elif kind == 1:
            out.append(frame(OBSERVATION, obs)[: rng.randrange(0, 48)])  # truncated header
        elif kind == 2:
            out.append(frame(OBSERVATION, obs, length=rng.randrange(0, 2**32)))  # wrong length
        elif kind == 3:
            out.append(frame(rng.choice([0, 2, 4, 9, 10, 200, 255]), obs))  # wrong type/direction
        elif kind == 4:
            out.append(frame(OBSERVATION, obs, version=rng.choice([0, 1, 3, 255])))
        elif kind == 5:
            out.append(frame(HEARTBEAT, flags=rng.randrange(1, 2**16)))
        elif kind == 6:
            out.append(frame(OBSERVATION, obs, session=rng.randrange(1, 2**32), seq=i))
        else:
            out.append(frame(OBSERVATION, obs, magic=rng.randbytes(4)))
    return out


# --- the server's process ---------------------------------------------------------------------


def server_main(conn: Any, config: dict[str, Any]) -> None:
    """The policy server's child process: serve, answer ``metrics`` and ``stop`` on ``conn``."""
    from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig

    server = PolicyServer(LinearPolicy(), ServerConfig(bind="tcp://127.0.0.1:0", **config))  # type: ignore[arg-type]
    conn.send(server.endpoint)

    def control() -> None:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                command = "stop"
            if command == "metrics":
                conn.send(server.metrics.snapshot())
            else:
                server.stop_event.set()
                return

    threading.Thread(target=control, daemon=True).start()
    server.serve_forever()
    server.close()


class ServerChild:
    """The policy server in a 'spawn' child process."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=server_main, args=(child, config or {}), daemon=True)
        self.proc.start()
        if not self.conn.poll(60):
            raise RuntimeError("the policy server did not start")
        self.endpoint: str = self.conn.recv()
        self.pid = int(self.proc.pid or 0)

    def alive(self) -> bool:
        """The server process is still running."""
        return self.proc.is_alive()

    def metrics(self) -> dict[str, Any]:
        """The server's metrics snapshot (empty when it does not answer)."""
        try:
            self.conn.send("metrics")
            if self.conn.poll(10):
                return dict(self.conn.recv())
        except (OSError, EOFError):
            pass
        return {}

    def cpu_s(self) -> float:
        """CPU time (user + system) of the server so far (s)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        """Resident memory of the server (MB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def stop(self) -> int | None:
        """Stop the server; its exit code (None: it had to be killed)."""
        with contextlib.suppress(OSError):
            self.conn.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
            return None
        return self.proc.exitcode


# --- attacks (each in its own 'spawn' process) -------------------------------------------------


def dealer(endpoint: str, **options: int) -> zmq.Socket[bytes]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name.upper()), value)
    sock.connect(endpoint)
    return sock


def flood(sock: zmq.Socket[bytes], frames: Sequence[bytes], stop: Any, sent: Any) -> None:
    """Send ``frames`` round and round, unpaced, until ``stop`` (blocking sends, 0.1 s at most)."""
    n, i = 0, 0
    while not stop.is_set():
        try:
            sock.send(frames[i % len(frames)])
        except zmq.Again:
            continue
        i += 1
        n += 1
        if not n & 255:
            sent.value = n
    sent.value = n


def attack_garbage_flood(endpoint: str, stop: Any, ready: Any, sent: Any, args: dict) -> None:
    sock = dealer(endpoint, sndtimeo=100)
    ready.set()
    flood(sock, garbage_frames(random.Random(1), 4_096), stop, sent)
    sock.close(0)


def attack_never_reading(endpoint: str, stop: Any, ready: Any, sent: Any, args: dict) -> None:
    obs = struct.pack("<6f", *range(6))
    n, sessions = 0, 0
    while not stop.is_set():
        sock = dealer(endpoint, rcvhwm=1, rcvbuf=1024, sndtimeo=100)
        sock.send(frame(HELLO, args["hello"]))
        sid = 0
        if sock.poll(2_000):
            raw = sock.recv()  # the WELCOME: the last frame this peer ever reads
            if len(raw) >= HEADER.size:
                sid = HEADER.unpack_from(raw)[5]
        sessions += 1
        ready.set()
        seq, until = 1, time.monotonic() + args["session_s"]
        while not stop.is_set() and time.monotonic() < until:
            seq += 1
            try:
                sock.send(frame(OBSERVATION, obs, session=sid, seq=seq))
            except zmq.Again:
                continue
            n += 1
            if not n & 255:
                sent.value = n
        sock.close(0)
    sent.value = n


def attack_hello_poison(endpoint: str, stop: Any, ready: Any, sent: Any, args: dict) -> None:
    sock = dealer(endpoint, sndtimeo=100)
    ready.set()
    flood(sock, [frame(HELLO, payload) for payload in args["poisons"]], stop, sent)
    sock.close(0)


def attack_silent_sessions(endpoint: str, stop: Any, ready: Any, sent: Any, args: dict) -> None:
    socks = []
    for _ in range(args["peers"]):
        sock = dealer(endpoint)
        sock.send(frame(HELLO, args["hello"]))  # then nothing, ever (not even reading)
        socks.append(sock)
        sent.value += 1
    time.sleep(0.2)  # the HELLOs are in
    ready.set()
    stop.wait()
    for sock in socks:
        sock.close(0)


def attack_rehello(endpoint: str, stop: Any, ready: Any, sent: Any, args: dict) -> None:
    peers, period = args["peers"], args["period_s"]
    socks = [dealer(endpoint) for _ in range(peers)]
    hello = frame(HELLO, args["hello"])
    for sock in socks:
        sock.send(hello)
    sent.value = peers
    start = time.monotonic()
    due = [start + period * (1 + i / peers) for i in range(peers)]  # spread phases
    time.sleep(0.2)
    ready.set()
    while not stop.is_set():
        now = time.monotonic()
        for i, sock in enumerate(socks):
            while sock.poll(0):
                sock.recv()  # WELCOMEs, SESSION_CLOSED, TOO_MANY_SESSIONS: read, ignored
            if now >= due[i]:
                sock.send(hello)
                sent.value += 1
                due[i] += period
        stop.wait(0.01)
    for sock in socks:
        sock.close(0)


def attack_identities(endpoint: str, stop: Any, ready: Any, sent: Any, args: dict) -> None:
    """``count`` connections, 100 at a time, each sending one frame and awaiting its answer."""
    kinds = args["frames"]
    ctx = zmq.Context.instance()
    ready.set()
    n = 0
    while n < args["count"] and not stop.is_set():
        socks = []
        for _ in range(min(100, args["count"] - n)):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            sock.send(kinds[n % len(kinds)])
            socks.append(sock)
            n += 1
        for sock in socks:
            sock.poll(2_000)
            sock.close(0)
        sent.value = n


ATTACKS: dict[str, Callable[..., None] | None] = {
    "baseline": None,
    "garbage_flood": attack_garbage_flood,
    "never_reading": attack_never_reading,
    "hello_poison": attack_hello_poison,
    "silent_sessions": attack_silent_sessions,
    "rehello": attack_rehello,
    "identities": attack_identities,
}


def attack_args(name: str, quick: bool) -> dict[str, Any]:
    hello = hello_text()
    if name == "never_reading":
        return {"hello": hello, "session_s": 2.5}
    if name == "hello_poison":
        return {"poisons": poison_hellos()}
    if name == "silent_sessions":
        return {"hello": hello, "peers": 500}
    if name == "rehello":
        return {"hello": hello, "peers": 64, "period_s": 5.0}
    if name == "identities":
        frames = [
            b"garbage",
            frame(DESCRIBE),
            frame(HEARTBEAT, session=4242, seq=2),
            frame(HELLO, hello),
            frame(HELLO, poison_hellos()[0]),
        ]
        return {"frames": frames, "count": 5_000 if quick else 20_000}
    return {}


# --- the victim --------------------------------------------------------------------------------


def victim(endpoint: str, cycles: int) -> dict[str, Any]:
    """A well-behaved 100 Hz controller: ``cycles`` cycles; a FAULT is counted and re-armed."""
    from factoryfloor.edge_runtime.client import EdgeClient, HandshakeError
    from factoryfloor.edge_runtime.controller import (
        ControllerRuntime,
        ControllerStatus,
        RobotController,
    )

    class StandInRobot(RobotController):
        description = spec()

        def read_state(self) -> tuple[np.ndarray, bool]:
            return np.arange(6, dtype=np.float32), False

        def apply_action(self, action: np.ndarray) -> None:
            pass

        def hold(self, action: np.ndarray) -> None:
            pass

        def brake(self) -> None:
            pass

        def status(self) -> ControllerStatus:
            return ControllerStatus(standstill=True)

    client = EdgeClient(endpoint)
    runtime = ControllerRuntime(StandInRobot(), client, hold_window_s=0.02, name="victim")

    def connect() -> tuple[float | None, int]:
        """Seconds to a WELCOME (retrying while the server is full), and the refusals."""
        t0, refused = time.monotonic(), 0
        while time.monotonic() - t0 < 10.0:
            try:
                runtime.rearm()
                return time.monotonic() - t0, refused
            except HandshakeError as exc:
                refused += 1
                if exc.code not in (TOO_MANY_SESSIONS, None):
                    time.sleep(0.05)
                time.sleep(0.01)
        return None, refused

    welcome_s, refused = connect()
    out: dict[str, Any] = {"welcome_s": welcome_s, "refused_hellos": refused}
    done, faults, reasons, report = 0, 0, [], None
    while welcome_s is not None and done < cycles:
        report = runtime.run(max_cycles=cycles - done)
        done += report.cycles
        if report.state == "FAULT":
            faults += 1
            reasons.append(f"cycle {done}: {report.reason}: {runtime.explain_fault()}")
            if connect()[0] is None:
                break
    stats = client.metrics.latencies.get("round_trip")
    out["round_trip_us"] = stats.summary_us() if stats is not None else None
    out.update(
        cycles=done,
        faults=faults,
        fault_reasons=reasons[:5],
        held=report.safety["held"] if report else 0,
        missed=report.loop["missed"] if report else 0,
        client_counters=dict(client.metrics.counters),
    )
    client.send_bye()
    client.close()
    return out


# --- one row -----------------------------------------------------------------------------------


def run_row(name: str, seconds: float, quick: bool, pause_s: float) -> dict[str, Any]:
    """Start a fresh server, the attack, then the victim; figures of the row."""
    server = ServerChild()
    ctx = mp.get_context("spawn")
    stop, ready, sent = ctx.Event(), ctx.Event(), ctx.Value("q", 0, lock=False)
    proc = None
    row: dict[str, Any] = {"attack": name}
    try:
        time.sleep(0.2)
        row["rss_before_mb"] = server.rss_mb()
        target = ATTACKS[name]
        if target is not None:
            args = attack_args(name, quick)
            proc = ctx.Process(target=target, args=(server.endpoint, stop, ready, sent, args))
            proc.start()
            if not ready.wait(60):
                raise RuntimeError(f"the {name} attack did not start")
            time.sleep(0.5)  # the attack at full strength before the victim connects
        cpu0, wall0 = server.cpu_s(), time.monotonic()
        row["victim"] = victim(server.endpoint, int(seconds * RATE_HZ))
        wall = time.monotonic() - wall0
        row["server_cpu_pct"] = round((server.cpu_s() - cpu0) / wall * 100, 1)
        row["server_rss_mb"] = server.rss_mb()
        if name == "identities" and proc is not None:
            proc.join(300)  # every connection made
            row["rss_after_mb"] = server.rss_mb()
            time.sleep(pause_s)
            row["rss_after_pause_mb"] = server.rss_mb()
        stop.set()
        if proc is not None:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        row["attack_frames"] = int(sent.value)
        row["attack_rate_per_s"] = round(int(sent.value) / max(wall, 1e-9))
        metrics = server.metrics()
        counters = metrics.get("counters", {})
        row["server_counters"] = {k: counters.get(k, 0) for k in COUNTERS}
        row["server_counters"].update(
            {k: v for k, v in sorted(counters.items()) if k.startswith("rejected_")}
        )
        row["server_gauges"] = {k: metrics.get("gauges", {}).get(k) for k in GAUGES}
        row["server_alive"] = server.alive()
    finally:
        stop.set()
        if proc is not None and proc.is_alive():
            proc.kill()
        row["server_exit"] = server.stop()
    return row


def judge(rows: list[dict[str, Any]]) -> None:
    """Add each row's checks and verdict (victim p99 vs the same run's baseline p99)."""
    base = next(r for r in rows if r["attack"] == "baseline")
    base_p99 = (base["victim"]["round_trip_us"] or {}).get("p99") or float("nan")
    for r in rows:
        v = r["victim"]
        p99 = (v["round_trip_us"] or {}).get("p99", float("nan"))
        r["p99_ratio"] = round(p99 / base_p99, 2) if base_p99 == base_p99 else None
        checks = {
            "p99_ratio": r["p99_ratio"] is not None and r["p99_ratio"] <= P99_RATIO_LIMIT,
            "faults": v["faults"] == 0 and v["welcome_s"] is not None,
            "server_alive": r["server_alive"] and r["server_counters"]["frame_failures"] == 0,
        }
        if r["attack"] in ("silent_sessions", "rehello"):
            checks["welcome_s"] = v["welcome_s"] is not None and v["welcome_s"] <= WELCOME_LIMIT_S
        if r["attack"] == "identities":
            growth = max(r["rss_after_mb"], r["rss_after_pause_mb"]) - r["rss_before_mb"]
            r["rss_growth_mb"] = round(growth, 1)
            tracked = r["server_gauges"]["peers_tracked"]
            checks["rss_growth"] = growth <= RSS_GROWTH_LIMIT_MB
            checks["peers_tracked"] = tracked is not None and tracked <= PEERS_TRACKED_LIMIT
        r["checks"] = checks
        r["pass"] = all(checks.values())


def calibration() -> dict[str, Any] | None:
    """The one JSON line of ``../shared/tools/calibrate.py`` (None where it is missing)."""
    if not CALIBRATE.exists():
        return None
    try:
        out = subprocess.run(
            [sys.executable, str(CALIBRATE)], capture_output=True, text=True, timeout=120
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("attack", "p50 us", "p99 us", "ratio", "faults", "cycles", "held", "welcome", "cpu %",
            "rss MB", "frames", "throttled", "evicted", "unread", "rejected", "result")  # fmt: skip
    fmt = "{:<16}{:>8}{:>9}{:>7}{:>7}{:>7}{:>6}{:>8}{:>7}{:>7}{:>10}{:>10}{:>8}{:>7}{:>9}{:>7}"
    print("\n" + fmt.format(*head))
    for r in rows:
        v, c = r["victim"], r["server_counters"]
        trip = v["round_trip_us"] or {"p50": float("nan"), "p99": float("nan")}
        welcome = "-" if v["welcome_s"] is None else f"{v['welcome_s']:.2f}s"
        rejected = sum(n for k, n in c.items() if k.startswith("rejected_"))
        print(
            fmt.format(
                r["attack"], f"{trip['p50']:.0f}", f"{trip['p99']:.0f}",
                "-" if r["p99_ratio"] is None else f"{r['p99_ratio']:.2f}", v["faults"],
                v["cycles"], v["held"], welcome, r["server_cpu_pct"], r["server_rss_mb"],
                r["attack_frames"], c["frames_throttled"], c["sessions_evicted"],
                c["sessions_closed_unread"], rejected, "PASS" if r["pass"] else "FAIL",
            )
        )  # fmt: skip
    for r in rows:
        if r["attack"] == "identities":
            print(
                f"identities: server RSS {r['rss_before_mb']} MB before, {r['rss_after_mb']} MB "
                f"after, {r['rss_after_pause_mb']} MB after a pause (growth {r['rss_growth_mb']} "
                f"MB, limit {RSS_GROWTH_LIMIT_MB}); peers_tracked "
                f"{r['server_gauges']['peers_tracked']} (limit {PEERS_TRACKED_LIMIT})"
            )
        failed = [k for k, ok in r["checks"].items() if not ok]
        if failed:
            print(
                f"{r['attack']}: FAILED {', '.join(failed)}; faults: {r['victim']['fault_reasons']}"
            )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--seconds", type=float, default=None, help="victim run per row (s)")
    parser.add_argument("--only", default="", help="comma-separated attacks (baseline always)")
    parser.add_argument("--out", type=Path, default=Path("bench_results/edge_abuse.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 25.0)
    pause_s = 2.0 if args.quick else 11.0  # > session_timeout_s (10 s): sessions expire
    names = [n for n in ATTACKS if not args.only or n == "baseline" or n in args.only.split(",")]
    from factoryfloor.edge_runtime.server import ServerConfig

    results: dict[str, Any] = {
        "benchmark": "edge_abuse",
        "mode": "quick" if args.quick else "default",
        "victim_seconds_per_row": seconds,
        "server_config": {
            k: v
            for k, v in dataclasses.asdict(ServerConfig()).items()
            if isinstance(v, int | float | str | None)
        },
        "limits": {
            "p99_ratio": P99_RATIO_LIMIT, "welcome_s": WELCOME_LIMIT_S,
            "rss_growth_mb": RSS_GROWTH_LIMIT_MB, "peers_tracked": PEERS_TRACKED_LIMIT,
        },
        "cpus": os.cpu_count(),
        "calibration_before": calibration(),
    }  # fmt: skip
    rows, t0 = [], time.monotonic()
    for i, name in enumerate(names, 1):
        row = run_row(name, seconds, args.quick, pause_s)
        rows.append(row)
        trip = row["victim"]["round_trip_us"] or {}
        print(
            f"[{i}/{len(names)}] {name}: victim p50 {trip.get('p50', 0):.0f} us, p99 "
            f"{trip.get('p99', 0):.0f} us, faults {row['victim']['faults']}, attack frames "
            f"{row['attack_frames']}, server CPU {row['server_cpu_pct']} % "
            f"({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
    judge(rows)
    results["rows"] = rows
    results["calibration_after"] = calibration()
    results["wall_s"] = round(time.monotonic() - t0, 1)
    results["pass"] = all(r["pass"] for r in rows)
    print_table(rows)
    from factoryfloor.policies.atomic import atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)  # a temporary file, then a rename
    print(f"{'PASS' if results['pass'] else 'FAIL'}; wrote {args.out}")
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
