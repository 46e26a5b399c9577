"""The policy server: one ROUTER socket, a session per robot controller (``docs/protocol.md``).

Each ``run_once`` drains every frame waiting on the socket, keeps only the newest OBSERVATION of
each session, answers all of them with one batched inference call, and sends one ACTION per
session. Malformed frames, messages without a session and stale sequence numbers are counted and
answered with rate-limited ERROR frames; the loop never raises on bad input.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, ClassVar

import numpy as np
import zmq

from factoryfloor.edge_runtime import fastpath
from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.metrics import Metrics, resident_memory_mb
from factoryfloor.edge_runtime.peers import Peer, PeerTable, Verdict
from factoryfloor.edge_runtime.served import ServedPolicy, rows_for
from factoryfloor.edge_runtime.server_config import (
    EPISODE_START,
    EVENTS,
    MORE_NOW,
    NOBLOCK,
    POLLIN,
    RCVMORE,
    SEND_BUFFER_BYTES,
    Inbox,
    KeyedIdentity,
    Request,
    ServerConfig,
    Session,
    configure_router,
    readable_header,
)
from factoryfloor.edge_runtime.server_sessions import SessionRules

_HANDSHAKE_BYTES = (bytes([p.MsgType.HELLO]), bytes([p.MsgType.DESCRIBE]))  # header byte 5

__all__ = ["KeyedIdentity", "PolicyServer", "ServerConfig", "Session", "configure_router"]


class PolicyServer(SessionRules):
    """Serves ``policy`` to robot controllers over a ROUTER socket.

    Args:
        policy: What to serve (``served.BundleServedPolicy`` or any ``ServedPolicy``).
        config: Server settings.
        socket: An already configured, bound ROUTER socket (security set up by the caller), or
            None to create one on ``config.bind`` without security.
        keyed: The socket checks CURVE keys: read each peer's key (the ZAP User-Id) to apply
            ``max_sessions_per_key`` and bans per key.
    """

    def __init__(
        self,
        policy: ServedPolicy,
        config: ServerConfig,
        socket: zmq.Socket[bytes] | None = None,
        keyed: bool = False,
    ) -> None:
        self.policy, self.config, self.keyed = policy, config, keyed
        self.spec = policy.spec
        self.budget = config.budget(self.spec.control_rate_hz)
        self.rows = rows_for(policy, config.max_sessions)  # inference's preallocated rows
        layout = self.spec.obs_layout
        self._obs_bytes = layout.size  # an OBSERVATION payload's bytes
        self._mixed = layout if layout.mixed else None  # uint8 fields: rows hold raw bytes
        self._row_dtype = np.uint8 if layout.mixed else np.dtype("<f4")
        self.metrics = Metrics("server")
        self.sessions: dict[int, Session] = {}
        self.by_identity: dict[bytes, int] = {}
        self.peers = PeerTable(config.max_peers)
        self._hellos: dict[bytes, p.Message] = {}
        self.stop_event = threading.Event()
        self._next_expiry_s = 0.0
        self._rcvtimeo: int | None = None
        if socket is None:
            socket = zmq.Context.instance().socket(zmq.ROUTER)
            configure_router(socket, config)
            socket.bind(config.bind)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full or gone peer is told, not silent
        socket.setsockopt(zmq.SNDHWM, config.send_hwm)  # for connections from now on
        socket.setsockopt(zmq.SNDBUF, SEND_BUFFER_BYTES)
        self.socket = socket
        self.metrics.set_gauge("resident_memory_mb", resident_memory_mb())

    @property
    def endpoint(self) -> str:
        """The bound endpoint (with the real port when ``bind`` asked for any port)."""
        return str(self.socket.getsockopt_string(zmq.LAST_ENDPOINT))

    def serve_forever(self) -> None:
        """``run_once`` until ``stop_event`` is set."""
        while not self.stop_event.is_set():
            self.run_once()

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)

    def run_once(self, timeout_ms: int | None = None) -> int:
        """Wait for frames, drain them, answer the newest observation of each session.

        The wait is a blocking receive (with ``RCVTIMEO``); the drain asks the socket's
        ``EVENTS`` rather than catching ``zmq.Again``, and stops after ``max_frames_per_drain``
        frames or ``drain_budget_ms``, so one peer's flood delays the others' answers by at
        most one drain (ZeroMQ reads connections round-robin). Nothing a peer sends escapes:
        each frame is handled inside ``_guarded``.

        Returns:
            Actions sent.
        """
        if self._hellos:
            self.process_hellos(self.config.handshake_budget_ms * 1e-3)
        timeout = self.config.poll_timeout_ms if timeout_ms is None else timeout_ms
        if self._hellos:
            timeout = 0  # more to check: do not sleep on the socket
        if timeout != self._rcvtimeo:
            self.socket.setsockopt(zmq.RCVTIMEO, timeout)
            self._rcvtimeo = timeout
        try:
            frames = self._recv()
        except zmq.Again:
            self._expire_sessions()
            return 0
        sent = self._answer_alone(frames)
        if sent is not None:
            self._expire_sessions()
            return sent
        inbox: Inbox = {}
        dropped: set[bytes] = set()  # peers whose frames were dropped since the last accepted
        flooded = self._drop_run(self._guarded(frames, inbox), dropped)
        socket, received = self.socket, 1
        end = time.perf_counter() + self.config.drain_budget_ms * 1e-3
        while (
            not flooded
            and received < self.config.max_frames_per_drain
            and int(socket.get(EVENTS)) & POLLIN
            and time.perf_counter() < end
        ):
            flooded = self._drop_run(self._guarded(self._recv(NOBLOCK), inbox), dropped)
            received += 1
        self.metrics.count("frames_received", received)
        sent = self._answer(inbox) if inbox else 0
        if self._hellos:  # after the observations: a handshake never delays an action
            self.process_hellos(self.config.handshake_budget_ms * 1e-3)
        self._expire_sessions()
        if flooded:  # only over-budget peers have frames waiting: let TCP push back on them
            self.metrics.count("flood_pauses")
            time.sleep(self.config.flood_pause_ms * 1e-3)
        return sent

    @staticmethod
    def _drop_run(dropped_from: bytes | None, dropped: set[bytes]) -> bool:
        """Whether the run of dropped frames came round to a peer already in it.

        ZeroMQ reads a ROUTER's connections round-robin, so a second frame from a peer in the
        run means that every connection with a frame waiting was visited and all of them are
        over budget: nothing a well-behaved peer sent is waiting behind them.
        """
        if dropped_from is None:
            dropped.clear()
            return False
        if dropped_from in dropped:
            return True
        dropped.add(dropped_from)
        return False

    def _recv(self, flags: int = 0) -> list[Any]:
        """One message's frames; with ``keyed``, the first frame carries the peer's key."""
        if not self.keyed:
            socket = self.socket  # recv_multipart's loop, without its enum conversions
            parts: list[Any] = [socket.recv(flags)]
            while socket.get(RCVMORE):
                parts.append(socket.recv(NOBLOCK))
            return parts
        frames = self.socket.recv_multipart(flags, copy=False)
        user = frames[-1].get("User-Id") if frames else None
        key = user if isinstance(user, str) else None
        return [KeyedIdentity(frames[0].bytes, key), *(part.bytes for part in frames[1:])]

    def _answer_alone(self, frames: list[bytes]) -> int | None:
        """Answer the common case on its shortest path (actions sent), or None: not handled.

        The common case: a well-formed OBSERVATION of a live session within its budget, newer
        than its last, with finite values, and no other frame waiting. It gets what
        ``_on_observation`` and ``_answer`` would give it (same checks, counters, reset, reply)
        in fewer Python calls: the session's gate (``fastpath``, compiled where built) checks
        the frame and copies its values into inference's first row. Everything else returns
        None, having changed nothing but the peer's budget and that row, and takes the general
        path.
        """
        if len(frames) != 2:
            return None
        identity, frame = frames
        session = self.sessions.get(self.by_identity.get(identity, 0))
        if (
            session is None
            or session.pending is not None
            or int(self.socket.get(EVENTS)) & POLLIN  # others waiting: batch them
        ):
            return None
        gate = session.gate
        flags = gate.check(frame, session.last_seq, fastpath.U64_MAX, 0)
        if flags < 0:  # not this session's OBSERVATION, stale, or non-finite
            return None
        seq, t_send_ns = gate.tail[0], gate.tail[2]
        now = time.monotonic()
        if session.peer.admit(session.budget, now) != Verdict.ACCEPT:
            session.peer.tokens += 1.0  # not spent: the general path decides again
            return None
        session.last_seq, session.last_seen_s = seq, now
        if flags & EPISODE_START or session.reset_pending:
            self.policy.reset(session.session_id)
            session.reset_pending = False
        self.metrics.count("frames_received")
        return self._infer_and_send([(session, seq, t_send_ns)])

    def _guarded(self, frames: list[bytes], inbox: Inbox) -> bytes | None:
        """``_handle`` one message: a failure is counted and answered, never raised.

        Returns:
            The peer's identity when the frame was dropped for its budget, else None.
        """
        try:
            return self._handle(frames, inbox)
        except Exception as exc:  # the per-frame boundary: no peer can stop the server
            self.metrics.count("frame_failures")
            identity = frames[0] if frames else b""
            with contextlib.suppress(Exception):
                self._reject(identity, p.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"[:200])
            return None

    def _handle(self, frames: list[bytes], inbox: Inbox) -> bytes | None:
        identity = frames[0]
        now = time.monotonic()
        session = self.sessions.get(self.by_identity.get(identity, 0))
        peer = session.peer if session is not None else self.peers.get(
            identity, self.budget, now, getattr(identity, "key", None)
        )  # fmt: skip
        budget = session.budget if session is not None else self.budget
        verdict = peer.admit(budget, now)
        if verdict != Verdict.ACCEPT:
            self._over_budget(identity, peer, session, verdict, now)
            return identity
        if len(frames) != 2:
            self._reject(identity, p.ErrorCode.BAD_LENGTH, "one frame per message (no multipart)")
            return None
        if frames[1][5:6] in _HANDSHAKE_BYTES and not peer.spend_handshake(self.budget, now):
            self.metrics.count("handshakes_throttled")  # checked before the costly parse
            if peer.may_notify(now):
                text = f"over {self.budget.handshakes_per_s:.0f} HELLO/DESCRIBE per second"
                self._reject(identity, p.ErrorCode.THROTTLED, text, readable_header(frames[1]))
            return identity
        try:
            msg = p.decode(frames[1])
        except p.ProtocolError as exc:
            self._reject(identity, exc.code, exc.text, readable_header(frames[1]))
            return None
        handler = self._handlers.get(msg.type)
        if handler is None:
            self._reject(identity, p.ErrorCode.BAD_TYPE, f"{msg.type.name} is not sent to servers",
                         msg)  # fmt: skip
            return None
        handler(self, identity, msg, inbox)
        return None

    def _over_budget(
        self, identity: bytes, peer: Peer, session: Session | None, verdict: int, now: float
    ) -> None:
        if verdict == Verdict.BANNED:
            self.metrics.count("frames_banned")
            return
        self.metrics.count("frames_throttled")
        if verdict == Verdict.BAN:
            self.metrics.count("peers_banned")
            if peer.key is not None:
                self.peers.ban_key(peer.key, peer.banned_until_s, now)
            if session is not None:
                self._close_session(session, "sessions_closed_flooding", "flooding past its budget")
            return
        if peer.may_notify(now):
            text = f"over {self.budget.frames_per_s:.0f} frames/s: frames are dropped unread"
            self._reject(identity, p.ErrorCode.THROTTLED, text)

    def _on_observation(self, identity: bytes, msg: p.Message, inbox: Inbox) -> None:
        session = self._session_of(identity, msg)
        if session is None:
            return
        if msg.seq <= session.last_seq:
            self.metrics.count("observations_stale")  # duplicated, reordered or replayed
            return
        if len(msg.payload) != self._obs_bytes:
            text = f"{len(msg.payload)} payload bytes; the observation spec has {self._obs_bytes}"
            self._reject(identity, p.ErrorCode.BAD_LENGTH, text, msg)
            return
        if session.pending is not None:
            self.metrics.count("observations_superseded")
        session.last_seq, session.last_seen_s = msg.seq, time.monotonic()
        session.pending = msg
        if int(msg.flags) & EPISODE_START:  # int arithmetic: IntFlag operators are slow
            session.reset_pending = True
        inbox[session.session_id] = session

    _handlers: ClassVar[dict[p.MsgType, Any]] = {
        p.MsgType.HELLO: SessionRules._on_hello,
        p.MsgType.OBSERVATION: _on_observation,
        p.MsgType.HEARTBEAT: SessionRules._on_heartbeat,
        p.MsgType.BYE: SessionRules._on_bye,
        p.MsgType.ERROR: SessionRules._on_error,
        p.MsgType.DESCRIBE: SessionRules._on_describe,
    }

    def _answer(self, inbox: Inbox) -> int:
        """One inference call for the newest finite observation of every session in ``inbox``."""
        requests: list[Request] = []
        rows = self.rows.obs
        for session in inbox.values():
            request, session.pending = session.pending, None
            if request is not None:  # payload sizes were checked on arrival
                rows[len(requests)] = np.frombuffer(request.payload, self._row_dtype)
                requests.append((session, request.seq, request.t_send_ns))
        if not requests:
            return 0
        obs = rows[: len(requests)]
        finite: np.ndarray = (
            np.isfinite(obs) if self._mixed is None else self._mixed.finite_rows(obs)
        )
        if not finite.all():
            if finite.ndim == 2:  # per value (float32-only rows): per row
                finite = np.asarray(finite.all(axis=1))
            self.metrics.count("observations_nonfinite", int((~finite).sum()))
            for (session, seq, t_send_ns), ok in zip(requests, finite, strict=True):
                if not ok:
                    self._reject(
                        session.identity, p.ErrorCode.NON_FINITE,
                        "the observation holds NaN or Inf: no action computed",
                        p.Message(p.MsgType.OBSERVATION, session.session_id, seq, 0, t_send_ns),
                    )  # fmt: skip
            requests = [r for r, ok in zip(requests, finite, strict=True) if ok]
            if not requests:
                return 0
            rows[: len(requests)] = obs[finite]  # the finite rows first
        for session, _, _ in requests:
            if session.reset_pending:
                self.policy.reset(session.session_id)
                session.reset_pending = False
        return self._infer_and_send(requests)

    def _infer_and_send(self, requests: list[Request]) -> int:
        """One inference call for the first rows of ``rows.obs``; one ACTION per request.

        Request ``i`` is row ``i``; its ACTION is encoded from row ``i`` of ``rows.actions`` by
        the session's encoder.
        """
        t0 = time.perf_counter()
        try:
            self.rows.run([r[0].session_id for r in requests])
        except Exception as exc:  # the policy's failure must not stop the server
            for session, seq, t_send_ns in requests:
                request = p.Message(p.MsgType.OBSERVATION, session.session_id, seq, 0, t_send_ns)
                self._reject(
                    session.identity, p.ErrorCode.INTERNAL, f"inference failed: {exc}", request
                )
            return 0
        inference_s = time.perf_counter() - t0
        socket = self.socket
        for row, (session, seq, t_send_ns) in enumerate(requests):
            session.sent_seq += 1
            frame = session.encoder.encode(
                session.sent_seq, seq, time.monotonic_ns(), t_send_ns, row
            )  # the encoder's buffer: pyzmq copies it into the message (a small frame)
            try:
                socket.send(session.identity, MORE_NOW)
                socket.send(frame, NOBLOCK)
                if session.blocked:
                    session.blocked = 0
            except zmq.ZMQError as exc:
                self._send_failed(session, exc)
        self.metrics.observe("inference", inference_s)
        self.metrics.count("batches")
        self.metrics.count("actions_sent", len(requests))
        return len(requests)

    def _send(
        self, session: Session, kind: p.MsgType, payload: bytes, request: p.Message | None
    ) -> None:
        """A frame of ``kind`` in ``session`` (the session's next seq), answering ``request``."""
        session.sent_seq += 1
        msg = p.Message(
            kind, session.session_id, session.sent_seq, request.seq if request else 0,
            time.monotonic_ns(), request.t_send_ns if request else 0, payload=payload,
        )  # fmt: skip
        self._send_to(session.identity, p.encode(msg), session)

    def _send_to(self, identity: bytes, frame: bytes, session: Session | None) -> None:
        """Send without blocking; a full or vanished peer is counted (and its session ends)."""
        try:
            self.socket.send(identity, MORE_NOW)
            self.socket.send(frame, NOBLOCK)
            if session is not None:
                session.blocked = 0
        except zmq.ZMQError as exc:
            if session is not None:
                self._send_failed(session, exc)
            else:
                self.metrics.count("send_blocked")

    def _send_failed(self, session: Session, exc: zmq.ZMQError) -> None:
        self.metrics.count("send_blocked")
        if exc.errno == zmq.EHOSTUNREACH:  # the connection is gone
            self._close_session(session, "sessions_closed_gone")
            return
        session.blocked += 1
        if session.blocked >= self.config.unread_limit and session.session_id in self.sessions:
            self._close_session(session, "sessions_closed_unread")

    def _reject(
        self, identity: bytes, code: p.ErrorCode, text: str, request: p.Message | None = None
    ) -> None:
        """Count a refused frame and answer with ERROR unless the peer's budget is spent.

        The ERROR's header follows ``docs/protocol.md`` section 4: the peer's session and its
        next seq when it has one (else 0 and 0), and the request's seq and time when readable.
        """
        self.metrics.count(f"rejected_{code.name.lower()}")
        now = time.monotonic()
        session = self.sessions.get(self.by_identity.get(identity, 0))
        peer = session.peer if session is not None else self.peers.get(
            identity, self.budget, now, getattr(identity, "key", None)
        )  # fmt: skip
        if not peer.spend_error(self.budget, now):
            self.metrics.count("error_replies_suppressed")
            return
        payload = p.encode_error(code, text)
        if session is not None:
            self._send(session, p.MsgType.ERROR, payload, request)
            return
        msg = p.Message(
            p.MsgType.ERROR, 0, 0, request.seq if request else 0, time.monotonic_ns(),
            request.t_send_ns if request else 0, payload=payload,
        )  # fmt: skip
        self._send_to(identity, p.encode(msg), None)
