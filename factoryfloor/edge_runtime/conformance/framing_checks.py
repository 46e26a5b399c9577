"""Checks of a server's refusals: framing, JSON, HELLO mismatches, rate limits (sections 2-5, 8).

Each variant runs on a fresh connection (its own ERROR budget) and must get the documented
code with the documented ERROR header: session 0 and seq 0 to a peer without a session;
``ack_seq``/``t_echo_ns`` echo the frame when its magic, version and length were right.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.conformance import probe
from factoryfloor.edge_runtime.conformance.kit import (
    CheckSkipped,
    Peer,
    Registry,
    ServerTarget,
    expect,
    frame,
    register,
)

CHECKS: Registry = {}
E = p.ErrorCode
T = p.MsgType
T_SEND = 123_456_789
ECHO = (9, T_SEND)  # what a readable header's echo must be: seq 9, t_send_ns T_SEND
NO_ECHO = (0, 0)
# a variant: its name -> (the frame or multipart message, the code, the echo or None: unchecked)
Variants = dict[str, tuple[bytes | list[bytes], E, tuple[int, int] | None]]


def _f(kind: int, payload: bytes = b"", **fields: Any) -> bytes:
    return frame(kind, payload, seq=9, t_send=T_SEND, **fields)


def _run_variants(target: ServerTarget, variants: Variants) -> None:
    with target.peers() as make:
        for what, (data, code, echo) in variants.items():
            peer = make()
            peer.send(data)
            msg = peer.error(code, what)
            probe.header(
                msg, what, 0, 0, echo if echo is not None else (msg.ack_seq, msg.t_echo_ns)
            )


@register(CHECKS, "bad_magic", "§2, §4", "a frame not starting with FFEP gets BAD_MAGIC (echo 0)")
def bad_magic(target: ServerTarget) -> None:
    """Wrong magic bytes."""
    _run_variants(target, {
        "magic XXXX": (_f(T.DESCRIBE, magic=b"XXXX"), E.BAD_MAGIC, NO_ECHO),
        "magic ffep": (_f(T.DESCRIBE, magic=b"ffep"), E.BAD_MAGIC, NO_ECHO),
    })  # fmt: skip


@register(CHECKS, "short_frame", "§2, §4", "a frame shorter than 48 bytes gets BAD_MAGIC")
def short_frame(target: ServerTarget) -> None:
    """Frames of 0, 10 and 47 bytes."""
    whole = _f(T.DESCRIBE)
    _run_variants(target, {
        f"{n}-byte frame": (whole[:n], E.BAD_MAGIC, NO_ECHO) for n in (0, 10, 47)
    })  # fmt: skip


@register(
    CHECKS,
    "bad_version",
    "§2, §4, §9",
    "a header version other than 2 gets BAD_VERSION, its text naming version 2",
)
def bad_version(target: ServerTarget) -> None:
    """Versions 1 and 3."""
    variants: Variants = {
        f"version {v}": (_f(T.DESCRIBE, version=v), E.BAD_VERSION, NO_ECHO) for v in (1, 3, 255)
    }
    _run_variants(target, variants)
    with target.peers() as make:
        peer = make()
        peer.send(_f(T.DESCRIBE, version=1))
        _, text = p.decode_error(peer.error(E.BAD_VERSION, "version 1").payload)
        expect("2" in text, f"BAD_VERSION text {text!r} does not list the version spoken (2)")


@register(
    CHECKS,
    "bad_type",
    "§3, §4",
    "an unknown type, or ACTION/WELCOME/DESCRIPTION sent to a server, gets BAD_TYPE",
)
def bad_type(target: ServerTarget) -> None:
    """Unknown types and server-to-controller types."""
    welcome = p.encode_json({"protocol_version": 2, "session_id": 1})
    _run_variants(target, {
        "type 0": (_f(0), E.BAD_TYPE, ECHO),
        "type 10": (_f(10), E.BAD_TYPE, ECHO),
        "type 255": (_f(255), E.BAD_TYPE, ECHO),
        "ACTION to the server": (_f(T.ACTION, bytes(8)), E.BAD_TYPE, ECHO),
        "WELCOME to the server": (_f(T.WELCOME, welcome), E.BAD_TYPE, ECHO),
        "DESCRIPTION to the server": (_f(T.DESCRIPTION, welcome), E.BAD_TYPE, ECHO),
    })  # fmt: skip


@register(
    CHECKS,
    "bad_length",
    "§1, §2, §3, §4",
    "payload_len not the frame's, a type's size limits broken, or multipart -> BAD_LENGTH",
)
def bad_length(target: ServerTarget) -> None:
    """Length mismatches and limits."""
    whole = _f(T.DESCRIBE)
    _run_variants(target, {
        "payload_len 10, 4 bytes carried": (_f(T.DESCRIBE, bytes(4), payload_len=10),
                                            E.BAD_LENGTH, NO_ECHO),
        "payload_len 0, 4 bytes carried": (_f(T.HEARTBEAT, bytes(4), payload_len=0),
                                           E.BAD_LENGTH, NO_ECHO),
        "HEARTBEAT with a 4-byte payload": (_f(T.HEARTBEAT, bytes(4)), E.BAD_LENGTH, ECHO),
        "DESCRIBE with a 4-byte payload": (_f(T.DESCRIBE, bytes(4)), E.BAD_LENGTH, ECHO),
        "OBSERVATION of 6 bytes": (_f(T.OBSERVATION, bytes(6)), E.BAD_LENGTH, ECHO),
        "OBSERVATION of 65,540 bytes": (_f(T.OBSERVATION, bytes(65_540)), E.BAD_LENGTH, ECHO),
        "HELLO of 65,537 bytes": (_f(T.HELLO, b" " * 65_537), E.BAD_LENGTH, ECHO),
        "HELLO of 1 byte": (_hello_frame(b"{"), E.BAD_LENGTH, (1, T_SEND)),
        "multipart message": ([whole, whole], E.BAD_LENGTH, None),
    })  # fmt: skip


@register(
    CHECKS,
    "bad_flags",
    "§2, §4",
    "a reserved flag bit, or EPISODE_START on another type than OBSERVATION -> BAD_FLAGS",
)
def bad_flags(target: ServerTarget) -> None:
    """Reserved and misplaced flags."""
    _run_variants(target, {
        "bit 1 on OBSERVATION": (_f(T.OBSERVATION, bytes(8), flags=2), E.BAD_FLAGS, ECHO),
        "bit 15 on DESCRIBE": (_f(T.DESCRIBE, flags=0x8000), E.BAD_FLAGS, ECHO),
        "EPISODE_START on HEARTBEAT": (_f(T.HEARTBEAT, flags=1), E.BAD_FLAGS, ECHO),
        "EPISODE_START on DESCRIBE": (_f(T.DESCRIBE, flags=1), E.BAD_FLAGS, ECHO),
    })  # fmt: skip


def _hello_frame(hello: dict[str, Any] | bytes, **fields: Any) -> bytes:
    payload = hello if isinstance(hello, bytes) else p.encode_json(hello)
    fields.setdefault("seq", 1)
    return frame(T.HELLO, payload, t_send=T_SEND, **fields)


def _hello_variants(target: ServerTarget, build: Callable[[probe.Served], Variants]) -> None:
    with target.peers() as make:
        _, served = probe.start(make)
        variants = build(served)
    _run_variants(target, variants)


@register(
    CHECKS,
    "error_precedence",
    "§4",
    "with several faults, the first of the documented order is the one answered",
)
def error_precedence(target: ServerTarget) -> None:
    """Frames breaking two rules at once."""

    def build(s: probe.Served) -> Variants:
        task = s.hello(task_id="other/Task-v0", schema_sha256="0" * 64)
        return {
            "bad magic and version": (_f(T.DESCRIBE, magic=b"XXXX", version=1), E.BAD_MAGIC,
                                      NO_ECHO),
            "bad version and type": (_f(99, version=1), E.BAD_VERSION, NO_ECHO),
            "bad type and length": (_f(99, bytes(4), payload_len=0), E.BAD_TYPE, None),
            "bad length and flags": (_f(T.HEARTBEAT, bytes(4), flags=2), E.BAD_LENGTH, ECHO),
            "bad flags and direction": (_f(T.ACTION, bytes(8), flags=1), E.BAD_FLAGS, ECHO),
            "multipart of bad frames": ([b"XXXX", b"YYYY"], E.BAD_LENGTH, None),
            "HELLO v1 missing controller": (
                _hello_frame({k: v for k, v in s.hello(protocol_version=1).items()
                              if k != "controller"}), E.BAD_VERSION, (1, T_SEND)),
            "HELLO bad type and task": (
                _hello_frame(s.hello(hold_window_ms="twenty", task_id="x/Y-v0")), E.BAD_PAYLOAD,
                (1, T_SEND)),
            "HELLO task and schema": (_hello_frame(task), E.TASK_MISMATCH, (1, T_SEND)),
            "HELLO schema and model": (
                _hello_frame(s.hello(schema_sha256="0" * 64, model_sha256=_other_model(s))),
                E.SCHEMA_MISMATCH, (1, T_SEND)),
        }  # fmt: skip

    _hello_variants(target, build)


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@register(
    CHECKS,
    "bad_payload",
    "§4, §5",
    "HELLO JSON breaking section 5 (syntax, limits, schema) or a bad HELLO header -> BAD_PAYLOAD",
)
def bad_payload(target: ServerTarget) -> None:
    """Hostile and malformed HELLO payloads."""

    def build(s: probe.Served) -> Variants:
        good = s.hello()
        text = p.encode_json(good)
        missing = {k: v for k, v in good.items() if k != "controller"}
        raw = {
            "invalid JSON": text[:-1],
            "top level an array": b"[" + text + b"]",
            "byte-order mark": b"\xef\xbb\xbf" + text,
            "invalid UTF-8": probe.json_text(good, "controller", '"\xff"').replace(
                "\xff".encode(), b"\xff"),
            "5000-digit integer": probe.json_text(good, "hold_window_ms", "1" * 5000),
            "1e400": probe.json_text(good, "hold_window_ms", "1e400"),
            "NaN literal": probe.json_text(good, "hold_window_ms", "NaN"),
            "Infinity literal": probe.json_text(good, "hold_window_ms", "Infinity"),
            "integer above 2**53": probe.json_text(good, "x_extra", str(2**53 + 2)),
            "duplicate key": b'{"controller":"dup",' + text[1:],
            "nesting 40 deep": probe.json_text(good, "x_extra", _deep(40)),
            "5000-character string": probe.json_text(good, "x_extra", '"' + "a" * 5000 + '"'),
            "hold_window_ms 'twenty'": p.encode_json(s.hello(hold_window_ms="twenty")),
            "hold_window_ms 2000": p.encode_json(s.hello(hold_window_ms=2000)),
            "controller ''": p.encode_json(s.hello(controller="")),
            "controller of 129 characters": p.encode_json(s.hello(controller="c" * 129)),
            "observation not a list": p.encode_json(s.hello(observation="obs")),
            "missing controller": p.encode_json(missing),
        }  # fmt: skip
        variants: Variants = {
            what: (_hello_frame(data), E.BAD_PAYLOAD, (1, T_SEND)) for what, data in raw.items()
        }
        variants["HELLO header session_id 5"] = (_hello_frame(good, session=5), E.BAD_PAYLOAD,
                                                 (1, T_SEND))  # fmt: skip
        variants["HELLO header seq 2"] = (_hello_frame(good, seq=2), E.BAD_PAYLOAD, (2, T_SEND))
        return variants

    _hello_variants(target, build)


@register(
    CHECKS,
    "bad_version_in_json",
    "§4, §9",
    "HELLO with protocol_version 1 (or 3) in a version-2 header gets BAD_VERSION",
)
def bad_version_in_json(target: ServerTarget) -> None:
    """protocol_version in HELLO."""
    _hello_variants(target, lambda s: {
        f"protocol_version {v}": (_hello_frame(s.hello(protocol_version=v)), E.BAD_VERSION,
                                  (1, T_SEND)) for v in (1, 3)
    })  # fmt: skip


@register(
    CHECKS,
    "task_mismatch",
    "§4, §5",
    "another task, robot or rate, or loop_rate_hz not k x rate (k 1..100) -> TASK_MISMATCH",
)
def task_mismatch(target: ServerTarget) -> None:
    """Handshakes for another policy."""

    def build(s: probe.Served) -> Variants:
        rate = s.rate_hz
        cases = {
            "task_id": s.hello(task_id=s.description["task_id"] + "-other"),
            "robot": s.hello(robot=s.description["robot"] + "-other"),
            "control_rate_hz x 1.01": s.hello(control_rate_hz=rate * 1.01),
            "loop_rate_hz 1.5 x": s.hello(loop_rate_hz=rate * 1.5),
            "loop_rate_hz 0.5 x": s.hello(loop_rate_hz=rate * 0.5),
            "loop_rate_hz 101 x": s.hello(loop_rate_hz=rate * 101),
        }
        return {w: (_hello_frame(h), E.TASK_MISMATCH, (1, T_SEND)) for w, h in cases.items()}

    _hello_variants(target, build)


def _python_json_hash(observation: list[Any], action: list[Any]) -> str:
    """The schema hash as a wrong implementation computes it (Python's json.dumps)."""
    obj = {
        "action": [{k: f[k] for k in ("high", "low", "name", "shape")} for f in action],
        "observation": [{k: f[k] for k in ("name", "shape")} for f in observation],
    }
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _changed_specs(s: probe.Served) -> dict[str, dict[str, Any]]:
    obs, act = s.description["observation"], s.description["action"]
    bigger = copy.deepcopy(obs)
    bigger[0]["shape"] = [p.spec_floats(bigger[:1]) + 1]
    lower = copy.deepcopy(act)
    lower[0]["low"] = [v - 0.5 for v in lower[0]["low"]]
    cases = {"observation shape": (bigger, act), "action low": (obs, lower)}
    if len(obs) > 1:
        cases["observation order"] = (obs[::-1], act)
    return {
        f"{what} changed": s.hello(observation=o, action=a, schema_sha256=p.schema_sha256(o, a))
        for what, (o, a) in cases.items()
    }


@register(
    CHECKS,
    "schema_mismatch",
    "§4, §5",
    "specs other than the server's, or a schema_sha256 not of its own specs -> SCHEMA_MISMATCH",
)
def schema_mismatch(target: ServerTarget) -> None:
    """Changed specs and wrong hashes."""

    def build(s: probe.Served) -> Variants:
        cases = _changed_specs(s)
        cases["schema_sha256 all zeros"] = s.hello(schema_sha256="0" * 64)
        obs, act = s.description["observation"], s.description["action"]
        python_hash = _python_json_hash(obs, act)
        if python_hash != p.schema_sha256(obs, act):
            cases["schema_sha256 of Python's json.dumps"] = s.hello(schema_sha256=python_hash)
        return {w: (_hello_frame(h), E.SCHEMA_MISMATCH, (1, T_SEND)) for w, h in cases.items()}

    _hello_variants(target, build)


def _other_model(s: probe.Served) -> str:
    return "cd" * 32 if s.description.get("model_sha256") != "cd" * 32 else "ef" * 32


@register(
    CHECKS,
    "model_mismatch",
    "§4, §5",
    "model_sha256 other than the served model's -> MODEL_MISMATCH; null is accepted",
)
def model_mismatch(target: ServerTarget) -> None:
    """A pinned model that is not the served one."""
    _hello_variants(target, lambda s: {
        "another model": (_hello_frame(s.hello(model_sha256=_other_model(s))), E.MODEL_MISMATCH,
                          (1, T_SEND)),
    })  # fmt: skip
    with target.peers() as make:
        peer, served = probe.start(make)
        probe.open_session(peer, served.hello(model_sha256=None), "HELLO with model_sha256 null")


@register(
    CHECKS,
    "error_rate_limited",
    "§4",
    "at most 10 ERROR frames per second to one peer (token bucket of 10): 50 bad -> <= 12",
)
def error_rate_limited(target: ServerTarget) -> None:
    """A burst of bad frames."""
    with target.peers() as make:
        peer = make()
        bad = _f(T.DESCRIBE, magic=b"XXXX")
        for _ in range(50):
            peer.send(bad)
        got = probe.collect(peer, 1.0)
    errors = [m for m in got if m.type is T.ERROR]
    expect(len(errors) == len(got), f"expected only ERRORs, got {probe.codes(got)[:5]}")
    expect(1 <= len(errors) <= 12, f"{len(errors)} ERROR replies to 50 bad frames in 1 s; "
           "expected 1 to 12 (10 per second)")  # fmt: skip


def _flood(peer: Peer, frames: int) -> None:
    data = _f(T.ERROR, p.encode_error(E.INTERNAL, "flood"))
    for _ in range(frames):
        peer.send(data)


@register(
    CHECKS,
    "throttled",
    "§8",
    "frames over 8 x rate + 100 per second (1 s burst) are dropped; THROTTLED at most 1/s",
)
def throttled(target: ServerTarget) -> None:
    """A flood of ERROR frames (which are never answered) over the budget."""
    with target.peers() as make:
        _, served = probe.start(make)
        budget = int(8 * served.rate_hz + 100)
        if budget > 20_000:
            raise CheckSkipped(f"a budget of {budget} frames/s is too large to flood here")
        peer = make()
        _flood(peer, 2 * budget + 100)
        got = probe.collect(peer, 1.2)
        throttles = [m for m in got if probe.is_error(m, E.THROTTLED)]
        expect(1 <= len(throttles) <= 2, f"{len(throttles)} THROTTLED for {2 * budget + 100} "
               f"frames over a budget of {budget}/s; expected 1 (at most once a second): got "
               f"{probe.codes(got)[:4]}")  # fmt: skip
        time.sleep(0.1)
        fresh = make()
        probe.open_session(fresh, served.hello(), "HELLO from another peer after the flood")
        probe.step(fresh, served, "observation from another peer after the flood")
