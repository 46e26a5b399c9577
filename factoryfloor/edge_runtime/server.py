"""The policy server: one ROUTER socket, a session per robot controller (``docs/protocol.md``).

Each ``run_once`` drains every frame waiting on the socket, keeps only the newest OBSERVATION of
each session, answers all of them with one batched inference call, and sends one ACTION per
session. Malformed frames, messages without a session and stale sequence numbers are counted and
answered with rate-limited ERROR frames; the loop never raises on bad input.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import zmq

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.metrics import Metrics, resident_memory_mb
from factoryfloor.edge_runtime.peers import Budget, Peer, PeerTable, Verdict
from factoryfloor.edge_runtime.served import ServedPolicy
from factoryfloor.edge_runtime.session_check import MAX_LOOP_MULTIPLE, check_hello


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Policy server settings (``docs/protocol.md``, section 8, states the rules they set).

    Attributes:
        bind: ZeroMQ endpoint to bind (loopback by default).
        max_sessions: Robot sessions served at once.
        max_action_age_ms: Largest action age controllers should accept (ms; sent in WELCOME).
        session_timeout_s: A session without OBSERVATION or HEARTBEAT for this long is closed (s).
        evict_after_s: When full, a HELLO evicts the longest-silent session silent this long (s).
        max_sessions_per_key: Sessions one CURVE client key may hold.
        peer_frames_per_s: Frames per second one peer may send (None: 8 x rate + 100).
        peer_burst_s: Bucket size of that budget, in seconds of it (s).
        abuse_window_s: Over budget this long: the peer is banned (s).
        ban_s: How long a ban lasts (s).
        error_replies_per_s: ERROR frames per peer per second at most (the rest only counted).
        send_hwm: Frames queued to one peer at most.
        unread_limit: Sends in a row to a full queue after which the session is closed.
        max_peers: Peers without a session remembered at most.
        poll_timeout_ms: Longest wait for a frame in ``run_once`` (ms).
        max_frames_per_drain: Frames read per ``run_once`` before answering.
        drain_budget_ms: Longest a drain reads before answering (ms).
        name: Server name sent in WELCOME.
    """

    bind: str = "tcp://127.0.0.1:5555"
    max_sessions: int = 64
    max_action_age_ms: float = 50.0
    session_timeout_s: float = 10.0
    evict_after_s: float = 0.5
    max_sessions_per_key: int = 8
    peer_frames_per_s: float | None = None
    peer_burst_s: float = 1.0
    abuse_window_s: float = 2.0
    ban_s: float = 10.0
    error_replies_per_s: float = 10.0
    send_hwm: int = 16
    unread_limit: int = 8
    max_peers: int = 4_096
    poll_timeout_ms: int = 100
    max_frames_per_drain: int = 1_000
    drain_budget_ms: float = 2.0
    name: str = "factoryfloor-edge"

    def __post_init__(self) -> None:
        if min(self.max_sessions, self.max_sessions_per_key, self.send_hwm, self.unread_limit,
               self.max_peers, self.max_frames_per_drain) < 1:  # fmt: skip
            raise ValueError("session, queue, peer and drain limits must be >= 1")
        if not 0 < self.max_action_age_ms <= 10_000:
            raise ValueError("max_action_age_ms must be in (0, 10000]")

    def budget(self, control_rate_hz: float) -> Budget:
        """The per-peer budget for a policy at ``control_rate_hz``."""
        rate = self.peer_frames_per_s or 8.0 * control_rate_hz + 100.0
        return Budget(
            frames_per_s=rate, burst=max(1.0, rate * self.peer_burst_s),
            errors_per_s=self.error_replies_per_s, abuse_window_s=self.abuse_window_s,
            ban_s=self.ban_s,
        )  # fmt: skip


@dataclass(slots=True)
class Session:
    """One robot controller's session, with the codecs of its OBSERVATION and ACTION frames."""

    session_id: int
    identity: bytes
    observations: p.StreamCodec
    actions: p.StreamCodec
    peer: Peer
    loop_rate_hz: float
    last_seq: int = 0
    sent_seq: int = 0
    last_seen_s: float = 0.0
    pending: p.Message | None = None
    reset_pending: bool = False
    blocked: int = 0  # sends in a row that found its queue full


_Request = tuple[Session, int, int]  # a session, the observation's seq and its t_send_ns
_Inbox = dict[int, Session]  # sessions with a new OBSERVATION in one drain (newest only)
_EPISODE_START = int(p.Flags.EPISODE_START)
_MORE_NOW = zmq.SNDMORE | zmq.NOBLOCK


class PolicyServer:
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
        self.metrics = Metrics("server")
        self.sessions: dict[int, Session] = {}
        self.by_identity: dict[bytes, int] = {}
        self.peers = PeerTable(config.max_peers)
        self.stop_event = threading.Event()
        self._next_expiry_s = 0.0
        self._rcvtimeo: int | None = None
        if socket is None:
            socket = zmq.Context.instance().socket(zmq.ROUTER)
            configure_router(socket, config)
            socket.bind(config.bind)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full or gone peer is told, not silent
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
        timeout = self.config.poll_timeout_ms if timeout_ms is None else timeout_ms
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
        inbox: _Inbox = {}
        self._guarded(frames, inbox)
        socket, received = self.socket, 1
        end = time.perf_counter() + self.config.drain_budget_ms * 1e-3
        while (
            received < self.config.max_frames_per_drain
            and int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN
            and time.perf_counter() < end
        ):
            self._guarded(self._recv(zmq.NOBLOCK), inbox)
            received += 1
        self.metrics.count("frames_received", received)
        sent = self._answer(inbox) if inbox else 0
        self._expire_sessions()
        return sent

    def _recv(self, flags: int = 0) -> list[Any]:
        """One message's frames; with ``keyed``, the first frame carries the peer's key."""
        if not self.keyed:
            return self.socket.recv_multipart(flags)
        parts = self.socket.recv_multipart(flags, copy=False)
        key = parts[-1].get("User-Id") if parts else None
        return [KeyedIdentity(parts[0].bytes, key), *(part.bytes for part in parts[1:])]

    def _answer_alone(self, frames: list[bytes]) -> int | None:
        """Answer the common case on its shortest path (actions sent), or None: not handled.

        The common case: a well-formed OBSERVATION of a live session within its budget, newer
        than its last, with finite values, and no other frame waiting. It gets what
        ``_on_observation`` and ``_answer`` would give it (same checks, counters, reset, reply)
        in fewer Python calls. Everything else returns None, having changed nothing but the
        peer's budget, and takes the general path.
        """
        if len(frames) != 2:
            return None
        identity, frame = frames
        session = self.sessions.get(self.by_identity.get(identity, 0))
        if session is None:
            return None
        flags = session.observations.flags_of(frame)  # a valid OBSERVATION of this session?
        if flags is None:
            return None
        seq, _, t_send_ns, _ = p.TAIL.unpack_from(frame, p.FIXED_HEAD)
        if (
            seq <= session.last_seq
            or session.pending is not None
            or int(self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN
        ):
            return None
        obs = np.frombuffer(frame, "<f4", offset=p.HEADER.size).reshape(1, -1)
        if not np.isfinite(obs).all():
            return None
        now = time.monotonic()
        if session.peer.admit(self.budget, now) != Verdict.ACCEPT:
            session.peer.tokens += 1.0  # not spent: the general path decides again
            return None
        session.last_seq, session.last_seen_s = seq, now
        if flags & _EPISODE_START or session.reset_pending:
            self.policy.reset(session.session_id)
            session.reset_pending = False
        self.metrics.count("frames_received")
        return self._infer_and_send([(session, seq, t_send_ns)], obs)

    def _guarded(self, frames: list[bytes], inbox: _Inbox) -> None:
        """``_handle`` one message: a failure is counted and answered, never raised."""
        try:
            self._handle(frames, inbox)
        except Exception as exc:  # the per-frame boundary: no peer can stop the server
            self.metrics.count("frame_failures")
            identity = frames[0] if frames else b""
            with contextlib.suppress(Exception):
                self._reject(identity, p.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"[:200])

    def _handle(self, frames: list[bytes], inbox: _Inbox) -> None:
        identity = frames[0]
        now = time.monotonic()
        session = self.sessions.get(self.by_identity.get(identity, 0))
        peer = session.peer if session is not None else self.peers.get(
            identity, self.budget, now, getattr(identity, "key", None)
        )  # fmt: skip
        verdict = peer.admit(self.budget, now)
        if verdict != Verdict.ACCEPT:
            self._over_budget(identity, peer, session, verdict, now)
            return
        if len(frames) != 2:
            self._reject(identity, p.ErrorCode.BAD_LENGTH, "one frame per message (no multipart)")
            return
        try:
            msg = p.decode(frames[1])
        except p.ProtocolError as exc:
            self._reject(identity, exc.code, exc.text, _readable_header(frames[1]))
            return
        handler = self._handlers.get(msg.type)
        if handler is None:
            self._reject(identity, p.ErrorCode.BAD_TYPE, f"{msg.type.name} is not sent to servers",
                         msg)  # fmt: skip
            return
        handler(self, identity, msg, inbox)

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

    def _on_hello(self, identity: bytes, msg: p.Message, inbox: _Inbox) -> None:
        try:
            if msg.session_id != 0 or msg.seq != 1:
                raise p.ProtocolError(
                    p.ErrorCode.BAD_PAYLOAD,
                    f"HELLO header has session_id {msg.session_id} and seq {msg.seq}; a HELLO "
                    "starts a session: session_id 0, seq 1",
                )
            loop_rate = check_hello(p.decode_json(msg.payload), self.spec)
        except p.ProtocolError as exc:
            self._reject(identity, exc.code, exc.text, msg)
            return
        old = self.sessions.get(self.by_identity.get(identity, 0))
        if old is not None:  # a new HELLO replaces the connection's session
            inbox.pop(old.session_id, None)
            self._close_session(old, "sessions_replaced")
        now = time.monotonic()
        peer = self.peers.pop(identity) or Peer.fresh(self.budget, now)
        refusal = self._make_room(peer.key, now)
        if refusal:
            self.peers.put(identity, peer)
            self._reject(identity, p.ErrorCode.TOO_MANY_SESSIONS, refusal, msg)
            return
        sid = self._new_session_id()
        session = Session(
            sid, identity,
            observations=p.StreamCodec(p.MsgType.OBSERVATION, sid, self.spec.obs_size),
            actions=p.StreamCodec(p.MsgType.ACTION, sid, self.spec.action_size),
            peer=peer, loop_rate_hz=loop_rate, last_seen_s=now,
        )  # fmt: skip
        self.sessions[sid] = session
        self.by_identity[identity] = sid
        self.metrics.count("sessions_opened")
        self.metrics.set_gauge("sessions", len(self.sessions))
        self._send(session, p.MsgType.WELCOME, self._welcome(session), msg)

    def _make_room(self, key: str | None, now: float) -> str:
        """Room for one more session (evicting the longest-silent one); why not, or ``""``."""
        if key is not None:
            held = sum(1 for s in self.sessions.values() if s.peer.key == key)
            if held >= self.config.max_sessions_per_key:
                return f"this client key holds {held} sessions (max_sessions_per_key)"
        if len(self.sessions) < self.config.max_sessions:
            return ""
        quietest = min(self.sessions.values(), key=lambda s: s.last_seen_s)
        silent_s = now - quietest.last_seen_s
        if silent_s < self.config.evict_after_s:
            return (
                f"server full: {len(self.sessions)} sessions, none silent for "
                f"{self.config.evict_after_s} s; retry later"
            )
        self._close_session(quietest, "sessions_evicted", f"evicted: silent for {silent_s:.1f} s")
        return ""

    def describe(self) -> dict[str, Any]:
        """What the server serves: DESCRIPTION's JSON (``docs/protocol.md``, section 5)."""
        spec, cfg = self.spec, self.config
        return {
            "protocol_version": p.PROTOCOL_VERSION,
            "server": cfg.name,
            "task_id": spec.task_id,
            "robot": spec.robot,
            "observation": spec.observation,
            "action": spec.action,
            "schema_sha256": spec.schema_sha256,
            "model_sha256": spec.model_sha256,
            "control_rate_hz": spec.control_rate_hz,
            "max_action_age_ms": cfg.max_action_age_ms,
            "session_timeout_s": cfg.session_timeout_s,
            "max_sessions": cfg.max_sessions,
            "sessions": len(self.sessions),
            "max_loop_multiple": MAX_LOOP_MULTIPLE,
            "hello": spec.hello("controller", 20.0, spec.model_sha256),
        }

    def _welcome(self, session: Session) -> bytes:
        about = self.describe()
        for key in ("max_sessions", "sessions", "max_loop_multiple", "hello"):
            del about[key]
        about.update(session_id=session.session_id, loop_rate_hz=session.loop_rate_hz)
        return p.encode_json(about)

    def _on_describe(self, identity: bytes, msg: p.Message, inbox: _Inbox) -> None:
        self.metrics.count("describes")
        reply = p.Message(
            p.MsgType.DESCRIPTION, 0, 0, msg.seq, time.monotonic_ns(), msg.t_send_ns,
            payload=p.encode_json(self.describe()),
        )  # fmt: skip
        self._send_to(identity, p.encode(reply), None)

    def _on_observation(self, identity: bytes, msg: p.Message, inbox: _Inbox) -> None:
        session = self._session_of(identity, msg)
        if session is None:
            return
        if msg.seq <= session.last_seq:
            self.metrics.count("observations_stale")  # duplicated, reordered or replayed
            return
        if len(msg.payload) != 4 * self.spec.obs_size:
            text = f"{len(msg.payload) // 4} values; the observation spec has {self.spec.obs_size}"
            self._reject(identity, p.ErrorCode.BAD_LENGTH, text, msg)
            return
        if session.pending is not None:
            self.metrics.count("observations_superseded")
        session.last_seq, session.last_seen_s = msg.seq, time.monotonic()
        session.pending = msg
        if int(msg.flags) & _EPISODE_START:  # int arithmetic: IntFlag operators are slow
            session.reset_pending = True
        inbox[session.session_id] = session

    def _on_heartbeat(self, identity: bytes, msg: p.Message, inbox: _Inbox) -> None:
        session = self._session_of(identity, msg)
        if session is not None:
            session.last_seen_s = time.monotonic()
            self.metrics.count("heartbeats")
            self._send(session, p.MsgType.HEARTBEAT, b"", msg)

    def _on_bye(self, identity: bytes, msg: p.Message, inbox: _Inbox) -> None:
        session = self._session_of(identity, msg)
        if session is not None:
            self._send(session, p.MsgType.BYE, b"", msg)
            inbox.pop(session.session_id, None)
            self._close_session(session, "sessions_closed_bye")

    def _on_error(self, identity: bytes, msg: p.Message, inbox: _Inbox) -> None:
        self.metrics.count("controller_errors")  # counted, never answered (no error loops)

    _handlers: ClassVar[dict[p.MsgType, Any]] = {
        p.MsgType.HELLO: _on_hello,
        p.MsgType.OBSERVATION: _on_observation,
        p.MsgType.HEARTBEAT: _on_heartbeat,
        p.MsgType.BYE: _on_bye,
        p.MsgType.ERROR: _on_error,
        p.MsgType.DESCRIBE: _on_describe,
    }

    def _session_of(self, identity: bytes, msg: p.Message) -> Session | None:
        session = self.sessions.get(msg.session_id)
        if session is None or session.identity != identity:
            self._reject(identity, p.ErrorCode.NO_SESSION, "no such session: send HELLO", msg)
            return None
        return session

    def _answer(self, inbox: _Inbox) -> int:
        """One inference call for the newest finite observation of every session in ``inbox``."""
        requests: list[_Request] = []
        payloads: list[bytes] = []
        for session in inbox.values():
            request, session.pending = session.pending, None
            if request is not None:
                requests.append((session, request.seq, request.t_send_ns))
                payloads.append(request.payload)
        if not requests:
            return 0
        # payload sizes were checked on arrival: one join, one view, no per-row copies
        obs = np.frombuffer(b"".join(payloads), "<f4")
        obs = obs.reshape(len(requests), self.spec.obs_size)
        finite = np.isfinite(obs)
        if not finite.all():
            finite = finite.all(axis=1)
            self.metrics.count("observations_nonfinite", int((~finite).sum()))
            for (session, seq, t_send_ns), ok in zip(requests, finite, strict=True):
                if not ok:
                    self._reject(
                        session.identity, p.ErrorCode.NON_FINITE,
                        "the observation holds NaN or Inf: no action computed",
                        p.Message(p.MsgType.OBSERVATION, session.session_id, seq, 0, t_send_ns),
                    )  # fmt: skip
            requests = [r for r, ok in zip(requests, finite, strict=True) if ok]
            obs = obs[finite]
            if not requests:
                return 0
        for session, _, _ in requests:
            if session.reset_pending:
                self.policy.reset(session.session_id)
                session.reset_pending = False
        return self._infer_and_send(requests, obs)

    def _infer_and_send(self, requests: list[_Request], obs: np.ndarray) -> int:
        """One inference call for ``obs`` (one row per request); one ACTION per request."""
        t0 = time.perf_counter()
        try:
            actions = self.policy.act_batch([r[0].session_id for r in requests], obs)
            actions = np.asarray(actions, dtype="<f4")
            if actions.shape != (len(requests), self.spec.action_size):
                shape = (len(requests), self.spec.action_size)
                raise ValueError(f"the policy returned actions {actions.shape}, not {shape}")
        except Exception as exc:  # the policy's failure must not stop the server
            for session, seq, t_send_ns in requests:
                request = p.Message(p.MsgType.OBSERVATION, session.session_id, seq, 0, t_send_ns)
                self._reject(
                    session.identity, p.ErrorCode.INTERNAL, f"inference failed: {exc}", request
                )
            return 0
        inference_s = time.perf_counter() - t0
        socket = self.socket
        for (session, seq, t_send_ns), action in zip(requests, actions, strict=True):
            session.sent_seq += 1
            frame = session.actions.encode(
                session.sent_seq, seq, time.monotonic_ns(), t_send_ns, action.tobytes()
            )
            try:
                socket.send(session.identity, _MORE_NOW)
                socket.send(frame, zmq.NOBLOCK)
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
            self.socket.send(identity, _MORE_NOW)
            self.socket.send(frame, zmq.NOBLOCK)
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

    def _new_session_id(self) -> int:
        while True:
            sid = secrets.randbits(32)
            if sid and sid not in self.sessions:
                return sid

    def _expire_sessions(self) -> None:
        """Close silent sessions; scanned at most once a second (not per message)."""
        now = time.monotonic()
        if now < self._next_expiry_s:
            return
        self._next_expiry_s = now + 1.0
        deadline = now - self.config.session_timeout_s
        for session in [s for s in self.sessions.values() if s.last_seen_s < deadline]:
            self._close_session(
                session, "sessions_expired", f"silent for {self.config.session_timeout_s} s"
            )
        self.metrics.set_gauge("peers_tracked", len(self.peers))

    def _close_session(self, session: Session, counter: str, why: str = "") -> None:
        """Forget ``session`` (telling the peer ``SESSION_CLOSED`` when ``why`` is given)."""
        if self.sessions.pop(session.session_id, None) is None:
            return
        if why and session.peer.spend_error(self.budget, time.monotonic()):
            self.metrics.count("rejected_session_closed")
            self._send_to(session.identity, p.encode(p.Message(
                p.MsgType.ERROR, session.session_id, session.sent_seq + 1, 0,
                time.monotonic_ns(), 0, payload=p.encode_error(p.ErrorCode.SESSION_CLOSED, why),
            )), None)  # fmt: skip
        if self.by_identity.get(session.identity) == session.session_id:
            del self.by_identity[session.identity]
            self.peers.put(session.identity, session.peer)
        self.policy.reset(session.session_id)
        self.metrics.count(counter)
        self.metrics.set_gauge("sessions", len(self.sessions))


class KeyedIdentity(bytes):
    """A peer's routing identity that also carries its CURVE key (``key``; None without)."""

    key: str | None

    def __new__(cls, identity: bytes, key: str | None) -> KeyedIdentity:  # noqa: D102
        obj = super().__new__(cls, identity)
        obj.key = key
        return obj


def configure_router(socket: zmq.Socket[bytes], config: ServerConfig) -> None:
    """Options of the server's ROUTER socket, set before it binds (queues per peer)."""
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, config.send_hwm)
    socket.setsockopt(zmq.RCVHWM, 64)  # frames read ahead per peer: a flood waits in TCP
    socket.setsockopt(zmq.ROUTER_MANDATORY, 1)


def _readable_header(frame: bytes) -> p.Message | None:
    """The header of a frame ``decode`` refused, when its magic, version and length are right.

    An ERROR echoes such a frame's seq and t_send_ns (``docs/protocol.md``, section 4).
    """
    if len(frame) < p.HEADER.size:
        return None
    magic, version, _, _, length, session, seq, _, t_send, _ = p.HEADER.unpack_from(frame)
    if magic != p.MAGIC or version != p.PROTOCOL_VERSION or length != len(frame) - p.HEADER.size:
        return None
    return p.Message(p.MsgType.ERROR, session, seq, 0, t_send)
