"""The policy server's settings and its per-session and per-connection records."""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.fastpath import ReferenceEncoder, ReferenceGate
from factoryfloor.edge_runtime.peers import Budget, Peer


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
        handshakes_per_s: HELLO and DESCRIBE frames per peer per second at most.
        send_hwm: Frames queued to one peer at most.
        unread_limit: Sends in a row to a full queue after which the session is closed.
        max_peers: Peers without a session remembered at most.
        poll_timeout_ms: Longest wait for a frame in ``run_once`` (ms).
        max_frames_per_drain: Frames read per ``run_once`` before answering.
        drain_budget_ms: Longest a drain reads before answering (ms).
        handshake_budget_ms: Time given to queued HELLOs after each drain (ms; one at least).
        max_pending_hellos: HELLOs queued at most (the rest: ``TOO_MANY_SESSIONS``, retry).
        flood_pause_ms: Pause after a drain in which only over-budget peers had frames
            waiting (ms): they are read no faster than that, and TCP pushes back on them.
        name: Server name sent in WELCOME.
    """

    bind: str = "tcp://127.0.0.1:5555"
    max_sessions: int = 64
    max_action_age_ms: float = 50.0
    session_timeout_s: float = 10.0
    evict_after_s: float = 0.5
    max_sessions_per_key: int = 8
    peer_frames_per_s: float | None = None
    peer_burst_s: float = 0.25
    abuse_window_s: float = 2.0
    ban_s: float = 10.0
    error_replies_per_s: float = 10.0
    handshakes_per_s: float = 20.0
    send_hwm: int = 16
    unread_limit: int = 8
    max_peers: int = 4_096
    poll_timeout_ms: int = 100
    max_frames_per_drain: int = 1_000
    drain_budget_ms: float = 0.5
    flood_pause_ms: float = 0.2
    handshake_budget_ms: float = 1.0
    max_pending_hellos: int = 128
    name: str = "factoryfloor-edge"

    def __post_init__(self) -> None:
        if min(self.max_sessions, self.max_sessions_per_key, self.send_hwm, self.unread_limit,
               self.max_peers, self.max_frames_per_drain, self.max_pending_hellos) < 1:  # fmt: skip
            raise ValueError("session, queue, peer and drain limits must be >= 1")
        if not 0 < self.max_action_age_ms <= 10_000:
            raise ValueError("max_action_age_ms must be in (0, 10000]")

    def budget(self, control_rate_hz: float) -> Budget:
        """The per-peer budget for a policy at ``control_rate_hz``."""
        rate = self.peer_frames_per_s or 8.0 * control_rate_hz + 100.0
        return Budget(
            frames_per_s=rate, burst=max(1.0, rate * self.peer_burst_s),
            errors_per_s=self.error_replies_per_s, abuse_window_s=self.abuse_window_s,
            ban_s=self.ban_s, handshakes_per_s=self.handshakes_per_s,
        )  # fmt: skip


@dataclass(slots=True)
class Session:
    """One robot controller's session, with the codecs of its OBSERVATION and ACTION frames."""

    session_id: int
    identity: bytes
    observations: p.StreamCodec
    actions: p.StreamCodec
    gate: ReferenceGate  # its OBSERVATION frames into inference's rows (fastpath)
    encoder: ReferenceEncoder  # its ACTION frames from inference's rows (fastpath)
    peer: Peer
    loop_rate_hz: float
    budget: Budget  # its frame budget, from its declared loop rate
    last_seq: int = 0
    sent_seq: int = 0
    last_seen_s: float = 0.0
    pending: p.Message | None = None
    reset_pending: bool = False
    blocked: int = 0  # sends in a row that found its queue full


Request = tuple[Session, int, int]  # a session, the observation's seq and its t_send_ns
Inbox = dict[int, Session]  # sessions with a new OBSERVATION in one drain (newest only)
EPISODE_START = int(p.Flags.EPISODE_START)
# plain ints: pyzmq's constants are enums, and their operators cost a Python call per message
MORE_NOW = int(zmq.SNDMORE | zmq.NOBLOCK)
NOBLOCK, EVENTS, POLLIN, RCVMORE = (
    int(c) for c in (zmq.NOBLOCK, zmq.EVENTS, zmq.POLLIN, zmq.RCVMORE)
)


class KeyedIdentity(bytes):
    """A peer's routing identity that also carries its CURVE key (``key``; None without)."""

    key: str | None

    def __new__(cls, identity: bytes, key: str | None) -> KeyedIdentity:  # noqa: D102
        obj = super().__new__(cls, identity)
        obj.key = key
        return obj


MAX_MESSAGE_BYTES = 2 * (48 + 65_536)  # larger messages close the connection unread
SEND_BUFFER_BYTES = 16_384  # per connection: the kernel's share of a peer's send queue


def configure_router(socket: zmq.Socket[bytes], config: ServerConfig) -> None:
    """Options of the server's ROUTER socket, set before it binds (queues per peer)."""
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, config.send_hwm)
    socket.setsockopt(zmq.SNDBUF, SEND_BUFFER_BYTES)  # else the kernel queues what ZeroMQ won't
    socket.setsockopt(zmq.RCVHWM, 64)  # frames read ahead per peer: a flood waits in TCP
    socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # ZeroMQ drops a connection that sends a larger message before it is read at all; up to
    # twice the largest frame, it is read and answered BAD_LENGTH (docs/protocol.md, section 8)
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)


def readable_header(frame: bytes) -> p.Message | None:
    """The header of a frame ``decode`` refused, when its magic, version and length are right.

    An ERROR echoes such a frame's seq and t_send_ns (``docs/protocol.md``, section 4).
    """
    if len(frame) < p.HEADER.size:
        return None
    magic, version, _, _, length, session, seq, _, t_send, _ = p.HEADER.unpack_from(frame)
    if magic != p.MAGIC or version != p.PROTOCOL_VERSION or length != len(frame) - p.HEADER.size:
        return None
    return p.Message(p.MsgType.ERROR, session, seq, 0, t_send)
