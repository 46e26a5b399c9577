"""FFEP/2, the edge wire protocol: encode and decode frames (``docs/protocol.md``).

This module is the single implementation of ``docs/protocol.md``. A frame is a fixed 48-byte
little-endian header and a payload; ``decode`` checks every field before use and raises
``ProtocolError`` (carrying the error code to send back) for anything malformed. Nothing here
unpickles, and every decode has a size limit.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from enum import IntEnum, IntFlag
from typing import Any, NamedTuple

import numpy as np

from factoryfloor.edge_runtime import strict_json

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_FLOATS",
    "MAX_JSON_BYTES",
    "MAX_OBSERVATION_BYTES",
    "PROTOCOL_VERSION",
    "EdgeError",
    "ErrorCode",
    "Flags",
    "Message",
    "MsgType",
    "ProtocolError",
    "StreamCodec",
    "decode",
    "decode_error",
    "decode_floats",
    "decode_json",
    "encode",
    "encode_error",
    "encode_floats",
    "encode_json",
    "schema_canonical",
    "schema_sha256",
    "spec_floats",
]

PROTOCOL_VERSION = 2
MAGIC = b"FFEP"
HEADER = struct.Struct("<4sBBHIIQQQQ")  # magic version type flags len session seq ack t_send t_echo
MAX_JSON_BYTES = 65_536
MAX_FLOATS = 4_096
MAX_OBSERVATION_BYTES = 65_536  # float32 specs stay within 4 * MAX_FLOATS; uint8 fields need more
MAX_ERROR_TEXT_BYTES = 1_024
HASHED_DTYPES = ("uint8",)  # field dtypes that enter the schema hash (float32 does not)
_U64 = 2**64 - 1
_U32 = 2**32 - 1


class MsgType(IntEnum):
    """Message types (the header's ``type`` byte)."""

    HELLO = 1
    WELCOME = 2
    OBSERVATION = 3
    ACTION = 4
    HEARTBEAT = 5
    ERROR = 6
    BYE = 7
    DESCRIBE = 8
    DESCRIPTION = 9


class Flags(IntFlag):
    """Header flag bits; the others are reserved and must be 0."""

    NONE = 0
    EPISODE_START = 1


class ErrorCode(IntEnum):
    """Codes of ERROR messages and of ``ProtocolError``."""

    BAD_MAGIC = 1
    BAD_VERSION = 2
    BAD_TYPE = 3
    BAD_LENGTH = 4
    BAD_FLAGS = 5
    BAD_PAYLOAD = 6
    SCHEMA_MISMATCH = 10
    MODEL_MISMATCH = 11
    TASK_MISMATCH = 12
    NO_SESSION = 13
    TOO_MANY_SESSIONS = 14
    INTERNAL = 15
    NON_FINITE = 16
    THROTTLED = 17
    SESSION_CLOSED = 18


class EdgeError(RuntimeError):
    """An edge runtime failure the user can act on (refused handshake, keys, insecure bind)."""


class ProtocolError(ValueError):
    """A frame or payload that breaks the protocol; ``code`` is what to answer with.

    Args:
        code: The error code.
        message: What was wrong, and how to fix it where the peer can.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.text = message


# Payload size rules per type: (fixed size or None, largest size) in bytes.
_PAYLOAD_LIMITS: dict[MsgType, tuple[int | None, int]] = {
    MsgType.HELLO: (None, MAX_JSON_BYTES),
    MsgType.WELCOME: (None, MAX_JSON_BYTES),
    MsgType.OBSERVATION: (None, MAX_OBSERVATION_BYTES),
    MsgType.ACTION: (None, 4 * MAX_FLOATS),
    MsgType.HEARTBEAT: (0, 0),
    MsgType.ERROR: (None, 2 + MAX_ERROR_TEXT_BYTES),
    MsgType.BYE: (0, 0),
    MsgType.DESCRIBE: (0, 0),
    MsgType.DESCRIPTION: (None, MAX_JSON_BYTES),
}
_FLOAT_TYPES = (MsgType.OBSERVATION, MsgType.ACTION)
_JSON_TYPES = (MsgType.HELLO, MsgType.WELCOME, MsgType.DESCRIPTION)
_TYPES = {int(t): t for t in MsgType}  # a dict lookup: cheaper than MsgType(value) per frame
_FLAGS = {v: Flags(v) for v in range(2 * int(max(Flags)))}  # every combination of the bits
FIXED_HEAD = 16  # header bytes 0-16 (magic .. session_id): the same for a session's stream
TAIL = struct.Struct("<QQQQ")  # header bytes 16-48: seq, ack_seq, t_send_ns, t_echo_ns


class Message(NamedTuple):
    """One decoded frame (immutable; a named tuple because the hot path builds one per frame).

    Attributes:
        type: Message type.
        session_id: Session given by the server (0 in HELLO).
        seq: Sender's sequence number (from 1).
        ack_seq: Sequence number answered (0 when none).
        t_send_ns: Sender's monotonic clock at sending (ns).
        t_echo_ns: The answered message's ``t_send_ns`` (0 when none).
        flags: Header flags.
        payload: Raw payload bytes.
        version: Protocol version of the header.
    """

    type: MsgType
    session_id: int = 0
    seq: int = 0
    ack_seq: int = 0
    t_send_ns: int = 0
    t_echo_ns: int = 0
    flags: Flags = Flags.NONE
    payload: bytes = b""
    version: int = PROTOCOL_VERSION


def encode(msg: Message) -> bytes:
    """The frame of ``msg`` (header + payload).

    Raises:
        ProtocolError: When a field is out of range or the payload breaks its type's limits.
    """
    _check_payload(msg.type, len(msg.payload))
    _check_flags(msg.type, int(msg.flags))
    try:
        header = HEADER.pack(
            MAGIC, msg.version, int(msg.type), int(msg.flags), len(msg.payload), msg.session_id,
            msg.seq, msg.ack_seq, msg.t_send_ns, msg.t_echo_ns,
        )  # fmt: skip
    except struct.error:  # a field out of its unsigned range: say which
        raise _field_error(msg) from None
    return header + msg.payload


def _field_error(msg: Message) -> ProtocolError:
    for name, top in (
        ("version", 255),
        ("session_id", _U32),
        ("seq", _U64),
        ("ack_seq", _U64),
        ("t_send_ns", _U64),
        ("t_echo_ns", _U64),
    ):
        value = getattr(msg, name)
        if not (isinstance(value, int) and 0 <= value <= top):
            return ProtocolError(ErrorCode.BAD_LENGTH, f"{name}={value!r} outside [0, {top}]")
    return ProtocolError(ErrorCode.BAD_LENGTH, "a header field cannot be packed")


def decode(frame: bytes | bytearray | memoryview, max_size: int | None = None) -> Message:
    """Parse and validate one frame.

    Args:
        frame: The frame's bytes.
        max_size: Largest frame accepted (bytes); default: the largest any type allows.

    Raises:
        ProtocolError: For a short frame, wrong magic or version, unknown type, reserved flags,
            or a payload whose length is not the header's or breaks its type's limits.
    """
    data = bytes(frame)
    limit = max_size if max_size is not None else HEADER.size + MAX_JSON_BYTES
    if len(data) > limit:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"frame of {len(data)} bytes exceeds {limit}")
    if len(data) < HEADER.size:
        raise ProtocolError(ErrorCode.BAD_MAGIC, f"frame of {len(data)} bytes is shorter than 48")
    magic, version, mtype, flags, length, session, seq, ack, t_send, t_echo = HEADER.unpack_from(
        data
    )
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.BAD_MAGIC, f"magic {magic!r} is not {MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION, f"version {version}; this side speaks {PROTOCOL_VERSION}"
        )
    kind = _TYPES.get(mtype)
    if kind is None:
        raise ProtocolError(ErrorCode.BAD_TYPE, f"unknown message type {mtype}")
    if length != len(data) - HEADER.size:
        raise ProtocolError(
            ErrorCode.BAD_LENGTH,
            f"payload_len {length} but the frame carries {len(data) - HEADER.size} bytes",
        )
    _check_payload(kind, length)
    _check_flags(kind, flags)
    payload = data[HEADER.size :]
    return Message(kind, session, seq, ack, t_send, t_echo, _FLAGS[flags], payload, version)


def _check_payload(kind: MsgType, length: int) -> None:
    fixed, largest = _PAYLOAD_LIMITS[kind]
    if (fixed is not None and length != fixed) or length > largest:
        raise ProtocolError(
            ErrorCode.BAD_LENGTH, f"{kind.name} payload of {length} bytes (limit {largest})"
        )
    if kind in _FLOAT_TYPES and length % 4:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"{kind.name} payload of {length} bytes % 4")
    if kind is MsgType.ERROR and length < 2:
        raise ProtocolError(ErrorCode.BAD_LENGTH, "ERROR payload shorter than its 2-byte code")
    if kind in _JSON_TYPES and length < 2:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"{kind.name} payload of {length} bytes: a JSON "
                            "object takes at least 2 ({})")  # fmt: skip


def _check_flags(kind: MsgType, flags: int) -> None:
    allowed = int(Flags.EPISODE_START) if kind is MsgType.OBSERVATION else 0
    if flags & ~allowed:
        raise ProtocolError(ErrorCode.BAD_FLAGS, f"flags {flags:#06x} not allowed on {kind.name}")


class StreamCodec:
    """The hot path's codec for one session's OBSERVATION or ACTION frames.

    In one session every frame of a float type has the same first ``FIXED_HEAD`` header bytes
    (magic, version, type, flags, payload length, session id), up to the flag bits. This codec
    packs them once: encoding is one ``struct.pack`` of the four variable fields, and
    recognising a frame is a length check and one dict lookup of its first 16 bytes. A frame
    that ``flags_of`` accepts is exactly one that ``decode`` accepts with this type, session and
    payload size (the tests check both ways), and ``encode`` gives ``encode``'s bytes. Anything
    else is for ``decode``.

    Args:
        kind: ``OBSERVATION`` or ``ACTION``.
        session_id: The session (1 .. 2**32 - 1).
        floats: 4-byte words per payload: its float32 values, or a payload with uint8 fields'
            padded byte count / 4 (``payload.Layout.size // 4``).

    Raises:
        ProtocolError: When such frames would break the protocol (size, session range).
    """

    def __init__(self, kind: MsgType, session_id: int, floats: int) -> None:
        if kind not in _FLOAT_TYPES:
            raise ValueError(f"{kind.name} frames carry no floats; use encode and decode")
        self.kind, self.session_id = kind, session_id
        self.payload_bytes = 4 * floats
        self.frame_bytes = HEADER.size + self.payload_bytes
        allowed = (Flags.NONE, Flags.EPISODE_START) if kind is MsgType.OBSERVATION else (0,)
        empty = bytes(self.payload_bytes)
        self._heads = {
            int(f): encode(Message(kind, session_id, flags=Flags(f), payload=empty))[:FIXED_HEAD]
            for f in allowed
        }
        self._flags = {head: f for f, head in self._heads.items()}

    def encode(
        self, seq: int, ack_seq: int, t_send_ns: int, t_echo_ns: int, payload: bytes, flags: int = 0
    ) -> bytes:
        """The frame ``encode(Message(kind, session_id, seq, ...))`` would give.

        Raises:
            ProtocolError: For a payload of another size, flags the type does not allow, or a
                field out of its range.
        """
        head = self._heads.get(flags)
        if head is None:
            raise ProtocolError(
                ErrorCode.BAD_FLAGS, f"flags {flags!r} not allowed on {self.kind.name}"
            )
        if len(payload) != self.payload_bytes:
            raise ProtocolError(
                ErrorCode.BAD_LENGTH,
                f"{len(payload)} payload bytes; this session's {self.kind.name} has "
                f"{self.payload_bytes}",
            )
        try:
            return head + TAIL.pack(seq, ack_seq, t_send_ns, t_echo_ns) + payload
        except struct.error:
            message = Message(self.kind, self.session_id, seq, ack_seq, t_send_ns, t_echo_ns)
            raise _field_error(message) from None

    @property
    def heads(self) -> dict[int, bytes]:
        """The fixed first ``FIXED_HEAD`` bytes of this stream's frames, by their flags."""
        return dict(self._heads)

    def flags_of(self, frame: bytes) -> int | None:
        """The flags of a valid frame of this stream, or None when it is not one.

        The other header fields are ``TAIL.unpack_from(frame, FIXED_HEAD)``; the payload is
        ``frame[HEADER.size:]``.
        """
        if len(frame) != self.frame_bytes:
            return None
        return self._flags.get(frame[:FIXED_HEAD])


def encode_floats(values: Sequence[float] | np.ndarray) -> bytes:
    """Raw little-endian float32 bytes of a 1-D vector."""
    array = np.asarray(values, dtype="<f4").reshape(-1)
    if array.size > MAX_FLOATS:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"{array.size} values exceed {MAX_FLOATS}")
    return array.tobytes()


def decode_floats(payload: bytes, expected: int) -> np.ndarray:
    """The float32 vector of a payload, shape ``(expected,)`` (NaN/Inf are left to the caller).

    Raises:
        ProtocolError: When the payload does not hold exactly ``expected`` values.
    """
    if len(payload) != 4 * expected:
        raise ProtocolError(
            ErrorCode.BAD_LENGTH, f"{len(payload) // 4} values where the spec has {expected}"
        )
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)


def encode_json(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a handshake object."""
    try:
        data = strict_json.dumps(obj)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"cannot encode JSON: {exc}") from None
    if len(data) > MAX_JSON_BYTES:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"JSON of {len(data)} bytes")
    return data


def decode_json(payload: bytes) -> dict[str, Any]:
    """The JSON object of a HELLO, WELCOME or DESCRIPTION payload (``strict_json.loads``).

    Raises:
        ProtocolError: ``BAD_PAYLOAD`` for anything the limits of ``docs/protocol.md``
            (section 5) refuse: size, UTF-8, syntax, depth, duplicate keys, numbers, strings.
    """
    try:
        return strict_json.loads(payload)
    except strict_json.JsonLimitError as exc:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, str(exc)) from None


def encode_error(code: ErrorCode, text: str) -> bytes:
    """ERROR payload: u16 code, then UTF-8 text cut to 1,024 bytes."""
    raw = text.encode("utf-8")[:MAX_ERROR_TEXT_BYTES]
    return struct.pack("<H", int(code)) + raw.decode("utf-8", "ignore").encode("utf-8")


def decode_error(payload: bytes) -> tuple[int, str]:
    """(code, text) of an ERROR payload; the code may be one this side does not know."""
    if len(payload) < 2:
        raise ProtocolError(ErrorCode.BAD_LENGTH, "ERROR payload shorter than its 2-byte code")
    (code,) = struct.unpack_from("<H", payload)
    return code, payload[2:].decode("utf-8", "replace")


def spec_floats(spec: Sequence[dict[str, Any]]) -> int:
    """Values in a payload of an observation or action spec (its shapes' sizes summed).

    Every value of a float32-only spec is 4 bytes; a spec with uint8 fields has its byte
    layout in ``payload.Layout``.
    """
    return sum(math.prod(int(n) for n in item["shape"]) for item in spec)  # exact: no overflow


def schema_canonical(observation: list[dict[str, Any]], action: list[dict[str, Any]]) -> str:
    """The RFC 8785 text the schema hash is computed over (``docs/protocol.md``, section 5).

    A field's ``dtype`` enters the hash only when it is one of ``HASHED_DTYPES`` (``uint8``):
    float32 specs hash as they always have, and a uint8 spec never hashes like the float32
    spec of the same shapes, so a peer that ignores dtype cannot agree on it.

    Raises:
        ValueError: For specs that are not lists of objects, or non-finite limits.
    """

    def kept(item: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        out = {k: item[k] for k in keys if k in item}
        if isinstance(item, dict) and item.get("dtype") in HASHED_DTYPES:
            out["dtype"] = item["dtype"]
        return out

    keep_obs = ("name", "shape")
    keep_act = ("name", "shape", "low", "high")
    return strict_json.canonical(
        {
            "action": [kept(item, keep_act) for item in action],
            "observation": [kept(item, keep_obs) for item in observation],
        }
    )


def schema_sha256(observation: list[dict[str, Any]], action: list[dict[str, Any]]) -> str:
    """SHA-256 (lower-case hex) of ``schema_canonical`` of the specs, as UTF-8."""
    return hashlib.sha256(schema_canonical(observation, action).encode("utf-8")).hexdigest()
