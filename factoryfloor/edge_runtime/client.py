"""The controller's side of the wire: a DEALER that keeps only valid actions.

``EdgeClient.handshake`` sends HELLO and waits for WELCOME (an ERROR raises ``HandshakeError``
with the server's code). ``send_observation`` sends one OBSERVATION; ``receive_action`` drains
the socket and returns the newest ACTION that belongs to this session, answers an observation
newer than the last action returned, is younger than the maximum age (on this side's monotonic
clock, via the echoed timestamp) and has the action spec's size. Everything else is dropped and
counted in ``metrics``; nothing raises on bad input.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from factoryfloor.edge_runtime import fastpath
from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.metrics import Metrics
from factoryfloor.edge_runtime.payload import Layout
from factoryfloor.edge_runtime.session_check import check_welcome
from factoryfloor.edge_runtime.spec import PolicySpec

_NOBLOCK, _EVENTS, _POLLIN = (
    int(zmq.NOBLOCK),
    int(zmq.EVENTS),
    int(zmq.POLLIN),
)  # not enums: cheaper
# ZMTP handshake failures the client watches for, to say why a server stays silent
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class HandshakeError(p.EdgeError):
    """The server refused the HELLO, or did not answer in time.

    Attributes:
        code: The server's error code (None for a timeout or a malformed answer).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EdgeClient:
    """One controller's connection to a policy server.

    Args:
        endpoint: Server endpoint, e.g. ``tcp://127.0.0.1:5555``.
        socket: A configured DEALER socket (e.g. with CURVE keys), not yet connected, or None
            for a plain one. The client connects it, after attaching the monitor that tells a
            silent server from a failed security handshake.
    """

    def __init__(self, endpoint: str, socket: zmq.Socket[bytes] | None = None) -> None:
        self.endpoint = endpoint
        self._monitor: zmq.Socket[bytes]
        if socket is None:
            socket = zmq.Context.instance().socket(zmq.DEALER)
            for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 4), (zmq.RCVHWM, 4)):
                socket.setsockopt(option, value)
        self._monitor = socket.get_monitor_socket(HANDSHAKE_FAILURES)
        socket.connect(endpoint)
        self.socket = socket
        self._fd = int(socket.getsockopt(zmq.FD))
        self.metrics = Metrics("controller")
        self.session_id = 0
        self.welcome: dict[str, Any] = {}
        self.action_size = 0
        self.max_age_ns = 0
        self._seq = 0
        self._last_ack = 0
        self._observations: p.StreamCodec | None = None  # this session's frame codecs
        self._layout: Layout | None = None  # this session's OBSERVATION layout
        self._actions: p.StreamCodec | None = None
        self._gate: fastpath.ReferenceGate | None = None  # and its ACTION gate
        self.last_round_trip_s: float | None = None  # of the last action accepted
        self.session_closed = ""  # why the server closed the session (SESSION_CLOSED), if it did
        self._nonfinite: np.ndarray | None = None  # a NaN/Inf answer, if no finite one came

    def handshake(
        self, hello: dict[str, Any], timeout_s: float = 2.0, publisher: str | None = None
    ) -> dict[str, Any]:
        """Send HELLO, return WELCOME's JSON; a new session replaces any previous one.

        A WELCOME that does not match the HELLO (task, robot, rate, specs, a pinned model, its
        session id or action age), or whose bundle is not signed by ``publisher`` (a key id,
        when given), is refused like an ERROR: nothing is sent on that session.

        Raises:
            HandshakeError: On an ERROR answer (its code and text), a WELCOME this side
                refuses, or no answer in time.
        """
        self.session_id, self._seq, self._last_ack = 0, 0, 0
        self._observations = self._actions = self._gate = self._layout = None
        self._drain()
        hello_seq = self._send(p.MsgType.HELLO, p.encode_json(hello))
        deadline = time.monotonic() + timeout_s
        while (left_ms := int((deadline - time.monotonic()) * 1e3)) > 0:
            if not self.socket.poll(left_ms, zmq.POLLIN):
                break
            msg = self._recv()
            if msg is None or msg.ack_seq != hello_seq:
                continue
            if msg.type is p.MsgType.ERROR:
                code, text = p.decode_error(msg.payload)
                known = code in p.ErrorCode._value2member_map_
                name = p.ErrorCode(code).name if known else str(code)
                raise HandshakeError(f"server refused HELLO: {name}: {text}", code)
            if msg.type is p.MsgType.WELCOME:
                return self._accept_welcome(msg, hello, publisher)
        raise HandshakeError(self._silence_reason(timeout_s))

    def _silence_reason(self, timeout_s: float) -> str:
        """Why no WELCOME came: a failed ZMTP security handshake, or no server at all."""
        failures = []
        while self._monitor.poll(0):
            failures.append(recv_monitor_message(self._monitor))
        keyless = int(self.socket.getsockopt(zmq.MECHANISM)) == zmq.NULL
        for event in failures:
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return (
                    f"the server at {self.endpoint} refused this controller's CURVE key (not in "
                    "its allow-list): add the client with factoryfloor edge keygen DIR --client "
                    "NAME and restart the server with --keys DIR"
                )
            # a keyless controller whose handshakes fail meets a secured server: on a busy
            # machine the failures need not all reach the mechanism check to say so
            if event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH or keyless:
                return (
                    f"the server at {self.endpoint} uses another security mechanism than this "
                    "controller: a server started with --keys DIR needs --keys DIR --client-name "
                    "NAME here (and a server without keys, none)"
                )
        if failures:
            return f"the security handshake with {self.endpoint} failed: check both sides' --keys"
        return f"no WELCOME from {self.endpoint} within {timeout_s} s: is the server running?"

    def _accept_welcome(
        self, msg: p.Message, hello: dict[str, Any], publisher: str | None = None
    ) -> dict[str, Any]:
        """Take the session only if WELCOME matches the HELLO (``session_check``)."""
        ours = PolicySpec(
            task_id=hello["task_id"], robot=hello["robot"],
            control_rate_hz=float(hello["control_rate_hz"]), observation=hello["observation"],
            action=hello["action"],
        )  # fmt: skip
        try:
            welcome = p.decode_json(msg.payload)
            check_welcome(welcome, msg.session_id, ours, hello.get("model_sha256"), publisher)
        except p.ProtocolError as exc:
            self.metrics.count("welcomes_refused")
            raise HandshakeError(
                f"refused the WELCOME of {self.endpoint}: {exc.text}", exc.code
            ) from None
        self.session_id, self.welcome = msg.session_id, welcome
        self.action_size = ours.action_size
        self.max_age_ns = int(float(welcome["max_action_age_ms"]) * 1e6)
        self.session_closed = ""
        sid = self.session_id
        self._layout = ours.obs_layout
        self._observations = p.StreamCodec(p.MsgType.OBSERVATION, sid, ours.obs_bytes // 4)
        self._actions = p.StreamCodec(p.MsgType.ACTION, sid, self.action_size)
        self._gate = fastpath.gate(
            self._actions, fastpath.ACK_SEQ, np.zeros((1, self.action_size), np.float32)
        )  # this session's ACTION frames: compiled where built
        return welcome

    def send_observation(
        self,
        values: np.ndarray | Mapping[str, Any] | bytes | bytearray | memoryview,
        episode_start: bool = False,
    ) -> int:
        """Send one OBSERVATION; returns its sequence number.

        Args:
            values: Flat float32 values in spec order (a float32-only spec); or a mapping
                field name -> array, packed by the session's layout (``payload.Layout``: any
                spec, uint8 fields given as uint8 arrays); or an already packed payload
                (bytes-like, sent unchanged).
            episode_start: Set ``EPISODE_START``.

        Payloads of the size the session's spec has go out through its ``StreamCodec``;
        others (for the server to refuse and count) through the general encoder.

        Raises:
            ValueError: For a mapping before a session, or one that does not fit the spec.
        """
        if isinstance(values, Mapping):
            if self._layout is None:
                raise ValueError("no session yet: a mapping is packed by the WELCOME's spec")
            payload = self._layout.pack(values)
        elif isinstance(values, bytes | bytearray | memoryview):
            payload = bytes(values)
        else:
            payload = p.encode_floats(values)
        codec = self._observations
        if codec is None or len(payload) != codec.payload_bytes:
            flags = p.Flags.EPISODE_START if episode_start else p.Flags.NONE
            return self._send(p.MsgType.OBSERVATION, payload, flags)
        self._seq += 1
        frame = codec.encode(self._seq, 0, time.monotonic_ns(), 0, payload, int(episode_start))
        self._send_frame(frame)
        return self._seq

    def send_bye(self) -> None:
        """End the session."""
        if self.session_id:
            self._send(p.MsgType.BYE, b"")
            self.session_id = 0

    def receive_action(self, timeout_s: float = 0.0) -> np.ndarray | None:
        """The newest valid ACTION within ``timeout_s`` (s), or None.

        Returns as soon as the answer to the last observation sent is in. Until then it keeps
        waiting; at the deadline it returns the newest valid answer to an earlier observation
        (one that came late), if any. Returning a late answer at once instead would lock the
        loop into using every action one cycle late. An answer holding NaN or Inf is not
        applied (its ``ack_seq`` stays open for a finite answer); returned only when no finite
        one came by the deadline, so that the safety layer counts it.
        """
        deadline = time.monotonic() + timeout_s
        best: np.ndarray | None = None
        self._nonfinite = None
        while True:
            while (frame := self._recv_frame()) is not None:
                action = self._action_of(frame)
                if action is not None:
                    best = action
                    if self._last_ack >= self._seq:  # nothing newer can come: done
                        return best
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return best if best is not None else self._nonfinite
            self._wait_readable(left_s)

    def _wait_readable(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` (s, sub-millisecond) for the socket to become readable.

        ZeroMQ's own poll counts whole milliseconds, too coarse for a 1 kHz loop, and spinning
        would starve the ZeroMQ I/O threads of a small machine; so this waits in ``select`` on
        the socket's file descriptor. That descriptor is edge-triggered: callers wait only after
        ``_recv`` found ``EVENTS`` empty (which re-arms it) and re-check after every wake-up.
        """
        select.select([self._fd], [], [], timeout_s)

    def _action_of(self, frame: bytes) -> np.ndarray | None:
        """The action of a frame if it is a valid ACTION of this session (counted if not).

        A frame of this session's ACTION stream goes through its gate (``fastpath``: stream,
        ``ack_seq`` window and finiteness in one call) and gets the checks of
        ``_fresh_action`` in the same order; anything else takes the general decode.
        """
        gate = self._gate
        if gate is not None:
            verdict = gate.check(frame, self._last_ack, self._seq, 0)
            if verdict != fastpath.NOT_STREAM:
                return self._gated_action(gate, verdict)
        try:
            msg = p.decode(frame)
        except p.ProtocolError as exc:
            self.metrics.count(f"malformed_{exc.code.name.lower()}")
            return None
        return self._valid_action(msg)

    def _valid_action(self, msg: p.Message) -> np.ndarray | None:
        if msg.type is p.MsgType.ERROR:
            code, text = p.decode_error(msg.payload)
            self.metrics.count(f"server_error_{code}")
            if code == p.ErrorCode.SESSION_CLOSED and msg.session_id == self.session_id:
                self.session_closed = text or "closed by the server"
            return None
        if msg.type is not p.MsgType.ACTION:
            self.metrics.count("unexpected_messages")
            return None
        if msg.session_id != self.session_id or not self.session_id:
            self.metrics.count("actions_other_session")
            return None
        return self._fresh_action(msg.ack_seq, msg.t_echo_ns, msg.payload, 0)

    def _gated_action(self, gate: fastpath.ReferenceGate, verdict: int) -> np.ndarray | None:
        """``_fresh_action``'s result for a frame the gate recognised (``verdict``)."""
        if verdict == fastpath.STALE:
            self.metrics.count("actions_stale_or_replayed")  # duplicated, reordered, replayed
            return None
        age_ns = self._age_ns(gate.tail[3])
        if age_ns is None:
            return None
        return self._take(gate.rows[0].copy(), gate.tail[1], age_ns, verdict != fastpath.NONFINITE)

    def _fresh_action(
        self, ack_seq: int, t_echo_ns: int, data: bytes, offset: int
    ) -> np.ndarray | None:
        """The action at ``data[offset:]``, or None (counted) when it is stale or too old.

        Also None when the payload is not the action spec's size.
        """
        if ack_seq <= self._last_ack or ack_seq > self._seq:
            self.metrics.count("actions_stale_or_replayed")  # duplicated, reordered, replayed
            return None
        age_ns = self._age_ns(t_echo_ns)
        if age_ns is None:
            return None
        if len(data) - offset != 4 * self.action_size:
            self.metrics.count("actions_wrong_size")
            return None
        action = np.frombuffer(data, "<f4", self.action_size, offset).astype(np.float32)
        return self._take(action, ack_seq, age_ns, bool(np.isfinite(action).all()))

    def _age_ns(self, t_echo_ns: int) -> int | None:
        """The answer's age on this side's clock (ns; observed as the round trip).

        None (counted) when it is older than the max age or from the future.
        """
        age_ns = time.monotonic_ns() - t_echo_ns
        self.metrics.observe("round_trip", age_ns / 1e9)
        if age_ns > self.max_age_ns or age_ns < 0:
            self.metrics.count("actions_too_old")
            return None
        return age_ns

    def _take(
        self, action: np.ndarray, ack_seq: int, age_ns: int, finite: bool
    ) -> np.ndarray | None:
        """Accept a fresh ``action`` (returned), or keep a non-finite one aside (None).

        A non-finite action is not applied, so its ack_seq is not used up: a finite answer may
        still come, else the safety layer gets this one, to count it.
        """
        if not finite:
            self.metrics.count("actions_nonfinite")
            self._nonfinite = action
            return None
        self._nonfinite = None
        self._last_ack = ack_seq
        self.last_round_trip_s = age_ns / 1e9
        self.metrics.count("actions_accepted")
        return action

    def _recv_frame(self) -> bytes | None:
        """One frame, or None when the queue is empty.

        Asks ``EVENTS`` before receiving: cheaper than raising and catching ``zmq.Again``.
        """
        socket = self.socket
        if int(socket.get(_EVENTS)) & _POLLIN:
            return socket.recv(_NOBLOCK)
        return None

    def _recv(self) -> p.Message | None:
        """One decoded frame, or None when the queue is empty (malformed frames are counted)."""
        while (frame := self._recv_frame()) is not None:
            try:
                return p.decode(frame)
            except p.ProtocolError as exc:
                self.metrics.count(f"malformed_{exc.code.name.lower()}")
        return None

    def _drain(self) -> None:
        while self._recv() is not None:
            pass

    def _send(self, kind: p.MsgType, payload: bytes, flags: p.Flags = p.Flags.NONE) -> int:
        self._seq += 1
        msg = p.Message(kind, self.session_id, self._seq, 0, time.monotonic_ns(), 0, flags, payload)
        self._send_frame(p.encode(msg))
        return self._seq

    def _send_frame(self, frame: bytes) -> None:
        try:
            self.socket.send(frame, _NOBLOCK)
        except zmq.Again:
            self.metrics.count("send_queue_full")  # the server is gone or slow: hold applies

    def close(self) -> None:
        """Close the socket and its monitor."""
        with contextlib.suppress(zmq.ZMQError):  # already stopped
            self.socket.disable_monitor()
        self._monitor.close(linger=0)
        self.socket.close(linger=0)
