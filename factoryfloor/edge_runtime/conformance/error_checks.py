"""Checks of a server's answers to frames without a session, to ERRORs and to garbage.

``docs/protocol.md`` sections 1, 3, 4, 6 and 8; each check opens its own connections and ends
every session it opened with BYE.
"""

from __future__ import annotations

import os
import time

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.conformance import probe
from factoryfloor.edge_runtime.conformance.kit import Registry, ServerTarget, expect, register

CHECKS: Registry = {}


@register(
    CHECKS,
    "no_session",
    "§1, §4",
    "OBSERVATION/HEARTBEAT/BYE outside a session or naming another connection's -> NO_SESSION",
)
def no_session(target: ServerTarget) -> None:
    """Frames without a session of their own."""
    with target.peers() as make:
        owner, served = probe.start(make)
        welcome, _ = probe.open_session(owner, served.hello())
        cases = {
            "OBSERVATION before HELLO": (p.MsgType.OBSERVATION, 0),
            "HEARTBEAT before HELLO": (p.MsgType.HEARTBEAT, 0),
            "BYE before HELLO": (p.MsgType.BYE, 0),
            "OBSERVATION with an unknown session": (p.MsgType.OBSERVATION, welcome.session_id ^ 1),
            "OBSERVATION with another connection's session": (
                p.MsgType.OBSERVATION,
                welcome.session_id,
            ),
            "HEARTBEAT with another connection's session": (
                p.MsgType.HEARTBEAT,
                welcome.session_id,
            ),
        }
        for what, (kind, session) in cases.items():
            other = make()
            payload = probe.observation(served.obs_size) if kind is p.MsgType.OBSERVATION else b""
            echo = other.send_msg(kind, payload, session=session, seq=3)
            probe.outside_error(other, p.ErrorCode.NO_SESSION, what, echo)
        probe.step(owner, served, "the owner's session afterwards")


@register(
    CHECKS,
    "error_from_controller_not_answered",
    "§3",
    "an ERROR from a controller is never answered, and the session goes on",
)
def error_from_controller_not_answered(target: ServerTarget) -> None:
    """ERROR frames sent to the server."""
    with target.peers() as make:
        loner, served = probe.start(make)
        loner.send_msg(p.MsgType.ERROR, p.encode_error(p.ErrorCode.INTERNAL, "test"), seq=0)
        loner.silence(target.silence_s, "ERROR from a peer without a session")
        peer = make()
        probe.open_session(peer, served.hello())
        peer.send_msg(p.MsgType.ERROR, p.encode_error(p.ErrorCode.NON_FINITE, "kit test"))
        peer.silence(target.silence_s, "ERROR in a session")
        probe.step(peer, served, "an observation after the ERROR")


@register(
    CHECKS,
    "error_header_rules",
    "§4, §6",
    "ERROR in a session: its id, seq continuing WELCOME/ACTION; outside: 0/0; echoes",
)
def error_header_rules(target: ServerTarget) -> None:
    """The headers of ERROR frames."""
    with target.peers() as make:
        peer, served = probe.start(make)
        welcome, _ = probe.open_session(peer, served.hello())
        action = probe.step(peer, served, "first observation")
        expect(action.seq > welcome.seq, f"ACTION seq {action.seq} <= WELCOME's {welcome.seq}")
        wrong = probe.observation(served.obs_size + 1)
        seq, t_send = peer.send_msg(p.MsgType.OBSERVATION, wrong)
        msg = peer.error(p.ErrorCode.BAD_LENGTH, "OBSERVATION of the wrong size")
        probe.header(msg, "ERROR in a session", peer.session, None, (seq, t_send))
        expect(
            msg.seq > action.seq, f"ERROR seq {msg.seq} not above the last ACTION's {action.seq}"
        )
        after = probe.step(peer, served, "observation after the ERROR")
        expect(after.seq > msg.seq, f"ACTION seq {after.seq} not above the ERROR's {msg.seq}")
        loner = make()
        echo = loner.send_msg(p.MsgType.HEARTBEAT, seq=42)
        probe.outside_error(loner, p.ErrorCode.NO_SESSION, "ERROR outside a session", echo)
        loner.send(b"XXXX" + bytes(44))
        probe.outside_error(loner, p.ErrorCode.BAD_MAGIC, "ERROR of an unreadable header", (0, 0))


@register(
    CHECKS,
    "survives_garbage",
    "§8",
    "after 1000 random-byte frames the server still opens sessions and answers them",
)
def survives_garbage(target: ServerTarget) -> None:
    """Random frames, some with a valid prefix, then a fresh session."""
    with target.peers() as make:
        vandal, served = probe.start(make)
        prefix = p.MAGIC + bytes([p.PROTOCOL_VERSION])
        for i in range(1000):
            size = 1 + (i * 7919) % 120
            noise = os.urandom(size)
            vandal.send(prefix + noise if i % 2 else noise)
        time.sleep(0.2)
        peer = make()
        probe.open_session(peer, served.hello(), "HELLO after the garbage")
        for i in range(3):
            probe.step(peer, served, f"observation {i + 1} after the garbage")
