"""FFEP/2 codec: golden frames, round trips, strict rejection, fuzzing (docs/protocol.md)."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factoryfloor.edge_runtime import protocol as p

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ffep"
GOLDEN = json.loads((DOCS / "golden_frames.json").read_text())
FRAMES = {f["name"]: f for f in GOLDEN["frames"]}


def message_of(fixture: dict) -> p.Message:
    return p.Message(
        p.MsgType[fixture["type"]], fixture["session_id"], fixture["seq"], fixture["ack_seq"],
        fixture["t_send_ns"], fixture["t_echo_ns"], p.Flags(fixture["flags"]),
        bytes.fromhex(fixture["payload_hex"]),
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_golden_frames_encode_and_decode_exactly(name):
    fixture = FRAMES[name]
    frame = bytes.fromhex(fixture["frame_hex"])
    assert p.encode(message_of(fixture)) == frame
    assert p.decode(frame) == message_of(fixture)


def test_observation_frame_laid_out_as_documented():
    """Byte offsets of docs/protocol.md section 2, built by hand without the codec's struct."""
    le = int.to_bytes
    expected = (
        b"FFEP" + le(2, 1, "little") + le(3, 1, "little") + le(1, 2, "little")
        + le(12, 4, "little") + le(7, 4, "little") + le(2, 8, "little") + le(0, 8, "little")
        + le(1_040_000_000, 8, "little") + le(0, 8, "little")
        + struct.pack("<3f", 0.5, -1.0, 0.25)
    )  # fmt: skip
    assert p.HEADER.size == 48
    assert bytes.fromhex(FRAMES["observation_episode_start"]["frame_hex"]) == expected


def test_floats_and_json_round_trip():
    values = np.array([0.1, -2.5, 3e-8, 1e30], dtype=np.float32)
    assert np.array_equal(p.decode_floats(p.encode_floats(values), 4), values)
    obj = {"protocol_version": 2, "observation": [{"name": "x", "shape": [3]}]}
    assert p.decode_json(p.encode_json(obj)) == obj
    code, text = p.decode_error(p.encode_error(p.ErrorCode.MODEL_MISMATCH, "é" * 2000))
    assert code == p.ErrorCode.MODEL_MISMATCH and len(text.encode()) <= 1024


def valid_frame() -> bytes:
    return bytes.fromhex(FRAMES["action"]["frame_hex"])


def with_header(**fields: int) -> bytes:
    """The valid ACTION frame with some header fields replaced (struct offsets of the doc)."""
    frame = bytearray(valid_frame())
    offsets = {"version": ("<B", 4), "type": ("<B", 5), "flags": ("<H", 6), "length": ("<I", 8)}
    for name, value in fields.items():
        fmt, offset = offsets[name]
        struct.pack_into(fmt, frame, offset, value)
    return bytes(frame)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"", p.ErrorCode.BAD_MAGIC),
        (valid_frame()[:47], p.ErrorCode.BAD_MAGIC),
        (b"FFEQ" + valid_frame()[4:], p.ErrorCode.BAD_MAGIC),
        (with_header(version=1), p.ErrorCode.BAD_VERSION),  # FFEP/1 is refused, not guessed
        (with_header(version=3), p.ErrorCode.BAD_VERSION),
        (with_header(version=0), p.ErrorCode.BAD_VERSION),
        (with_header(type=0), p.ErrorCode.BAD_TYPE),
        (with_header(type=200), p.ErrorCode.BAD_TYPE),
        (with_header(flags=1), p.ErrorCode.BAD_FLAGS),  # EPISODE_START only on OBSERVATION
        (with_header(flags=0x8000), p.ErrorCode.BAD_FLAGS),
        (with_header(length=15), p.ErrorCode.BAD_LENGTH),
        (valid_frame() + b"\x00", p.ErrorCode.BAD_LENGTH),
        (with_header(type=5), p.ErrorCode.BAD_LENGTH),  # HEARTBEAT carries no payload
        (valid_frame()[:-1] + b"", p.ErrorCode.BAD_LENGTH),
        (b"FFEP" + b"\x00" * 10_000_000, p.ErrorCode.BAD_LENGTH),  # over the size limit
    ],
)
def test_malformed_frames_are_refused_with_their_code(frame, code):
    with pytest.raises(p.ProtocolError) as info:
        p.decode(frame)
    assert info.value.code == code


def test_payload_limits_per_type():
    too_many = p.Message(p.MsgType.ACTION, payload=b"\x00" * (4 * p.MAX_FLOATS + 4))
    with pytest.raises(p.ProtocolError, match="limit"):
        p.encode(too_many)
    with pytest.raises(p.ProtocolError, match="values where the spec has 4"):
        p.decode_floats(b"\x00" * 12, 4)
    for bad in (b"\xff\xfe", b"[1, 2]", b'{"a": NaN}', b"{" * 100_000):
        with pytest.raises(p.ProtocolError) as info:
            p.decode_json(bad)
        assert info.value.code in (p.ErrorCode.BAD_PAYLOAD, p.ErrorCode.BAD_LENGTH)
    with pytest.raises(p.ProtocolError):
        p.encode(p.Message(p.MsgType.ACTION, seq=-1))
    with pytest.raises(p.ProtocolError):
        p.encode(p.Message(p.MsgType.ACTION, session_id=2**32))


def test_nan_survives_the_codec_for_the_safety_layer_to_reject():
    values = p.decode_floats(p.encode_floats([math.nan, math.inf, 1.0]), 3)
    assert np.isnan(values[0]) and np.isinf(values[1])


def test_schema_hash_is_canonical():
    obs = [{"name": "observation", "shape": [19], "units": "m"}]
    act = [{"name": "action", "shape": [4], "low": [-1] * 4, "high": [1] * 4}]
    h = p.schema_sha256(obs, act)
    assert h == p.schema_sha256([{"shape": [19], "name": "observation"}], act)  # units, order
    assert h != p.schema_sha256([{"name": "observation", "shape": [20]}], act)
    assert len(h) == 64 and int(h, 16) >= 0


def mutated(frame: bytes, positions: list[int], values: list[int], cut: int) -> bytes:
    data = bytearray(frame)
    for pos, val in zip(positions, values, strict=False):
        data[pos % len(data)] = val
    return bytes(data[: max(0, len(data) - cut)])


def check_decode_never_crashes(data: bytes) -> None:
    try:
        msg = p.decode(data)
    except p.ProtocolError:
        return
    assert p.encode(msg) == data  # anything accepted is a well-formed frame


FUZZ = settings(max_examples=5_000, deadline=None, suppress_health_check=list(HealthCheck))
MUTATIONS = (  # for mutated(): positions, new byte values, bytes cut from the end
    st.lists(st.integers(0, 10_000), max_size=6),
    st.lists(st.integers(0, 255), max_size=6),
    st.integers(0, 8),
)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    check_decode_never_crashes(data)
    check_decode_never_crashes(b"FFEP\x01" + data)
    for parse in (p.decode_json, p.decode_error):
        with contextlib.suppress(p.ProtocolError):
            parse(data)


@FUZZ
@given(st.sampled_from(sorted(FRAMES)), *MUTATIONS)
def test_fuzz_mutated_valid_frames(name, positions, values, cut):
    check_decode_never_crashes(
        mutated(bytes.fromhex(FRAMES[name]["frame_hex"]), positions, values, cut)
    )


# StreamCodec: the hot path's per-session codec must agree with encode and decode exactly.
STREAMS = {  # golden float frame -> the codec of its session's stream
    "observation_episode_start": (p.MsgType.OBSERVATION, 7, 3),
    "action": (p.MsgType.ACTION, 7, 2),
}


def check_stream_agrees_with_decode(codec: p.StreamCodec, frame: bytes) -> bool:
    """``flags_of`` accepts exactly what ``decode`` accepts for this stream, with its fields."""
    try:
        msg = p.decode(frame)
        ours = (msg.type, msg.session_id, len(msg.payload)) == (
            codec.kind, codec.session_id, codec.payload_bytes
        )  # fmt: skip
    except p.ProtocolError:
        msg, ours = None, False
    flags = codec.flags_of(frame)
    assert (flags is not None) == ours, frame.hex()
    if msg is not None and ours:
        assert flags == int(msg.flags)
        assert p.TAIL.unpack_from(frame, p.FIXED_HEAD) == (
            msg.seq, msg.ack_seq, msg.t_send_ns, msg.t_echo_ns
        )  # fmt: skip
        assert frame[p.HEADER.size :] == msg.payload
    return ours


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_codec_encodes_the_golden_frames(name):
    fixture = FRAMES[name]
    codec = p.StreamCodec(*STREAMS[name])
    payload = bytes.fromhex(fixture["payload_hex"])
    frame = codec.encode(
        fixture["seq"], fixture["ack_seq"], fixture["t_send_ns"], fixture["t_echo_ns"], payload,
        fixture["flags"],
    )  # fmt: skip
    assert frame == bytes.fromhex(fixture["frame_hex"])
    assert check_stream_agrees_with_decode(codec, frame)


@settings(max_examples=2_000, deadline=None)
@given(
    st.sampled_from([p.MsgType.OBSERVATION, p.MsgType.ACTION]),
    st.integers(1, 2**32 - 1),
    st.integers(0, 64),
    st.tuples(*[st.integers(0, 2**64 - 1)] * 4),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_stream_codec_encodes_what_encode_gives(kind, session, floats, fields, start, rnd):
    codec = p.StreamCodec(kind, session, floats)
    flags = int(start and kind is p.MsgType.OBSERVATION)
    payload = rnd.randbytes(4 * floats)
    frame = codec.encode(*fields, payload, flags)
    assert frame == p.encode(p.Message(kind, session, *fields, p.Flags(flags), payload))
    assert check_stream_agrees_with_decode(codec, frame)


@FUZZ
@given(st.sampled_from(sorted(STREAMS)), *MUTATIONS)
def test_fuzz_stream_codec_accepts_exactly_what_decode_accepts(name, positions, values, cut):
    codec = p.StreamCodec(*STREAMS[name])
    frame = mutated(bytes.fromhex(FRAMES[name]["frame_hex"]), positions, values, cut)
    check_stream_agrees_with_decode(codec, frame)
    for other in FRAMES.values():  # other types and sessions are never this stream's
        check_stream_agrees_with_decode(codec, bytes.fromhex(other["frame_hex"]))


def test_stream_codec_refuses_what_the_protocol_refuses():
    obs = p.StreamCodec(p.MsgType.OBSERVATION, 7, 3)
    with pytest.raises(p.ProtocolError, match="8 payload bytes; this session's OBSERVATION has 12"):
        obs.encode(1, 0, 0, 0, bytes(8))
    with pytest.raises(p.ProtocolError, match="flags 2 not allowed on OBSERVATION"):
        obs.encode(1, 0, 0, 0, bytes(12), 2)
    with pytest.raises(p.ProtocolError, match="flags 1 not allowed on ACTION"):
        p.StreamCodec(p.MsgType.ACTION, 7, 3).encode(1, 0, 0, 0, bytes(12), 1)
    with pytest.raises(p.ProtocolError, match=r"seq=-1 outside \[0, "):
        obs.encode(-1, 0, 0, 0, bytes(12))
    with pytest.raises(p.ProtocolError, match="session_id"):
        p.StreamCodec(p.MsgType.ACTION, 2**32, 3)
    with pytest.raises(p.ProtocolError, match="limit"):
        p.StreamCodec(p.MsgType.ACTION, 7, p.MAX_FLOATS + 1)
    with pytest.raises(ValueError, match="HELLO frames carry no floats"):
        p.StreamCodec(p.MsgType.HELLO, 7, 3)
