"""Steps the server checks are made of: a handshake, an observation, header expectations.

Every server check starts the same way (``start``): a connection, DESCRIBE, and the server's
``hello`` template with the kit's controller name. The helpers here raise ``CheckFailed`` with
one line naming the step and what differed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.conformance.kit import (
    CheckFailed,
    Peer,
    describe,
    describe_msg,
    error_code,
    expect,
)
from factoryfloor.edge_runtime.payload import Layout

CONTROLLER = "ffep-conformance"
Json = dict[str, Any]


class Served(NamedTuple):
    """What the server said it serves (its DESCRIPTION).

    Attributes:
        description: The DESCRIPTION's JSON.
        obs_size: 4-byte words of an OBSERVATION payload: its float32 values for a float32-only
            spec; for a spec with uint8 fields (``payload.py``) the padded payload's bytes / 4,
            so that ``observation(obs_size)`` is a payload of the right length either way.
        action_size: Float32 values of an ACTION.
    """

    description: Json
    obs_size: int
    action_size: int

    def hello(self, **overrides: Any) -> Json:
        """The server's HELLO template, as this kit's controller, with ``overrides``."""
        hello = dict(self.description["hello"])
        hello["controller"] = CONTROLLER
        hello.update(overrides)
        return hello

    @property
    def rate_hz(self) -> float:
        """The policy rate (Hz)."""
        return float(self.description["control_rate_hz"])


def served(peer: Peer) -> Served:
    """DESCRIBE on ``peer`` and what it tells.

    Raises:
        CheckFailed: When DESCRIPTION lacks what every check needs.
    """
    desc = describe(peer)
    for key in ("hello", "observation", "action", "control_rate_hz"):
        expect(key in desc, f"DESCRIPTION has no {key!r}; section 5 lists it")
    expect(isinstance(desc["hello"], dict), "DESCRIPTION's 'hello' is not an object")
    try:
        sizes = Layout(desc["observation"]).size // 4, p.spec_floats(desc["action"])
    except (KeyError, TypeError, ValueError) as exc:  # ProtocolError is a ValueError
        raise CheckFailed(f"DESCRIPTION's specs are unusable: {exc!r}") from None
    return Served(desc, *sizes)


def start(make: Callable[[], Peer]) -> tuple[Peer, Served]:
    """A new connection and what the server serves (learned over it)."""
    peer = make()
    return peer, served(peer)


def send_hello(peer: Peer, hello: Json | bytes, *, session: int = 0, seq: int = 1) -> int:
    """Send a HELLO (an object, or raw payload bytes); its ``t_send_ns``."""
    payload = hello if isinstance(hello, bytes) else p.encode_json(hello)
    peer.seq = seq
    return peer.send_msg(p.MsgType.HELLO, payload, session=session, seq=seq)[1]


def open_session(peer: Peer, hello: Json, what: str = "HELLO") -> tuple[p.Message, Json]:
    """HELLO, WELCOME: the WELCOME and its JSON; ``peer`` is then in the session."""
    send_hello(peer, hello)
    msg = peer.reply(p.MsgType.WELCOME, what)
    try:
        welcome = p.decode_json(msg.payload)
    except p.ProtocolError as exc:
        raise CheckFailed(f"{what}: WELCOME is not valid JSON: {exc.text}") from None
    expect(msg.session_id != 0, f"{what}: WELCOME header session_id is 0")
    peer.session = msg.session_id
    return msg, welcome


def observation(size: int, value: float = 0.1) -> bytes:
    """A float32 OBSERVATION payload of ``size`` values equal to ``value``."""
    return p.encode_floats(np.full(size, value, dtype=np.float32))


def observe(peer: Peer, size: int, **fields: Any) -> tuple[int, int]:
    """Send an OBSERVATION in the peer's session; its ``(seq, t_send_ns)``."""
    return peer.send_msg(p.MsgType.OBSERVATION, observation(size), **fields)


def expect_action(peer: Peer, served_: Served, seq: int, t_send: int, what: str) -> p.Message:
    """The ACTION answering the OBSERVATION ``(seq, t_send)``, checked field by field."""
    msg = peer.reply(p.MsgType.ACTION, what)
    expect(
        msg.session_id == peer.session,
        f"{what}: ACTION session_id {msg.session_id}, expected {peer.session}",
    )
    expect(msg.ack_seq == seq, f"{what}: ACTION ack_seq {msg.ack_seq}, expected {seq}")
    expect(msg.t_echo_ns == t_send, f"{what}: ACTION t_echo_ns {msg.t_echo_ns}, expected {t_send}")
    size = len(msg.payload) // 4
    expect(
        len(msg.payload) == 4 * served_.action_size,
        f"{what}: ACTION of {size} values, expected {served_.action_size}",
    )
    values = np.frombuffer(msg.payload, "<f4")
    expect(bool(np.isfinite(values).all()), f"{what}: ACTION holds non-finite values {values}")
    return msg


def step(peer: Peer, served_: Served, what: str, **fields: Any) -> p.Message:
    """One OBSERVATION and its checked ACTION."""
    seq, t_send = observe(peer, served_.obs_size, **fields)
    return expect_action(peer, served_, seq, t_send, what)


def header(msg: p.Message, what: str, session: int, seq: int | None, echo: tuple[int, int]) -> None:
    """Fail unless ``msg``'s header has this session, seq (None: any) and echo."""
    got = (msg.session_id, msg.seq, msg.ack_seq, msg.t_echo_ns)
    want = (session, msg.seq if seq is None else seq, *echo)
    names = ("session_id", "seq", "ack_seq", "t_echo_ns")
    for name, g, w in zip(names, got, want, strict=True):
        expect(g == w, f"{what}: {msg.type.name} header {name} {g}, expected {w}")


def outside_error(peer: Peer, code: p.ErrorCode, what: str, echo: tuple[int, int]) -> p.Message:
    """An ERROR ``code`` to a peer without a session: session 0, seq 0, ``echo``."""
    msg = peer.error(code, what)
    header(msg, what, 0, 0, echo)
    return msg


def json_text(hello: Json, key: str, literal: str) -> bytes:
    """HELLO bytes with the value of ``key`` written as the raw JSON ``literal``."""
    marker = "\u2063conformance-marker\u2063"
    text = p.encode_json({**hello, key: marker}).decode("utf-8")
    quoted = p.encode_json({"m": marker}).decode("utf-8")[5:-1]
    expect(quoted in text, "internal: the HELLO marker was not written as expected")
    return text.replace(quoted, literal, 1).encode("utf-8")


def close_enough(a: float, b: float, rel: float = 1e-9) -> bool:
    """``a`` equals ``b`` within a relative ``rel``."""
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=0.0)


def collect(peer: Peer, window_s: float) -> list[p.Message]:
    """Every frame arriving within ``window_s``."""
    deadline = time.monotonic() + window_s
    got: list[p.Message] = []
    while (left := deadline - time.monotonic()) > 0:
        msg = peer.recv(left)
        if msg is not None:
            got.append(msg)
    return got


def codes(messages: list[p.Message]) -> list[str]:
    """Short texts of messages (for failure lines)."""
    return [describe_msg(m) for m in messages]


def is_error(msg: p.Message | None, code: p.ErrorCode) -> bool:
    """``msg`` is an ERROR with ``code``."""
    return msg is not None and msg.type is p.MsgType.ERROR and error_code(msg) == code
