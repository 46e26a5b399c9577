"""The session rules of the policy server (``docs/protocol.md``, section 8), as a mixin.

HELLO opens a session (checked by ``session_check``), replacing the connection's old one; when
the server is full the longest-silent session is evicted if it has been silent long enough;
DESCRIBE, HEARTBEAT, BYE and a controller's ERROR are answered (or counted) here; silent
sessions expire. ``PolicyServer`` supplies the socket, the sending and the error replies.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import zmq

from factoryfloor.edge_runtime import fastpath
from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.metrics import Metrics
from factoryfloor.edge_runtime.peers import Budget, Peer, PeerTable
from factoryfloor.edge_runtime.served import Rows, ServedPolicy
from factoryfloor.edge_runtime.server_config import Inbox, ServerConfig, Session
from factoryfloor.edge_runtime.session_check import MAX_LOOP_MULTIPLE, check_hello
from factoryfloor.edge_runtime.spec import PolicySpec


class SessionRules:
    """Session bookkeeping of ``PolicyServer`` (which sets these attributes)."""

    policy: ServedPolicy
    rows: Rows
    spec: PolicySpec
    config: ServerConfig
    budget: Budget
    metrics: Metrics
    sessions: dict[int, Session]
    by_identity: dict[bytes, int]
    peers: PeerTable
    socket: zmq.Socket[bytes]
    _hellos: dict[bytes, p.Message]  # queued HELLOs by connection, oldest first
    _description: tuple[int, bytes] = (-1, b"")  # DESCRIPTION's payload for a session count
    _next_expiry_s: float

    def _send(
        self, session: Session, kind: p.MsgType, payload: bytes, request: p.Message | None
    ) -> None:
        raise NotImplementedError

    def _send_to(self, identity: bytes, frame: bytes, session: Session | None) -> None:
        raise NotImplementedError

    def _reject(
        self, identity: bytes, code: p.ErrorCode, text: str, request: p.Message | None = None
    ) -> None:
        raise NotImplementedError

    def _on_hello(self, identity: bytes, msg: p.Message, inbox: Inbox) -> None:
        """Queue a HELLO: checking one costs ~0.5 ms, so it is not done while reading.

        ZeroMQ reads connections round-robin: were 100 peers' HELLOs checked as they are read,
        a controller's next observation would wait behind 50 ms of them. Queued, they cost a
        few microseconds each to read, and ``process_hellos`` checks them in a time budget
        after each drain's observations are answered. A connection has one HELLO queued at
        most (a newer one replaces it); a full queue is answered ``TOO_MANY_SESSIONS``.
        """
        pending = self._hellos
        if identity in pending:
            del pending[identity]  # the newer HELLO goes to the back
        elif len(pending) >= self.config.max_pending_hellos:
            self.metrics.count("hellos_refused_busy")
            text = f"{len(pending)} handshakes queued: retry in a few ms"
            self._reject(identity, p.ErrorCode.TOO_MANY_SESSIONS, text, msg)
            return
        pending[identity] = msg

    def process_hellos(self, budget_s: float) -> None:
        """Check queued HELLOs (oldest first) for about ``budget_s`` (s; at least one)."""
        end = time.perf_counter() + budget_s
        pending = self._hellos
        while pending:
            identity = next(iter(pending))
            self._open_session(identity, pending.pop(identity))
            if time.perf_counter() >= end:
                break

    def _open_session(self, identity: bytes, msg: p.Message) -> None:
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
            self._close_session(old, "sessions_replaced")
        now = time.monotonic()
        peer = self.peers.pop(identity) or Peer.fresh(self.budget, now)
        refusal = self._make_room(peer.key, now)
        if refusal:
            self.peers.put(identity, peer)
            self._reject(identity, p.ErrorCode.TOO_MANY_SESSIONS, refusal, msg)
            return
        sid = self._new_session_id()
        observations = p.StreamCodec(p.MsgType.OBSERVATION, sid, self.spec.obs_bytes // 4)
        actions = p.StreamCodec(p.MsgType.ACTION, sid, self.spec.action_size)
        spans = self.spec.obs_layout.float_spans
        session = Session(
            sid, identity, observations=observations, actions=actions,
            gate=fastpath.gate(observations, fastpath.SEQ, self.rows.obs, spans),
            encoder=fastpath.encoder(actions, self.rows.actions),
            peer=peer, loop_rate_hz=loop_rate, budget=self.config.budget(loop_rate),
            last_seen_s=now,
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
            "publisher": spec.publisher or None,
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

    def _on_describe(self, identity: bytes, msg: p.Message, inbox: Inbox) -> None:
        self.metrics.count("describes")
        count, payload = self._description
        if count != len(self.sessions) or not payload:  # encoded once per session count: a
            payload = p.encode_json(self.describe())  # burst of DESCRIBEs stays cheap to answer
            self._description = (len(self.sessions), payload)
        reply = p.Message(
            p.MsgType.DESCRIPTION, 0, 0, msg.seq, time.monotonic_ns(), msg.t_send_ns,
            payload=payload,
        )  # fmt: skip
        self._send_to(identity, p.encode(reply), None)

    def _on_heartbeat(self, identity: bytes, msg: p.Message, inbox: Inbox) -> None:
        session = self._session_of(identity, msg)
        if session is not None:
            session.last_seen_s = time.monotonic()
            self.metrics.count("heartbeats")
            self._send(session, p.MsgType.HEARTBEAT, b"", msg)

    def _on_bye(self, identity: bytes, msg: p.Message, inbox: Inbox) -> None:
        session = self._session_of(identity, msg)
        if session is not None:
            self._send(session, p.MsgType.BYE, b"", msg)
            inbox.pop(session.session_id, None)
            self._close_session(session, "sessions_closed_bye")

    def _on_error(self, identity: bytes, msg: p.Message, inbox: Inbox) -> None:
        self.metrics.count("controller_errors")  # counted, never answered (no error loops)

    def _session_of(self, identity: bytes, msg: p.Message) -> Session | None:
        session = self.sessions.get(msg.session_id)
        if session is None or session.identity != identity:
            self._reject(identity, p.ErrorCode.NO_SESSION, "no such session: send HELLO", msg)
            return None
        return session

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
