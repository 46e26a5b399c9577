"""Run a policy server until stopped (``factoryfloor edge serve``).

Binds the ROUTER socket (refusing a non-loopback address without keys), sets up CURVE and the
ZAP allow-list when a key folder is given, serves, prints a metrics line every
``report_every_s`` seconds, appends the same snapshots to a JSON-lines file, and optionally
serves Prometheus text on a localhost port. SIGINT/SIGTERM stop it cleanly; if the authenticator
dies it closes the listener and returns ``EXIT_AUTH_DIED``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from factoryfloor.edge_runtime.atomic import atomic_write_bytes
from factoryfloor.edge_runtime.auth import SecurityError, ServerSecurity, check_bind
from factoryfloor.edge_runtime.metrics import (
    JsonLinesWriter,
    MetricsHttpServer,
    resident_memory_mb,
)
from factoryfloor.edge_runtime.protocol import EdgeError
from factoryfloor.edge_runtime.realtime import set_process_realtime
from factoryfloor.edge_runtime.served import ServedPolicy
from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig, configure_router

EXIT_AUTH_DIED = 3


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """How to run the server.

    Attributes:
        keys_dir: CURVE key folder (``factoryfloor edge keygen``), or None on loopback.
        metrics_port: Serve Prometheus text on ``127.0.0.1:PORT/metrics`` (None: off).
        metrics_jsonl: Append a metrics snapshot per report to this file (None: off).
        report_every_s: Seconds between metrics reports (s).
        ready_file: Write the bound endpoint here once serving (for scripts and tests).
        rt_priority: Serve under ``SCHED_FIFO`` at this priority, ZeroMQ's I/O thread too
            (None: the default scheduler). On an edge box that shares its CPUs with other
            work, this keeps the other work from delaying an answer (``docs/deploying.md``).
    """

    keys_dir: Path | None = None
    metrics_port: int | None = None
    metrics_jsonl: Path | None = None
    report_every_s: float = 10.0
    ready_file: Path | None = None
    rt_priority: int | None = None


def check_endpoint(endpoint: str) -> None:
    """Refuse an endpoint that is not ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``.

    Raises:
        EdgeError: Saying what a bind endpoint looks like.
    """
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        raise EdgeError(
            f"--bind {endpoint!r} is not a ZeroMQ endpoint; use tcp://HOST:PORT, e.g. "
            "tcp://127.0.0.1:5555 or tcp://10.0.0.2:5555"
        )


def make_server(
    policy: ServedPolicy, config: ServerConfig, keys_dir: Path | None
) -> tuple[PolicyServer, ServerSecurity | None]:
    """A bound server (secured when ``keys_dir`` is given).

    Raises:
        SecurityError: For a non-loopback endpoint without keys.
        EdgeError: For an endpoint that cannot be bound (malformed, or in use).
    """
    check_endpoint(config.bind)
    check_bind(config.bind, keys_dir)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    security = ServerSecurity(context, keys_dir) if keys_dir is not None else None
    socket = context.socket(zmq.ROUTER)
    configure_router(socket, config)
    if security is not None:
        security.apply(socket)
    try:
        socket.bind(config.bind)
    except zmq.ZMQError as exc:
        socket.close(0)
        hint = (
            "is another server running there? choose another --bind port"
            if exc.errno == zmq.EADDRINUSE
            else "use tcp://HOST:PORT with an address of this machine"
        )
        raise EdgeError(f"cannot bind {config.bind}: {exc.strerror}; {hint}") from None
    return PolicyServer(policy, config, socket, keyed=security is not None), security


def serve(policy: ServedPolicy, config: ServerConfig, options: ServeOptions) -> int:
    """Serve until SIGINT/SIGTERM (exit 0) or the authenticator's death (``EXIT_AUTH_DIED``)."""
    server, security = make_server(policy, config, options.keys_dir)
    if options.rt_priority is not None:
        try:
            set_process_realtime(options.rt_priority)  # after the socket: its I/O thread exists
        except BaseException:
            server.close()
            if security is not None:
                security.stop()
            raise
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: server.stop_event.set())
    http = MetricsHttpServer([server.metrics], options.metrics_port).start() if (
        options.metrics_port is not None
    ) else None  # fmt: skip
    jsonl = JsonLinesWriter(options.metrics_jsonl) if options.metrics_jsonl else None
    if options.ready_file is not None:
        # atomic: a script polling for the file never reads it empty
        atomic_write_bytes(options.ready_file, (server.endpoint + "\n").encode())
    print(f"serving {policy.spec.task_id} ({policy.spec.robot}) on {server.endpoint}", flush=True)
    code, next_report = 0, time.monotonic() + options.report_every_s
    try:
        while not server.stop_event.is_set():
            if security is not None:
                try:
                    security.check()
                except SecurityError as exc:
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                    code = EXIT_AUTH_DIED
                    break
            server.run_once()
            if time.monotonic() >= next_report:
                next_report += options.report_every_s
                _report(server, jsonl)
    finally:
        server.close()  # the listener goes first: nothing is served unchecked
        _report(server, jsonl)
        if security is not None:
            security.stop()
        if http is not None:
            http.close()
    return code


def _report(server: PolicyServer, jsonl: JsonLinesWriter | None) -> None:
    server.metrics.set_gauge("resident_memory_mb", resident_memory_mb())
    snap = server.metrics.snapshot()
    print(_summary_line(snap), flush=True)
    if jsonl is not None:
        jsonl.write(snap)


def _summary_line(snap: dict[str, Any]) -> str:
    c, g = snap["counters"], snap["gauges"]
    inference = snap["latency_us"].get("inference", {})
    rejected = sum(v for k, v in c.items() if k.startswith("rejected_"))
    return (
        f"sessions {int(g.get('sessions', 0))} | actions {c.get('actions_sent', 0)} in "
        f"{c.get('batches', 0)} batches | inference p50 {inference.get('p50', 0):.0f} us "
        f"p99 {inference.get('p99', 0):.0f} us | stale {c.get('observations_stale', 0)} | "
        f"rejected {rejected} | RSS {g.get('resident_memory_mb', 0):.0f} MB"
    )
