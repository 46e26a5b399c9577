"""Per-peer budgets of the policy server: what one connection may cost the others.

Each ZeroMQ peer (a connection's routing identity) gets a ``Peer``: a token bucket of frames
(``docs/protocol.md``, section 8: ``8 * control_rate_hz + 100`` frames per second, a burst of one
second's worth) and one of ERROR replies (10 per second). A frame over budget is dropped unread;
a peer that stays over it for ``abuse_window_s`` is banned for ``ban_s`` (with CURVE the ban
follows its key, so reconnecting does not lift it). Peers without a session live in a
``PeerTable``, bounded (least recently seen forgotten first); a session carries its own peer.

Pure bookkeeping on an injected clock value: no sockets.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Budget rules for every peer.

    Attributes:
        frames_per_s: Frames a peer may send per second on average.
        burst: Frames it may send at once (bucket size).
        errors_per_s: ERROR replies it gets per second at most (also the error bucket's size).
        handshakes_per_s: HELLO and DESCRIBE frames per second at most (also the bucket's
            size): each costs a JSON parse and a schema check, far more than a frame.
        abuse_window_s: Over budget this long without backing off: banned (s).
        ban_s: How long a ban lasts (s).
    """

    frames_per_s: float
    burst: float
    errors_per_s: float = 10.0
    handshakes_per_s: float = 20.0
    abuse_window_s: float = 2.0
    ban_s: float = 10.0


class Verdict:
    """What to do with one frame (``Peer.admit``)."""

    ACCEPT = 0
    THROTTLE = 1  # dropped unread; tell the peer at most once a second
    BAN = 2  # over budget for too long: close its session, drop its frames for ban_s
    BANNED = 3  # dropped unread, silently


@dataclass(slots=True)
class Peer:
    """One connection's budgets.

    Attributes:
        tokens: Frames it may still send now.
        stamp_s: When ``tokens`` was last refilled (s, monotonic).
        error_tokens: ERROR replies it may still get now.
        error_stamp_s: When ``error_tokens`` was last refilled (s).
        over_since_s: Since when it has been over budget without backing off (s), or None.
        banned_until_s: Its frames are dropped until then (s).
        notified_s: When it was last told ``THROTTLED`` (s).
        key: Its CURVE client key (the ZAP User-Id), or None without security.
    """

    tokens: float
    stamp_s: float
    error_tokens: float
    error_stamp_s: float
    over_since_s: float | None = None
    banned_until_s: float = 0.0
    notified_s: float = -1e9
    key: str | None = None
    handshake_tokens: float = 0.0
    handshake_stamp_s: float = 0.0

    @classmethod
    def fresh(cls, budget: Budget, now_s: float, key: str | None = None) -> Peer:
        """A peer with full buckets."""
        return cls(
            budget.burst, now_s, budget.errors_per_s, now_s, key=key,
            handshake_tokens=budget.handshakes_per_s, handshake_stamp_s=now_s,
        )  # fmt: skip

    def spend_handshake(self, budget: Budget, now_s: float) -> bool:
        """Whether it may send one more HELLO or DESCRIBE now (spends it)."""
        rate = budget.handshakes_per_s
        elapsed = now_s - self.handshake_stamp_s
        self.handshake_tokens = min(rate, self.handshake_tokens + elapsed * rate)
        self.handshake_stamp_s = now_s
        if self.handshake_tokens < 1.0:
            return False
        self.handshake_tokens -= 1.0
        return True

    def admit(self, budget: Budget, now_s: float) -> int:
        """Spend one frame token; the ``Verdict`` for this frame."""
        if now_s < self.banned_until_s:
            return Verdict.BANNED
        tokens = min(budget.burst, self.tokens + (now_s - self.stamp_s) * budget.frames_per_s)
        self.stamp_s = now_s
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            if self.over_since_s is not None and self.tokens >= 0.5 * budget.burst:
                self.over_since_s = None  # it backed off
            return Verdict.ACCEPT
        self.tokens = tokens
        if self.over_since_s is None:
            self.over_since_s = now_s
        elif now_s - self.over_since_s >= budget.abuse_window_s:
            self.banned_until_s, self.over_since_s = now_s + budget.ban_s, None
            return Verdict.BAN
        return Verdict.THROTTLE

    def may_notify(self, now_s: float) -> bool:
        """Whether to tell it ``THROTTLED`` now (at most once a second)."""
        if now_s - self.notified_s < 1.0:
            return False
        self.notified_s = now_s
        return True

    def spend_error(self, budget: Budget, now_s: float) -> bool:
        """Whether it may get one more ERROR reply now (spends it)."""
        rate = budget.errors_per_s
        self.error_tokens = min(rate, self.error_tokens + (now_s - self.error_stamp_s) * rate)
        self.error_stamp_s = now_s
        if self.error_tokens < 1.0:
            return False
        self.error_tokens -= 1.0
        return True


class PeerTable:
    """Peers without a session, at most ``capacity``, least recently seen forgotten first.

    Forgetting a peer only refills its buckets (a hostile peer gains one burst by flooding the
    table with other identities); bans of CURVE keys are kept apart, in ``banned_keys``.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a peer table needs a capacity of at least 1")
        self.capacity = capacity
        self._peers: OrderedDict[bytes, Peer] = OrderedDict()
        self.banned_keys: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, identity: bytes, budget: Budget, now_s: float, key: str | None) -> Peer:
        """The peer of ``identity``, created (and the oldest forgotten) when new."""
        peer = self._peers.get(identity)
        if peer is not None:
            self._peers.move_to_end(identity)
            return peer
        peer = Peer.fresh(budget, now_s, key)
        if key is not None and self.banned_keys.get(key, 0.0) > now_s:
            peer.banned_until_s = self.banned_keys[key]
        self._peers[identity] = peer
        if len(self._peers) > self.capacity:
            self._peers.popitem(last=False)
        return peer

    def pop(self, identity: bytes) -> Peer | None:
        """Forget ``identity`` (it now has a session that carries its peer); its peer or None."""
        return self._peers.pop(identity, None)

    def put(self, identity: bytes, peer: Peer) -> None:
        """Keep ``peer`` for ``identity`` again (its session ended)."""
        self._peers[identity] = peer
        self._peers.move_to_end(identity)
        if len(self._peers) > self.capacity:
            self._peers.popitem(last=False)

    def ban_key(self, key: str, until_s: float, now_s: float) -> None:
        """Ban a CURVE key until ``until_s`` (expired bans are dropped here)."""
        self.banned_keys = {k: t for k, t in self.banned_keys.items() if t > now_s}
        self.banned_keys[key] = until_s
