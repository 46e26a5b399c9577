"""Checks of a server's handshake and session rules (``docs/protocol.md`` sections 3, 5, 6, 8).

Each check opens its own connections (``ServerTarget.peers``), learns the server with DESCRIBE,
checks one rule with exact expectations, and ends every session it opened with BYE.
"""

from __future__ import annotations

import math
from typing import Any

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.conformance import probe
from factoryfloor.edge_runtime.conformance.kit import (
    CheckSkipped,
    Registry,
    ServerTarget,
    describe,
    describe_msg,
    expect,
    register,
    validate,
)

CHECKS: Registry = {}
WELCOME_KEYS = (
    "protocol_version",
    "session_id",
    "server",
    "task_id",
    "robot",
    "observation",
    "action",
    "schema_sha256",
    "model_sha256",
    "control_rate_hz",
    "loop_rate_hz",
    "max_action_age_ms",
    "session_timeout_s",
)
DESCRIPTION_KEYS = (
    *(k for k in WELCOME_KEYS if k not in ("session_id", "loop_rate_hz")),
    "max_sessions",
    "sessions",
    "max_loop_multiple",
    "hello",
)


@register(
    CHECKS,
    "describe_answers",
    "§3, §5, §6",
    "DESCRIBE gets DESCRIPTION: session 0, seq 0, echoes seq and t_send_ns, documented keys",
)
def describe_answers(target: ServerTarget) -> None:
    """DESCRIPTION's header and keys."""
    with target.peers() as make:
        peer = make()
        seq, t_send = peer.send_msg(p.MsgType.DESCRIBE, seq=7)
        msg = peer.reply(p.MsgType.DESCRIPTION, "DESCRIBE")
        probe.header(msg, "DESCRIPTION", 0, 0, (seq, t_send))
        desc = p.decode_json(msg.payload)
        missing = [k for k in DESCRIPTION_KEYS if k not in desc]
        expect(not missing, f"DESCRIPTION lacks {missing}")
        expect(desc["protocol_version"] == 2, f"protocol_version {desc['protocol_version']!r}")
        expect(desc["max_loop_multiple"] == 100, f"max_loop_multiple {desc['max_loop_multiple']}")
        hello = desc["hello"]
        expect(isinstance(hello, dict), "'hello' is not an object")
        expect(
            hello.get("controller") == "controller",
            f"hello.controller {hello.get('controller')!r}, expected 'controller'",
        )
        expect(
            hello.get("model_sha256") == desc["model_sha256"],
            f"hello.model_sha256 {hello.get('model_sha256')!r} is not the served model "
            f"{desc['model_sha256']!r}",
        )
        for key in ("task_id", "robot", "observation", "action", "schema_sha256"):
            expect(hello.get(key) == desc[key], f"hello.{key} differs from DESCRIPTION.{key}")
        expect(
            0 < desc["max_action_age_ms"] <= 10_000,
            f"max_action_age_ms {desc['max_action_age_ms']} outside (0, 10000]",
        )


@register(
    CHECKS,
    "description_valid_schema",
    "§5",
    "DESCRIPTION and its hello validate against welcome/hello.schema.json",
)
def description_valid_schema(target: ServerTarget) -> None:
    """Schema validation of DESCRIPTION (and of its HELLO template, when that schema exists)."""
    with target.peers() as make:
        desc = describe(make())
    error = validate(desc, "welcome.schema.json")
    expect(error is None, f"DESCRIPTION breaks welcome.schema.json at {error}")
    try:
        error = validate(desc["hello"], "hello.schema.json")
    except CheckSkipped:
        return
    expect(error is None, f"DESCRIPTION.hello breaks hello.schema.json at {error}")


@register(
    CHECKS,
    "schema_hash_reproducible",
    "§5",
    "schema_sha256 is the RFC 8785 hash of the server's own specs",
)
def schema_hash_reproducible(target: ServerTarget) -> None:
    """The server's hash, recomputed."""
    with target.peers() as make:
        _, served = probe.start(make)
    desc = served.description
    want = p.schema_sha256(desc["observation"], desc["action"])
    expect(
        desc.get("schema_sha256") == want,
        f"schema_sha256 {desc.get('schema_sha256')!r}, expected {want} (RFC 8785 of the specs)",
    )
    got = desc["hello"].get("schema_sha256")
    expect(got == want, f"hello.schema_sha256 {got!r}, expected {want}")


def _check_welcome(welcome: dict[str, Any], msg: p.Message, served: probe.Served) -> None:
    missing = [k for k in WELCOME_KEYS if k not in welcome]
    expect(not missing, f"WELCOME lacks {missing}")
    expect(welcome["protocol_version"] == 2, f"protocol_version {welcome['protocol_version']!r}")
    expect(
        welcome["session_id"] == msg.session_id,
        f"WELCOME session_id {welcome['session_id']} != header's {msg.session_id}",
    )
    desc = served.description
    for key in ("task_id", "robot", "observation", "action", "schema_sha256", "model_sha256"):
        expect(welcome[key] == desc[key], f"WELCOME.{key} differs from DESCRIPTION.{key}")
    expect(
        probe.close_enough(welcome["control_rate_hz"], served.rate_hz),
        f"WELCOME control_rate_hz {welcome['control_rate_hz']}, expected {served.rate_hz}",
    )
    age = welcome["max_action_age_ms"]
    expect(
        isinstance(age, int | float) and 0 < age <= 10_000,
        f"max_action_age_ms {age!r} outside (0, 10000]",
    )


@register(
    CHECKS,
    "hello_welcome",
    "§5, §6",
    "the HELLO template gets WELCOME: non-zero session = header's, seq 1, echoes, fields",
)
def hello_welcome(target: ServerTarget) -> None:
    """A valid HELLO and its WELCOME."""
    with target.peers() as make:
        peer, served = probe.start(make)
        t_send = probe.send_hello(peer, served.hello())
        msg = peer.reply(p.MsgType.WELCOME, "HELLO")
        peer.session = msg.session_id
        expect(msg.session_id != 0, "WELCOME header session_id is 0")
        probe.header(msg, "WELCOME", msg.session_id, 1, (1, t_send))
        welcome = p.decode_json(msg.payload)
        _check_welcome(welcome, msg, served)
        expect(
            probe.close_enough(welcome["loop_rate_hz"], served.rate_hz),
            f"loop_rate_hz {welcome['loop_rate_hz']}: a HELLO without one gets the "
            f"control rate {served.rate_hz}",
        )
        try:
            error = validate(welcome, "welcome.schema.json")
        except CheckSkipped:
            return
        expect(error is None, f"WELCOME breaks welcome.schema.json at {error}")


@register(
    CHECKS,
    "control_rate_tolerance",
    "§5",
    "control_rate_hz within a relative 1e-9 of the policy rate is accepted",
)
def control_rate_tolerance(target: ServerTarget) -> None:
    """A rate off by a relative 1e-12."""
    with target.peers() as make:
        peer, served = probe.start(make)
        probe.open_session(peer, served.hello(control_rate_hz=served.rate_hz * (1 + 1e-12)))


@register(
    CHECKS,
    "loop_rate_multiple_accepted",
    "§5, §7",
    "loop_rate_hz = k x control rate (k = 20, 100) gets WELCOME with loop_rate_hz echoed",
)
def loop_rate_multiple_accepted(target: ServerTarget) -> None:
    """Multi-rate controllers."""
    with target.peers() as make:
        _, served = probe.start(make)
        for k in (20, 100):
            loop_hz = k * served.rate_hz
            _, welcome = probe.open_session(make(), served.hello(loop_rate_hz=loop_hz), f"k={k}")
            expect(
                probe.close_enough(welcome.get("loop_rate_hz", math.nan), loop_hz),
                f"k={k}: WELCOME loop_rate_hz {welcome.get('loop_rate_hz')}, expected {loop_hz}",
            )


@register(
    CHECKS,
    "observation_action",
    "§6",
    "each OBSERVATION gets an ACTION: ack_seq, t_echo_ns, session, size, finite, seq rising",
)
def observation_action(target: ServerTarget) -> None:
    """Five observations, one at a time."""
    with target.peers() as make:
        peer, served = probe.start(make)
        welcome, _ = probe.open_session(peer, served.hello())
        last = welcome.seq
        for i in range(5):
            flags = int(p.Flags.EPISODE_START) if i == 0 else 0
            msg = probe.step(peer, served, f"observation {i + 1}", flags=flags)
            expect(msg.seq > last, f"ACTION seq {msg.seq} not above the previous {last}")
            last = msg.seq


@register(
    CHECKS,
    "newest_observation_answered",
    "§1, §6",
    "a burst of observations: the newest is answered, acks rise, none older after newer",
)
def newest_observation_answered(target: ServerTarget) -> None:
    """Five observations back to back."""
    with target.peers() as make:
        peer, served = probe.start(make)
        probe.open_session(peer, served.hello())
        sent = [probe.observe(peer, served.obs_size)[0] for _ in range(5)]
        acks = []
        for msg in probe.collect(peer, 0.5):
            expect(msg.type is p.MsgType.ACTION, f"expected ACTIONs, got {describe_msg(msg)}")
            acks.append(msg.ack_seq)
        expect(bool(acks) and acks[-1] == sent[-1], f"acks {acks}; the newest is {sent[-1]}")
        expect(acks == sorted(set(acks)), f"acks {acks} are not strictly increasing")


@register(
    CHECKS,
    "stale_observation_dropped",
    "§4, §6",
    "an OBSERVATION whose seq is not above the last is dropped: no ACTION, no ERROR",
)
def stale_observation_dropped(target: ServerTarget) -> None:
    """Older and repeated seq numbers."""
    with target.peers() as make:
        peer, served = probe.start(make)
        probe.open_session(peer, served.hello())
        probe.step(peer, served, "observation seq 5", seq=5)
        for seq in (3, 5):
            probe.observe(peer, served.obs_size, seq=seq)
            peer.silence(target.silence_s, f"stale OBSERVATION seq {seq} after seq 5")
        probe.step(peer, served, "observation seq 6", seq=6)


@register(
    CHECKS,
    "non_finite_observation",
    "§4",
    "an OBSERVATION with NaN or Inf gets ERROR NON_FINITE and no ACTION",
)
def non_finite_observation(target: ServerTarget) -> None:
    """NaN and Inf in an observation."""
    with target.peers() as make:
        peer, served = probe.start(make)
        probe.open_session(peer, served.hello())
        for bad in (math.nan, math.inf):
            payload = probe.observation(served.obs_size, bad)
            seq, t_send = peer.send_msg(p.MsgType.OBSERVATION, payload)
            msg = peer.error(p.ErrorCode.NON_FINITE, f"OBSERVATION with {bad}")
            probe.header(msg, "NON_FINITE", peer.session, None, (seq, t_send))
            peer.silence(target.silence_s, f"after the OBSERVATION with {bad}")
        probe.step(peer, served, "a finite observation afterwards")


@register(
    CHECKS,
    "heartbeat_answered",
    "§3, §6",
    "HEARTBEAT in a session gets HEARTBEAT: session, seq rising, ack_seq, t_echo_ns",
)
def heartbeat_answered(target: ServerTarget) -> None:
    """A heartbeat's answer."""
    with target.peers() as make:
        peer, served = probe.start(make)
        welcome, _ = probe.open_session(peer, served.hello())
        seq, t_send = peer.send_msg(p.MsgType.HEARTBEAT)
        msg = peer.reply(p.MsgType.HEARTBEAT, "HEARTBEAT")
        probe.header(msg, "HEARTBEAT", peer.session, None, (seq, t_send))
        expect(msg.seq > welcome.seq, f"HEARTBEAT seq {msg.seq} not above WELCOME's {welcome.seq}")


@register(
    CHECKS,
    "bye_acknowledged",
    "§3",
    "BYE gets BYE (ack_seq echoes it); the session is then gone: OBSERVATION -> NO_SESSION",
)
def bye_acknowledged(target: ServerTarget) -> None:
    """BYE and after."""
    with target.peers() as make:
        peer, served = probe.start(make)
        welcome, _ = probe.open_session(peer, served.hello())
        seq, t_send = peer.send_msg(p.MsgType.BYE)
        msg = peer.reply(p.MsgType.BYE, "BYE")
        probe.header(msg, "BYE", peer.session, None, (seq, t_send))
        expect(msg.seq > welcome.seq, f"BYE seq {msg.seq} not above WELCOME's {welcome.seq}")
        seq, t_send = probe.observe(peer, served.obs_size)
        probe.outside_error(peer, p.ErrorCode.NO_SESSION, "OBSERVATION after BYE", (seq, t_send))
        peer.session = 0


@register(
    CHECKS,
    "hello_replaces_session",
    "§8",
    "a second HELLO on a connection gets a new session; the old id gets NO_SESSION",
)
def hello_replaces_session(target: ServerTarget) -> None:
    """Two HELLOs on one connection."""
    with target.peers() as make:
        peer, served = probe.start(make)
        first, _ = probe.open_session(peer, served.hello(), "first HELLO")
        probe.step(peer, served, "first session")
        second, _ = probe.open_session(peer, served.hello(), "second HELLO")
        expect(second.session_id != first.session_id, "the second HELLO got the same session")
        expect(second.seq == 1, f"the new session's WELCOME seq {second.seq}, expected 1")
        seq, t_send = probe.observe(peer, served.obs_size, session=first.session_id, seq=10)
        msg = peer.error(p.ErrorCode.NO_SESSION, "OBSERVATION naming the replaced session")
        probe.header(msg, "NO_SESSION", second.session_id, None, (seq, t_send))
        peer.seq = 1
        probe.step(peer, served, "the new session")
