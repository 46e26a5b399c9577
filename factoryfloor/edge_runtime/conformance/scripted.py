"""The kit's own scripted FFEP/2 server, and the controller process under test.

``ScriptedServer`` is a bare ROUTER speaking a ``PolicySpec``: it answers only what a scenario
tells it to, so it can misbehave on purpose (a wrong WELCOME, NaN actions, garbage, silence,
``SESSION_CLOSED``). ``Script`` is one scenario's run: the controller process started with the
endpoint, its HELLO, and the frames it sends, each stamped with the kit's monotonic clock.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import zmq

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.conformance.kit import CheckFailed, expect
from factoryfloor.edge_runtime.spec import PolicySpec

KIT_MODEL = "c0" * 32  # the model the kit says it serves when the controller pins none


class Frame(NamedTuple):
    """One frame from the controller.

    Attributes:
        t_s: Kit's monotonic clock on arrival (s).
        msg: The decoded message, or None when it broke the protocol.
        error: Why it could not be decoded ("" when it could).
    """

    t_s: float
    msg: p.Message | None
    error: str


@dataclass
class ControllerTarget:
    """The controller under test and the server the kit plays.

    Attributes:
        command: The controller's command line, with ``{endpoint}`` where the endpoint goes.
        spec: The interface the kit serves.
        bind: Endpoint the kit binds (port 0: any free port).
        hello_timeout_s: How long a started controller has to send HELLO (s).
        max_action_age_ms: Sent in WELCOME (ms).
        first_hello: The first HELLO seen (filled in by the scenarios).
    """

    command: str
    spec: PolicySpec
    bind: str = "tcp://127.0.0.1:0"
    hello_timeout_s: float = 20.0
    max_action_age_ms: float = 50.0
    first_hello: dict[str, Any] | None = field(default=None)


class ScriptedServer:
    """A ROUTER socket with a controller's frames read one at a time (one peer at a time)."""

    def __init__(self, bind: str) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(bind)
        self.identity = b""

    @property
    def endpoint(self) -> str:
        """The bound endpoint (with the real port)."""
        return str(self.socket.getsockopt_string(zmq.LAST_ENDPOINT))

    def recv(self, timeout_s: float) -> Frame | None:
        """The next frame (remembering its sender), or None when none came in time."""
        if not self.socket.poll(max(int(timeout_s * 1e3), 0)):
            return None
        parts = self.socket.recv_multipart()
        now = time.monotonic()
        self.identity = parts[0]
        if len(parts) != 2:
            return Frame(now, None, f"a multipart message of {len(parts) - 1} parts")
        try:
            return Frame(now, p.decode(parts[1]), "")
        except p.ProtocolError as exc:
            return Frame(now, None, str(exc))

    def send(self, data: bytes) -> None:
        """Send one frame to the last sender."""
        self.socket.send_multipart([self.identity, data], zmq.NOBLOCK)

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(0)


class ControllerProcess:
    """The controller command, started with the endpoint; its output kept for failure lines."""

    def __init__(self, command: str, endpoint: str) -> None:
        argv = shlex.split(command.replace("{endpoint}", endpoint))
        if not argv:
            raise ValueError("--controller is empty; give the command that starts the controller")
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        """Its last line of output, or its exit status."""
        self.log.seek(0)
        lines = self.log.read().decode("utf-8", "replace").strip().splitlines()
        status = self.process.poll()
        ended = f"exited with status {status}" if status is not None else "still running"
        return f"{ended}; last output: {lines[-1][:200]!r}" if lines else ended

    def stop(self) -> None:
        """Terminate, then kill after 2 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(2.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(2.0)
        self.log.close()


class Script:
    """One scenario against one controller process.

    Args:
        target: The controller under test.
        server: The kit's server, bound.
        process: The controller's process.
    """

    def __init__(
        self, target: ControllerTarget, server: ScriptedServer, process: ControllerProcess
    ):
        self.target, self.server, self.process = target, server, process
        self.spec = target.spec
        self.seq = 0  # the kit's seq in the session
        self.session = 0
        self.hello: dict[str, Any] = {}
        self.frames: list[Frame] = []

    @property
    def period_s(self) -> float:
        """The policy period (s)."""
        return 1.0 / self.spec.control_rate_hz

    @property
    def hold_s(self) -> float:
        """The controller's hold window from its HELLO (s; default 20 ms)."""
        value = self.hello.get("hold_window_ms", 20.0)
        return float(value if isinstance(value, int | float) else 20.0) / 1e3

    def wait_hello(self) -> p.Message:
        """The controller's first HELLO (its JSON in ``self.hello``)."""
        deadline = time.monotonic() + self.target.hello_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            got = self.server.recv(min(left, 0.2))
            if got is None:
                if self.process.process.poll() is not None:
                    break
                continue
            self.frames.append(got)
            if got.msg is not None and got.msg.type is p.MsgType.HELLO:
                try:
                    self.hello = p.decode_json(got.msg.payload)
                except p.ProtocolError as exc:
                    raise CheckFailed(f"HELLO is not valid JSON: {exc.text}") from None
                if self.target.first_hello is None:
                    self.target.first_hello = self.hello
                return got.msg
        raise CheckFailed(
            f"no HELLO within {self.target.hello_timeout_s} s; the controller {self.process.tail()}"
        )

    def welcome_json(self, **overrides: Any) -> dict[str, Any]:
        """A WELCOME that answers ``self.hello`` correctly, with ``overrides``."""
        spec, hello = self.spec, self.hello
        rate = spec.control_rate_hz
        pinned = hello.get("model_sha256")
        welcome = {
            "protocol_version": p.PROTOCOL_VERSION,
            "session_id": self.session,
            "server": "ffep-conformance",
            "task_id": spec.task_id,
            "robot": spec.robot,
            "observation": spec.observation,
            "action": spec.action,
            "schema_sha256": spec.schema_sha256,
            "model_sha256": pinned or spec.model_sha256 or KIT_MODEL,
            "control_rate_hz": rate,
            "loop_rate_hz": hello.get("loop_rate_hz", rate),
            "max_action_age_ms": self.target.max_action_age_ms,
            "session_timeout_s": 10.0,
        }
        welcome.update(overrides)
        return welcome

    def welcome(self, hello: p.Message, session: int = 0x5EED, **overrides: Any) -> int:
        """Answer ``hello`` with WELCOME (seq 1) opening ``session``; returns the session."""
        self.session, self.seq = session, 0
        payload = p.encode_json(self.welcome_json(**overrides))
        self.send(p.MsgType.WELCOME, payload, hello)
        return session

    def send(self, kind: p.MsgType, payload: bytes, answered: p.Message | None = None) -> float:
        """Send a frame in the session with the next seq; the kit's clock when sent (s)."""
        self.seq += 1
        ack, echo = (answered.seq, answered.t_send_ns) if answered is not None else (0, 0)
        msg = p.Message(
            kind, self.session, self.seq, ack, time.monotonic_ns(), echo, payload=payload
        )
        self.server.send(p.encode(msg))
        return time.monotonic()

    def act(self, obs: p.Message, values: np.ndarray | None = None) -> float:
        """Answer ``obs`` with an ACTION (zeros by default); the time it was sent (s)."""
        action = np.zeros(self.spec.action_size, np.float32) if values is None else values
        return self.send(p.MsgType.ACTION, p.encode_floats(action), obs)

    def play(self, seconds: float, on_frame: Callable[[Frame], None] | None = None) -> None:
        """Read the controller's frames for ``seconds``, handing each to ``on_frame``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            got = self.server.recv(left)
            if got is None:
                continue
            self.frames.append(got)
            if on_frame is not None:
                on_frame(got)

    def observations(self, session: int | None = None) -> list[Frame]:
        """The OBSERVATION frames received so far (of ``session``: default the current one)."""
        sid = self.session if session is None else session
        return [
            f
            for f in self.frames
            if f.msg is not None and f.msg.type is p.MsgType.OBSERVATION and f.msg.session_id == sid
        ]

    def malformed(self) -> None:
        """Fail when the controller sent a frame that breaks the protocol."""
        bad = [f.error for f in self.frames if f.msg is None]
        expect(
            not bad, f"the controller sent {len(bad)} malformed frame(s): {bad[0] if bad else ''}"
        )


@contextmanager
def running(target: ControllerTarget) -> Iterator[Script]:
    """The kit's server bound, the controller started against it; both ended afterwards."""
    server = ScriptedServer(target.bind)
    try:
        process = ControllerProcess(target.command, server.endpoint)
        try:
            yield Script(target, server, process)
        finally:
            process.stop()
    finally:
        server.close()
