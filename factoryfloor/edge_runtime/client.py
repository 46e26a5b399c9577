"""The controller's side of the wire: a DEALER that keeps only valid actions.

``EdgeClient.handshake`` sends HELLO and waits for WELCOME (an ERROR raises ``HandshakeError``
with the server's code). ``send_observation`` sends one OBSERVATION; ``receive_action`` drains
the socket and returns the newest ACTION that belongs to this session, answers an observation
newer than the last action returned, is younger than the maximum age (on this side's monotonic
clock, via the echoed timestamp) and has the action spec's size. Everything else is dropped and
counted in ``metrics``; nothing raises on bad input.
"""

from __future__ import annotations

import select
import time
from typing import Any

import numpy as np
import zmq

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.metrics import Metrics


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
        socket: A configured, connected DEALER socket (e.g. with CURVE keys), or None to create
            a plain one and connect it.
    """

    def __init__(self, endpoint: str, socket: zmq.Socket[bytes] | None = None) -> None:
        if socket is None:
            socket = zmq.Context.instance().socket(zmq.DEALER)
            for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 4), (zmq.RCVHWM, 4)):
                socket.setsockopt(option, value)
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
        self.last_round_trip_s: float | None = None  # of the last action accepted

    def handshake(self, hello: dict[str, Any], timeout_s: float = 2.0) -> dict[str, Any]:
        """Send HELLO, return WELCOME's JSON; a new session replaces any previous one.

        Raises:
            HandshakeError: On an ERROR answer (its code and text) or no answer in time.
        """
        self.session_id, self._seq, self._last_ack = 0, 0, 0
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
                return self._accept_welcome(msg)
        raise HandshakeError(f"no WELCOME within {timeout_s} s: is the server running?")

    def _accept_welcome(self, msg: p.Message) -> dict[str, Any]:
        welcome = p.decode_json(msg.payload)
        self.session_id = int(welcome["session_id"])
        if self.session_id != msg.session_id or not self.session_id:
            raise HandshakeError("WELCOME's session_id disagrees with its header")
        self.welcome = welcome
        self.action_size = sum(int(np.prod(a["shape"])) for a in welcome["action"])
        self.max_age_ns = int(float(welcome["max_action_age_ms"]) * 1e6)
        return welcome

    def send_observation(self, values: np.ndarray, episode_start: bool = False) -> int:
        """Send one OBSERVATION (flat float32 in spec order); returns its sequence number."""
        flags = p.Flags.EPISODE_START if episode_start else p.Flags.NONE
        return self._send(p.MsgType.OBSERVATION, p.encode_floats(values), flags)

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
        loop into using every action one cycle late.
        """
        deadline = time.monotonic() + timeout_s
        best: np.ndarray | None = None
        while True:
            while (msg := self._recv()) is not None:
                action = self._valid_action(msg)
                if action is not None:
                    best = action
                    if self._last_ack >= self._seq:  # nothing newer can come: done
                        return best
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return best
            self._wait_readable(left_s)

    def _wait_readable(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` (s, sub-millisecond) for the socket to become readable.

        ZeroMQ's own poll counts whole milliseconds, too coarse for a 1 kHz loop, and spinning
        would starve the ZeroMQ I/O threads of a small machine; so this waits in ``select`` on
        the socket's file descriptor. That descriptor is edge-triggered: callers wait only after
        ``_recv`` found ``EVENTS`` empty (which re-arms it) and re-check after every wake-up.
        """
        select.select([self._fd], [], [], timeout_s)

    def _valid_action(self, msg: p.Message) -> np.ndarray | None:
        if msg.type is p.MsgType.ERROR:
            code, _ = p.decode_error(msg.payload)
            self.metrics.count(f"server_error_{code}")
            return None
        if msg.type is not p.MsgType.ACTION:
            self.metrics.count("unexpected_messages")
            return None
        if msg.session_id != self.session_id or not self.session_id:
            self.metrics.count("actions_other_session")
            return None
        if msg.ack_seq <= self._last_ack or msg.ack_seq > self._seq:
            self.metrics.count("actions_stale_or_replayed")  # duplicated, reordered, replayed
            return None
        age_ns = time.monotonic_ns() - msg.t_echo_ns
        self.metrics.observe("round_trip", age_ns / 1e9)
        if age_ns > self.max_age_ns or age_ns < 0:
            self.metrics.count("actions_too_old")
            return None
        try:
            action = p.decode_floats(msg.payload, self.action_size)
        except p.ProtocolError:
            self.metrics.count("actions_wrong_size")
            return None
        self._last_ack = msg.ack_seq
        self.last_round_trip_s = age_ns / 1e9
        self.metrics.count("actions_accepted")
        return action

    def _recv(self) -> p.Message | None:
        """One decoded frame, or None when the queue is empty (malformed frames are counted).

        Asks ``EVENTS`` before receiving: cheaper than raising and catching ``zmq.Again``.
        """
        socket = self.socket
        while int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            frame = socket.recv(zmq.NOBLOCK)
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
        try:
            self.socket.send(p.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            self.metrics.count("send_queue_full")  # the server is gone or slow: hold applies
        return self._seq

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)
