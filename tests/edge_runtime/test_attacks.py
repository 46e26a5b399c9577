"""Hostile peers against the policy server and hostile servers against the controller.

Functional checks of ``docs/protocol.md`` sections 4, 5 and 8 (error codes, JSON limits, budgets,
eviction, never-reading peers, bounded state) and of the controller's distrust of WELCOME and
its fault handling (sections 5 and 7). No assertion is on speed: every wait is a generous
timeout for something that must happen, so a busy machine only makes the file slower.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import zmq
from edge_helpers import SPEC, LinearPolicy, RawPeer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.client import EdgeClient, HandshakeError
from factoryfloor.edge_runtime.conformance.kit import frame
from factoryfloor.edge_runtime.controller import (
    ControllerRuntime,
    ControllerStatus,
    RobotController,
)
from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig

E = p.ErrorCode
PEERS_TRACKED_LIMIT = 4_096  # docs/protocol.md, section 8: "at most 4,096 peers"
GOOD_HELLO: dict[str, Any] = SPEC.hello("attack-test", 20.0, None)
LONG_AGE_MS = 5_000.0  # a busy test machine must not turn a late action into a dropped one


# --- helpers ---------------------------------------------------------------------------------


@contextmanager
def serving(**config: Any) -> Iterator[tuple[PolicyServer, threading.Thread]]:
    """A PolicyServer on a free loopback port in a thread (``edge_helpers.running_server``'s
    pattern, with the thread exposed so that tests can check it is still alive)."""
    config.setdefault("max_action_age_ms", LONG_AGE_MS)
    server = PolicyServer(
        LinearPolicy(), ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10, **config)
    )  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, thread
    finally:
        server.stop_event.set()
        thread.join(5)
        server.close()


def raw_frame(mtype: int, payload: bytes = b"", **fields: Any) -> bytes:
    """A frame packed by hand (no checks: the server must make them): ``kit.frame``, seq 1."""
    return frame(mtype, payload, **{"seq": 1, **fields})


def hello_frame(payload: bytes) -> bytes:
    return raw_frame(p.MsgType.HELLO, payload)


def error_code(msg: p.Message | None) -> int | None:
    """The code of an ERROR message (None for anything else)."""
    if msg is None or msg.type is not p.MsgType.ERROR:
        return None
    return p.decode_error(msg.payload)[0]


def counter(server: PolicyServer, name: str) -> int:
    return int(server.metrics.counters.get(name, 0))


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``check`` until it holds or ``timeout_s`` passes (a liveness wait, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def handshake(client: EdgeClient, within_s: float = 5.0) -> dict[str, Any]:
    """HELLO until WELCOME: a full server says TOO_MANY_SESSIONS until a session is evictable."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return client.handshake(dict(GOOD_HELLO), timeout_s=5.0)
        except HandshakeError as exc:
            if exc.code != E.TOO_MANY_SESSIONS or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def good_controller_works(server: PolicyServer, observations: int = 5) -> bool:
    """A fresh well-behaved controller gets a WELCOME and an action for each observation."""
    client = EdgeClient(server.endpoint)
    try:
        handshake(client)
        for k in range(observations):
            obs = np.full(6, k, np.float32)
            client.send_observation(obs)
            action = client.receive_action(5.0)
            if action is None or not np.allclose(action, obs[:2] / 10):
                return False
        client.send_bye()
        return True
    finally:
        client.close()


def hello_text(overrides: dict[str, str], drop: tuple[str, ...] = (), head: str = "") -> bytes:
    """GOOD_HELLO as JSON text with some values replaced by raw JSON text (``overrides``)."""
    doc: dict[str, Any] = {k: v for k, v in GOOD_HELLO.items() if k not in drop}
    raws = {}
    for i, (key, text) in enumerate(overrides.items()):
        marker = f"@@RAW{i}@@"
        doc[key] = marker
        raws[json.dumps(marker)] = text
    text = json.dumps(doc, separators=(",", ":"))
    for marker, raw in raws.items():
        text = text.replace(marker, raw)
    if head:
        text = "{" + head + "," + text[1:]
    return text.encode("utf-8")


# --- poison HELLOs ---------------------------------------------------------------------------

BIG_INT = "9" * 5_000
POISONS: dict[str, bytes] = {
    **{f"5000_digit_int_in_{key}": hello_text({key: BIG_INT}) for key in GOOD_HELLO},
    "5000_digit_int_in_a_shape": hello_text(
        {
            "observation": json.dumps([{"name": "observation", "shape": ["@"]}]).replace(
                '"@"', BIG_INT
            )
        }
    ),
    "control_rate_1e400": hello_text({"control_rate_hz": "1e400"}),
    "control_rate_minus_1e400": hello_text({"control_rate_hz": "-1e400"}),
    "control_rate_NaN": hello_text({"control_rate_hz": "NaN"}),
    "control_rate_Infinity": hello_text({"control_rate_hz": "Infinity"}),
    "nested_40_deep": hello_text({"junk": "[" * 40 + "]" * 40}),
    "nested_40_deep_objects": hello_text({"junk": '{"a":' * 40 + "1" + "}" * 40}),
    "duplicate_key": hello_text({}, head='"robot":"panda"'),
    "duplicate_protocol_version": hello_text({}, head='"protocol_version":2'),
    "lone_surrogate": hello_text({"controller": '"\\ud800"'}),
    "hold_window_twenty": hello_text({"hold_window_ms": '"twenty"'}),
    "controller_10000_chars": hello_text({"controller": json.dumps("c" * 10_000)}),
    "controller_empty": hello_text({"controller": '""'}),
    "controller_missing": hello_text({}, drop=("controller",)),
    "not_utf8": b'{"controller":"\xff\xfe"}',
    "top_level_list": b"[1,2,3]",
    "truncated_json": hello_text({})[:-7],
}


@pytest.mark.parametrize("name", sorted(POISONS))
def test_a_poison_hello_is_answered_with_bad_payload_and_the_server_goes_on(name):
    with serving() as (server, thread):
        peer = RawPeer(server.endpoint)  # a fresh peer per HELLO: its own error budget
        peer.send(hello_frame(POISONS[name]))
        answer = peer.recv(5.0)
        peer.close()
        assert error_code(answer) == E.BAD_PAYLOAD, (name, answer)
        assert server.sessions == {}
        assert counter(server, "frame_failures") == 0
        assert thread.is_alive()
        assert good_controller_works(server)


def test_every_poison_in_a_row_then_a_good_controller_is_served():
    with serving() as (server, thread):
        answers = []
        for payload in POISONS.values():
            peer = RawPeer(server.endpoint)
            peer.send(hello_frame(payload))
            answers.append(error_code(peer.recv(5.0)))
            peer.close()
        assert answers == [E.BAD_PAYLOAD] * len(POISONS)
        assert thread.is_alive() and good_controller_works(server)


def test_a_hello_header_outside_session_0_seq_1_is_bad_payload():
    with serving() as (server, _):
        for header in ({"session": 5}, {"seq": 2}):
            peer = RawPeer(server.endpoint)
            peer.send(raw_frame(p.MsgType.HELLO, hello_text({}), **header))
            assert error_code(peer.recv(5.0)) == E.BAD_PAYLOAD, header
            peer.close()


# --- Hypothesis: every HELLO document gets exactly one answer ----------------------------------

JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
RAW_VALUES = st.sampled_from(
    [
        BIG_INT, "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1e-400", "-0",
        "9007199254740993", "0." + "1" * 40, '"\\ud800"', '"\\udfff x"', json.dumps("s" * 5_000),
        "[" * 20 + "]" * 20, "[" * 14 + "]" * 14, "true", "null", "{}", "[]", '""',
        '"twenty"', "100", "100.0", "1e2", "2", "1",
    ]
)  # fmt: skip


@st.composite
def hello_documents(draw: st.DrawFn) -> bytes:
    """Valid-looking HELLO text with fields mutated, dropped, added, duplicated or broken."""
    doc: dict[str, Any] = json.loads(json.dumps(GOOD_HELLO))
    raws: dict[str, str] = {}
    for key in draw(st.lists(st.sampled_from(sorted(GOOD_HELLO)), unique=True, max_size=4)):
        how = draw(st.sampled_from(["drop", "junk", "raw"]))
        if how == "drop":
            del doc[key]
        elif how == "junk":
            doc[key] = draw(JUNK)
        else:
            marker = f"@@RAW{len(raws)}@@"
            doc[key], raws[json.dumps(marker)] = marker, draw(RAW_VALUES)
    if draw(st.booleans()):  # a nested field mutated
        fields = doc.get("observation") if draw(st.booleans()) else doc.get("action")
        if isinstance(fields, list) and fields and isinstance(fields[0], dict):
            fields[0][draw(st.sampled_from(["name", "shape", "low", "high", "dtype"]))] = draw(JUNK)
    doc.update(draw(st.dictionaries(st.text(max_size=10), JUNK, max_size=3)))  # extra keys
    text = json.dumps(doc, separators=(",", ":"), allow_nan=True)
    for marker, raw in raws.items():
        text = text.replace(marker, raw)
    if draw(st.booleans()) and len(text) > 2:  # a duplicate key, in the raw text
        text = (
            "{"
            + draw(st.sampled_from(['"robot":"panda"', '"x":1', '"action":[]']))
            + ","
            + text[1:]
        )
    data = text.encode("utf-8")
    cut = draw(st.integers(min_value=0, max_value=8))
    return data[: len(data) - cut] if cut > 6 else data


def test_hypothesis_every_hello_document_gets_exactly_one_answer():
    with serving() as (server, thread):
        endpoint = server.endpoint

        @settings(
            max_examples=200,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(hello_documents())
        def one_answer(document: bytes) -> None:
            peer = RawPeer(endpoint)
            try:
                peer.send(hello_frame(document))
                answer = peer.recv(5.0)
                assert answer is not None and answer.type in (p.MsgType.WELCOME, p.MsgType.ERROR)
                assert answer.ack_seq == 1  # it answers the HELLO (seq 1)
                peer.send(b"marker")  # answered with BAD_MAGIC: nothing else may come before it
                marker = peer.recv(5.0)
                assert error_code(marker) == E.BAD_MAGIC and marker.ack_seq == 0, marker
                assert thread.is_alive()
            finally:
                peer.close()

        one_answer()
        assert thread.is_alive()
        assert counter(server, "frame_failures") == 0
        assert good_controller_works(server)


# --- floods, never-reading peers, silent sessions, many identities ----------------------------


def test_a_flooding_peer_is_throttled_and_a_good_session_is_still_served():
    with serving() as (server, thread):
        client = EdgeClient(server.endpoint)
        client.handshake(dict(GOOD_HELLO), timeout_s=5.0)
        sent = [0]

        def flood() -> None:
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(server.endpoint)
            junk = [b"garbage", b"FFEP" + bytes(60), raw_frame(9, b"x"), bytes(48)]
            for i in range(20_000):
                sock.send(junk[i % len(junk)])
                sent[0] += 1
            time.sleep(0.5)  # let the last frames arrive before the connection goes
            sock.close(0)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        answered = 0
        for k in range(50):  # during the flood and after it
            obs = np.full(6, k, np.float32)
            client.send_observation(obs)
            action = client.receive_action(5.0)
            answered += action is not None and np.allclose(action, obs[:2] / 10)
            time.sleep(0.01)
        flooder.join(60)
        assert sent[0] == 20_000
        assert answered == 50
        assert wait_for(lambda: counter(server, "frames_throttled") > 0)
        assert thread.is_alive() and counter(server, "frame_failures") == 0
        client.close()


def test_a_never_reading_session_is_closed_and_forgotten():
    with serving() as (server, thread):
        identity = b"never-reads"
        sock = zmq.Context.instance().socket(zmq.DEALER)
        for option, value in (
            (zmq.LINGER, 0), (zmq.ROUTING_ID, identity), (zmq.RCVHWM, 1), (zmq.RCVBUF, 1024),
        ):  # fmt: skip
            sock.setsockopt(option, value)
        sock.connect(server.endpoint)
        sock.send(hello_frame(hello_text({})))
        assert sock.poll(5_000)
        welcome = p.decode(sock.recv())
        assert welcome.type is p.MsgType.WELCOME
        sid = welcome.session_id
        obs = p.encode_floats(np.zeros(6, np.float32))
        seq, deadline = 1, time.monotonic() + 20.0
        while counter(server, "sessions_closed_unread") < 1 and time.monotonic() < deadline:
            seq += 1  # one at a time, each answered, under its budget (900/s): not "flooding"
            sock.send(raw_frame(p.MsgType.OBSERVATION, obs, session=sid, seq=seq))
            time.sleep(0.0015)
        assert counter(server, "sessions_closed_unread") >= 1, server.metrics.counters
        assert counter(server, "sessions_closed_flooding") == 0
        assert wait_for(lambda: sid not in server.sessions)
        by_identity = getattr(server, "by_identity", {})
        assert identity not in by_identity
        assert server.metrics.gauges.get("sessions", 0) == 0
        sock.close(0)
        assert thread.is_alive() and good_controller_works(server)


def test_silent_sessions_are_evicted_when_a_new_controller_waits():
    with serving(max_sessions=8) as (server, _):
        peers = []
        for _ in range(8):
            peer = RawPeer(server.endpoint)
            peer.send(hello_frame(hello_text({})))
            assert (peer.recv(5.0) or p.Message(p.MsgType.ERROR)).type is p.MsgType.WELCOME
            peers.append(peer)
            time.sleep(0.05)  # peers[0] is the longest silent
        late = RawPeer(server.endpoint)  # before evict_after_s: the server is full
        late.send(hello_frame(hello_text({})))
        early = late.recv(5.0)
        late.close()
        time.sleep(0.7)  # past evict_after_s (0.5 s) for every silent session
        client = EdgeClient(server.endpoint)
        welcome = client.handshake(dict(GOOD_HELLO), timeout_s=5.0)
        assert welcome["session_id"] == client.session_id != 0
        closed = peers[0].recv(5.0)
        assert error_code(closed) == E.SESSION_CLOSED, closed
        assert all(peer.recv(0.2) is None for peer in peers[1:])  # only one was evicted
        assert counter(server, "sessions_evicted") == 1
        assert len(server.sessions) == 8
        if error_code(early) is not None:  # answered before anything was silent long enough
            assert error_code(early) == E.TOO_MANY_SESSIONS
        client.send_observation(np.ones(6, np.float32))
        assert client.receive_action(5.0) is not None
        client.close()
        for peer in peers:
            peer.close()


def test_many_short_lived_identities_leave_bounded_state():
    with serving(session_timeout_s=1.0) as (server, thread):
        ctx = zmq.Context.instance()
        hello = hello_frame(hello_text({}))
        kinds = [
            b"garbage",
            raw_frame(p.MsgType.DESCRIBE),
            raw_frame(p.MsgType.HEARTBEAT, session=4242, seq=2),
            hello,
        ]
        answered = 0
        for batch in range(50):  # 5,000 identities, 100 connected at a time
            socks = []
            for i in range(100):
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(server.endpoint)
                sock.send(kinds[(batch * 100 + i) % len(kinds)])
                socks.append(sock)
            for sock in socks:
                answered += bool(sock.poll(5_000))
                sock.close(0)
        assert answered >= 4_900  # (nearly) each got its one answer
        assert thread.is_alive() and counter(server, "frame_failures") == 0
        assert good_controller_works(server)  # refreshes the gauges too
        tracked = server.metrics.gauges.get("peers_tracked")
        assert tracked is not None and tracked <= PEERS_TRACKED_LIMIT
        limit = PEERS_TRACKED_LIMIT + server.config.max_sessions
        sizes = {k: len(v) for k, v in vars(server).items() if isinstance(v, dict | list | set)}
        assert all(n <= limit for n in sizes.values()), sizes
        assert wait_for(lambda: len(server.sessions) == 0, 10.0)  # timed out, all of them
        assert getattr(server, "by_identity", {}) == {}


# --- the controller against hostile servers ----------------------------------------------------

HOSTILE_SID = 777


def welcome_for(hello: dict[str, Any]) -> dict[str, Any]:
    """The WELCOME an honest server would send for ``hello`` (session ``HOSTILE_SID``)."""
    return {
        "protocol_version": 2, "session_id": HOSTILE_SID, "server": "fake",
        "task_id": hello["task_id"], "robot": hello["robot"],
        "observation": hello["observation"], "action": hello["action"],
        "schema_sha256": hello["schema_sha256"], "model_sha256": SPEC.model_sha256,
        "control_rate_hz": hello["control_rate_hz"], "loop_rate_hz": hello["control_rate_hz"],
        "max_action_age_ms": 50.0, "session_timeout_s": 10.0,
    }  # fmt: skip


def with_action(shape: list[int], low: float = -1.0, high: float = 1.0, fields: int = 1) -> Any:
    def change(w: dict[str, Any]) -> None:
        n = int(np.prod(shape))
        w["action"] = [
            {"name": f"action{i}" if i else "action", "shape": shape, "low": [low] * n,
             "high": [high] * n}
            for i in range(fields)
        ]  # fmt: skip
        w["schema_sha256"] = p.schema_sha256(w["observation"], w["action"])  # self-consistent

    return change


def setting(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda w: w.__setitem__(key, value)


def dropping(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda w: w.pop(key)


def with_observation(w: dict[str, Any]) -> None:
    w["observation"] = [{"name": "observation", "shape": [7]}]
    w["schema_sha256"] = p.schema_sha256(w["observation"], w["action"])


# name -> (change to the WELCOME dict, header session id or None: the JSON's, raw payload)
HOSTILE: dict[str, tuple[Callable[[dict[str, Any]], None] | None, int | None, bytes | None]] = {
    "action_size_1": (with_action([1]), None, None),
    "action_size_0": (with_action([0]), None, None),
    "action_size_2_two_fields": (with_action([1], fields=2), None, None),
    "action_size_2_other_limits": (with_action([2], -2.0, 2.0), None, None),
    "action_size_8": (with_action([8]), None, None),
    "observation_differs": (with_observation, None, None),
    "session_0": (setting("session_id", 0), 0, None),
    "session_header_differs": (None, HOSTILE_SID + 1, None),
    "session_negative": (setting("session_id", -5), None, None),
    "session_text": (setting("session_id", "777"), None, None),
    "max_age_1e308": (setting("max_action_age_ms", 1e308), None, None),
    "max_age_minus_1": (setting("max_action_age_ms", -1), None, None),
    "max_age_0": (setting("max_action_age_ms", 0), None, None),
    "max_age_text": (setting("max_action_age_ms", "x"), None, None),
    "max_age_missing": (dropping("max_action_age_ms"), None, None),
    "max_age_null": (setting("max_action_age_ms", None), None, None),
    "protocol_version_1": (setting("protocol_version", 1), None, None),
    "schema_hash_wrong": (setting("schema_sha256", "0" * 64), None, None),
    "task_differs": (setting("task_id", "other/Task-v0"), None, None),
    "robot_differs": (setting("robot", "xarm6"), None, None),
    "control_rate_differs": (setting("control_rate_hz", 50.0), None, None),
    "model_differs_when_pinned": (setting("model_sha256", "cd" * 32), None, None),
    "action_missing": (dropping("action"), None, None),
    "not_json": (None, None, b"not json at all"),
    "json_list": (None, None, b"[1, 2]"),
    "json_nan": (None, None, b'{"protocol_version": 2, "max_action_age_ms": NaN}'),
    "empty_object": (None, None, b"{}"),
}


@contextmanager
def fake_server(
    change: Callable[[dict[str, Any]], None] | None,
    header_sid: int | None,
    raw: bytes | None,
) -> Iterator[tuple[str, list[p.Message]]]:
    """A ROUTER that answers each HELLO with a (possibly hostile) WELCOME; records what came."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    received: list[p.Message] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not router.poll(20):
                continue
            identity, frame = router.recv_multipart()
            msg = p.decode(frame)
            received.append(msg)
            if msg.type is not p.MsgType.HELLO:
                continue
            welcome = welcome_for(json.loads(msg.payload))
            if change is not None:
                change(welcome)
            payload = raw if raw is not None else json.dumps(welcome).encode()
            sid = header_sid if header_sid is not None else welcome.get("session_id", 0)
            sid = sid if isinstance(sid, int) and 0 <= sid < 2**32 else HOSTILE_SID
            header = p.HEADER.pack(
                p.MAGIC, 2, p.MsgType.WELCOME, 0, len(payload), sid, 1, msg.seq,
                time.monotonic_ns(), msg.t_send_ns,
            )  # fmt: skip
            router.send_multipart([identity, header + payload])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}", received
    finally:
        stop.set()
        thread.join(5)
        router.close(0)


def test_the_fake_server_honest_welcome_is_accepted():  # the hostile cases below are not vacuous
    with fake_server(None, None, None) as (endpoint, _):
        client = EdgeClient(endpoint)
        welcome = client.handshake(SPEC.hello("victim", 20.0, SPEC.model_sha256), timeout_s=5.0)
        assert welcome["session_id"] == client.session_id == HOSTILE_SID
        client.close()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_welcome_raises_handshake_error_and_nothing_is_sent_on_it(name):
    change, header_sid, raw = HOSTILE[name]
    with fake_server(change, header_sid, raw) as (endpoint, received):
        client = EdgeClient(endpoint)
        hello = SPEC.hello("victim", 20.0, SPEC.model_sha256)  # pins the model
        with pytest.raises(HandshakeError):  # never ValueError, KeyError, TypeError
            client.handshake(hello, timeout_s=5.0)
        client.send_observation(np.zeros(6, np.float32))  # refused: nothing on that session
        time.sleep(0.1)
        named = [m for m in received if m.session_id in (HOSTILE_SID, HOSTILE_SID + 1)]
        assert named == [], named
        client.close()


# --- the controller's own loop failing ---------------------------------------------------------


class FailingRobot(RobotController):
    """A stand-in robot whose ``apply_action`` (or ``read_state``) raises after some cycles."""

    description = SPEC

    def __init__(self, where: str, after: int = 5) -> None:
        self.where, self.after = where, after
        self.applied = self.reads = 0
        self.braking_states: list[str] = []
        self.runtime: ControllerRuntime | None = None

    def read_state(self) -> tuple[np.ndarray, bool]:
        self.reads += 1
        if self.where == "read_state" and self.reads > self.after:
            raise RuntimeError("sensor bus timeout on read_state")
        return np.zeros(SPEC.obs_size, np.float32), False

    def apply_action(self, action: np.ndarray) -> None:
        self.applied += 1
        if self.where == "apply_action" and self.applied > self.after:
            raise RuntimeError("joint 3 driver error in apply_action")

    def hold(self, action: np.ndarray) -> None:
        """Nothing to hold."""

    def brake(self) -> None:
        assert self.runtime is not None
        self.braking_states.append(self.runtime.safety.state.value)

    def status(self) -> ControllerStatus:
        return ControllerStatus(standstill=len(self.braking_states) >= 2)


@pytest.mark.parametrize(
    ("where", "words"),
    [("apply_action", "joint 3 driver error"), ("read_state", "sensor bus timeout")],
)
def test_an_exception_in_the_loop_brakes_then_latches_fault_with_the_reason(where, words):
    with serving() as (server, _):
        robot = FailingRobot(where)
        runtime = ControllerRuntime(robot, EdgeClient(server.endpoint), hold_window_s=0.5)
        robot.runtime = runtime
        runtime.rearm()
        report = runtime.run(max_cycles=500)  # no exception escapes
        assert report.state == "FAULT", report
        assert words in report.reason, report.reason
        assert "BRAKING" in robot.braking_states  # braked before the FAULT latched
        assert report.cycles < 500
        applied = robot.applied
        runtime.cycle()  # latched: nothing moves until a re-arm
        assert runtime.safety.state.value == "FAULT" and robot.applied == applied
        runtime.client.close()
