"""The reference C controller (examples/c_controller), FFEP/2.

Against the Python policy server (the bundle's 25 Hz policy, and a 25 Hz constant policy under a
500 Hz loop), and against a fake server that sends crafted WELCOMEs the controller must refuse
(``docs/protocol.md``, section 5, "A controller distrusts WELCOME") and a SESSION_CLOSED mid-run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

import numpy as np
import pytest
import zmq

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.edge_runtime.served import BundleServedPolicy
from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig
from factoryfloor.edge_runtime.spec import PolicySpec

BUNDLE = str(files("factoryfloor.policies") / "pretrained" / "reach_panda.ffpolicy")
pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)

# A 25 Hz policy with 3 + 4 observation values and 4 action values, for the multi-rate loop and
# the fake server.
OBS = [
    {"name": "position", "shape": [3], "units": "m"},
    {"name": "extra", "shape": [2, 2], "units": "-"},
]
ACT = [{"name": "action", "shape": [4], "low": [-1.0] * 4, "high": [1.0] * 4, "units": "-"}]
SPEC25 = PolicySpec(
    task_id="test/MultiRate-v0",
    robot="panda",
    control_rate_hz=25.0,
    observation=OBS,
    action=ACT,
    model_sha256="ab" * 32,
)
COMMAND = np.array([0.2, -0.4, 0.1, 0.0], np.float32)  # a delta command for one policy period
SID = 7  # the fake server's session id


class ConstantPolicy:
    """Answers every observation with COMMAND; keeps the last observation and the resets."""

    spec = SPEC25

    def __init__(self) -> None:
        self.calls = 0
        self.last_obs = np.zeros(SPEC25.obs_size, np.float32)
        self.resets: list[int] = []

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.last_obs = obs[-1].copy()
        return np.tile(COMMAND, (len(sessions), 1))

    def reset(self, session: int) -> None:
        self.resets.append(session)


@pytest.fixture(scope="module")
def c_controller(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("c") / "ffep_controller"
    build = repo_root / "examples" / "c_controller" / "build.py"
    subprocess.run([sys.executable, str(build), str(out)], check=True, capture_output=True)
    return out


@contextmanager
def serving(policy: Any) -> Iterator[PolicyServer]:
    srv = PolicyServer(policy, ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=5))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stop_event.set()
        thread.join(5)
        srv.close()


@pytest.fixture
def server():
    with serving(BundleServedPolicy(load_bundle(BUNDLE))) as srv:
        yield srv


def hello_file(tmp_path, spec, k=1, hold_ms=50.0, **overrides):
    """The HELLO the C controller sends (it sends the file as is)."""
    hello = {
        "protocol_version": p.PROTOCOL_VERSION, "controller": "c-reference", "robot": spec.robot,
        "task_id": spec.task_id, "observation": spec.observation, "action": spec.action,
        "control_rate_hz": spec.control_rate_hz, "hold_window_ms": hold_ms,
        "schema_sha256": spec.schema_sha256, "model_sha256": spec.model_sha256, **overrides,
    }  # fmt: skip
    if k > 1:
        hello["loop_rate_hz"] = k * spec.control_rate_hz  # section 7: k * control_rate_hz
    path = tmp_path / "hello.json"
    path.write_bytes(p.encode_json(hello))
    return path


def run_c(c_controller, endpoint, spec, hello, cycles, k=1, hold_ms=50, timeout=60):
    cmd = [str(c_controller), endpoint, str(hello), str(spec.obs_size), str(spec.action_size),
           str(cycles), str(spec.control_rate_hz), str(hold_ms), str(k)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def result_of(done: subprocess.CompletedProcess) -> dict[str, Any]:
    lines = done.stdout.splitlines()
    assert len(lines) == 1, (done.stdout, done.stderr)  # one JSON result line, whatever happened
    return json.loads(lines[0])


# ---------------------------------------------------------------- the real server -----------


def test_c_controller_runs_1000_cycles_against_the_python_server(c_controller, server, tmp_path):
    # 1,000 loop cycles at 200 Hz on the bundle's 25 Hz policy (k = 8): 125 observations.
    hello = hello_file(tmp_path, server.spec, k=8)
    done = run_c(c_controller, server.endpoint, server.spec, hello, 1_000, k=8)
    assert done.returncode == 0, done.stderr
    result = result_of(done)
    assert result["session_id"] != 0 and result["fault"] is False
    assert result["loop_rate_hz"] == 200 and result["loop_cycles"] == 1_000 == result["cycles"]
    assert result["observations_sent"] == 125
    assert result["fresh"] >= 0.9 * 125  # a few held on a busy machine
    assert result["rejected"] == 0 and result["malformed"] == 0 and result["errors_received"] == 0
    assert 0 < result["rtt_us"]["p50"] < 20_000
    assert server.metrics.counters["actions_sent"] >= result["fresh"]
    assert result["bye_answered"] is True  # section 3: the server answers BYE with BYE


def test_c_controller_handshake_refused_on_a_model_mismatch(c_controller, server, tmp_path):
    hello = hello_file(tmp_path, server.spec, model_sha256="00" * 32)
    done = run_c(c_controller, server.endpoint, server.spec, hello, 10)
    assert done.returncode == 2
    assert "code 11" in done.stderr  # MODEL_MISMATCH = 11
    assert result_of(done)["handshake_error"] == p.ErrorCode.MODEL_MISMATCH


def test_c_controller_latches_a_fault_when_the_server_goes_silent(c_controller, server, tmp_path):
    hello = hello_file(tmp_path, server.spec, k=4, hold_ms=20)
    answer = server.rows.run  # the server's inference call

    def silent_then_late(sessions):
        time.sleep(0.2)  # far beyond one policy period (40 ms) + the 20 ms hold window
        return answer(sessions)

    server.rows.run = silent_then_late
    done = run_c(c_controller, server.endpoint, server.spec, hello, 100, k=4, hold_ms=20)
    assert done.returncode == 3
    result = result_of(done)
    assert result["fault"] is True and "hold window" in result["fault_reason"]
    assert result["fresh"] == 0 and result["position"] == [0, 0, 0]  # braked: it never moved
    # the hold deadline is 60 ms after the start: at 100 Hz about the 6th loop cycle
    assert result["loop_cycles"] < 50


def test_c_controller_500_hz_loop_on_a_25_hz_policy(c_controller, tmp_path):
    # Section 7: k = 20, one OBSERVATION every 20th cycle, each action spread over 20 cycles.
    k, cycles = 20, 10_000
    policy = ConstantPolicy()
    with serving(policy) as srv:
        hello = hello_file(tmp_path, SPEC25, k=k, hold_ms=200)
        # a 200 ms hold window: a busy test machine may stall a process for tens of ms (a
        # robot's real-time host does not); this test is about the multi-rate mechanics
        done = run_c(c_controller, srv.endpoint, SPEC25, hello, cycles, k=k, hold_ms=200)
        sent = srv.metrics.counters.get("actions_sent", 0)
    print("500 Hz on 25 Hz:", done.stdout, done.stderr)
    assert done.returncode == 0, (done.stdout, done.stderr)
    result = result_of(done)
    assert result["fault"] is False and result["fault_reason"] is None
    assert result["loop_rate_hz"] == 500 and result["loop_cycles"] == cycles
    observations = result["observations_sent"]
    assert abs(observations - cycles // k) <= 2
    assert result["fresh"] >= 0.95 * observations and sent >= result["fresh"]
    assert result["rejected"] <= 0.05 * observations and result["malformed"] == 0
    # EPISODE_START on the first observation only (the server may reset again at BYE)
    assert policy.resets[0] == result["session_id"] and len(policy.resets) <= 2
    assert result["bye_answered"] is True
    # Every cycle applies COMMAND / k of the point's 0.01 * command per policy period, so
    # 10,000 cycles move it 0.01 * COMMAND * 500 (applying the whole command each cycle would
    # move it 20 times as far).
    expected = 0.01 * COMMAND[:3] * cycles / k
    assert np.allclose(result["position"], expected, rtol=0.01)
    # The observations carry the position: the last one is at most one policy period behind.
    assert np.allclose(policy.last_obs[:3], result["position"], atol=0.011 * np.abs(COMMAND).max())


def test_c_controller_refuses_a_hello_file_that_disagrees_with_k(c_controller, tmp_path):
    # the HELLO file must state loop_rate_hz = k * RATE_HZ (the controller sends it as is)
    hello = hello_file(tmp_path, SPEC25, k=1)
    done = run_c(c_controller, "tcp://127.0.0.1:9", SPEC25, hello, 10, k=20)
    assert done.returncode == 2 and "loop_rate_hz" in done.stderr and done.stdout == ""
    hello = hello_file(tmp_path, SPEC25, k=10)
    done = run_c(c_controller, "tcp://127.0.0.1:9", SPEC25, hello, 10, k=20)
    assert done.returncode == 2 and "loop_rate_hz" in done.stderr


# ---------------------------------------------------------------- a fake server -------------


class FakeServer:
    """A ROUTER in a thread that answers HELLO with ``welcome(hello)`` (a whole frame).

    With ``act``, it answers every OBSERVATION with an ACTION of COMMAND, sends
    ``extras[i]`` (whole frames) after the i-th, and answers BYE with BYE. With ``close_after``
    it sends SESSION_CLOSED for the session after that many observations, and keeps acting.
    """

    def __init__(
        self,
        welcome: Callable[[p.Message], bytes],
        act: bool = False,
        extras: dict[int, bytes] | None = None,
        close_after: int | None = None,
    ) -> None:
        self.welcome, self.act, self.extras, self.close_after = (
            welcome,
            act,
            extras or {},
            close_after,
        )
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind("tcp://127.0.0.1:0")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.received: list[p.Message] = []
        self.undecodable: list[str] = []
        self.closed_after_obs: int | None = None  # observations received when it sent the error
        self.closed_at_s = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def types(self) -> list[p.MsgType]:
        return [m.type for m in self.received]

    def observations_after_close(self) -> int:
        assert self.closed_after_obs is not None
        return self.types().count(p.MsgType.OBSERVATION) - self.closed_after_obs

    def close(self) -> None:
        time.sleep(0.05)  # frames still on their way
        self.stop.set()
        self.thread.join(5)
        self.socket.close(linger=0)

    def _serve(self) -> None:
        seq = 1  # the WELCOME was the server's seq 1 (section 6)
        while not self.stop.is_set():
            if not self.socket.poll(10):
                continue
            frames = self.socket.recv_multipart()
            try:
                msg = p.decode(frames[-1])
            except p.ProtocolError as exc:
                self.undecodable.append(str(exc))
                continue
            self.received.append(msg)
            now = time.monotonic_ns()
            out: list[bytes] = []
            if msg.type is p.MsgType.HELLO:
                out.append(self.welcome(msg))
            elif msg.type is p.MsgType.OBSERVATION and self.act:
                seq += 1
                action = p.encode_floats(COMMAND)
                out.append(p.encode(p.Message(p.MsgType.ACTION, msg.session_id, seq, msg.seq,
                                              now, msg.t_send_ns, payload=action)))  # fmt: skip
                n_obs = self.types().count(p.MsgType.OBSERVATION)
                if n_obs in self.extras:
                    out.append(self.extras[n_obs])
                if n_obs == self.close_after:
                    seq += 1
                    text = p.encode_error(p.ErrorCode.SESSION_CLOSED, "evicted for a test")
                    out.append(p.encode(p.Message(p.MsgType.ERROR, msg.session_id, seq, 0, now,
                                                  0, payload=text)))  # fmt: skip
                    self.closed_after_obs, self.closed_at_s = n_obs, time.monotonic()
            elif msg.type is p.MsgType.BYE and self.act:
                seq += 1
                out.append(p.encode(p.Message(p.MsgType.BYE, msg.session_id, seq, msg.seq, now,
                                              msg.t_send_ns)))  # fmt: skip
            for frame in out:
                self.socket.send_multipart([frames[0], frame])


def good_welcome(spec: PolicySpec = SPEC25, k: int = 1) -> dict[str, Any]:
    return {
        "protocol_version": p.PROTOCOL_VERSION, "session_id": SID, "server": "fake",
        "task_id": spec.task_id, "robot": spec.robot, "observation": spec.observation,
        "action": spec.action, "schema_sha256": spec.schema_sha256,
        "model_sha256": spec.model_sha256, "control_rate_hz": spec.control_rate_hz,
        "loop_rate_hz": k * spec.control_rate_hz, "max_action_age_ms": 50.0,
        "session_timeout_s": 10.0,
    }  # fmt: skip


def welcome_frame(hello: p.Message, payload: bytes, session_id: int = SID) -> bytes:
    return p.encode(p.Message(p.MsgType.WELCOME, session_id, 1, hello.seq, time.monotonic_ns(),
                              hello.t_send_ns, payload=payload))  # fmt: skip


def crafted(change: Callable[[dict[str, Any]], Any], session_id: int = SID, raw=None, k=1):
    """A ``welcome`` for FakeServer: good_welcome() changed by ``change`` (and ``raw`` on the
    encoded bytes, for what Python's encoder cannot write)."""

    def welcome(hello: p.Message) -> bytes:
        body = good_welcome(k=k)
        change(body)
        payload = p.encode_json(body)
        return welcome_frame(hello, raw(payload) if raw else payload, session_id)

    return welcome


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.__setitem__(key, value)


HOSTILE = {
    "action size": (
        crafted(_set("action", [{**ACT[0], "shape": [5], "low": [-1.0] * 5, "high": [1.0] * 5}])),
        "action spec has 5 values",
    ),
    "observation size": (
        crafted(_set("observation", [{**OBS[0], "shape": [4]}, OBS[1]])),
        "observation spec has 8 values",
    ),
    "session_id 0": (crafted(_set("session_id", 0), session_id=0), "header session_id is 0"),
    "session_id not the header's": (crafted(_set("session_id", SID + 1)), "session_id differs"),
    "max_action_age_ms 1e308": (crafted(_set("max_action_age_ms", 1e308)), "max_action_age_ms"),
    "max_action_age_ms -5": (crafted(_set("max_action_age_ms", -5)), "max_action_age_ms"),
    "max_action_age_ms 0": (crafted(_set("max_action_age_ms", 0)), "max_action_age_ms"),
    "max_action_age_ms twenty": (crafted(_set("max_action_age_ms", "twenty")), "max_action_age"),
    "max_action_age_ms missing": (
        crafted(lambda body: body.pop("max_action_age_ms")),
        "max_action_age_ms",
    ),
    "max_action_age_ms only nested": (  # a strstr() would find it
        crafted(
            lambda body: body.update(limits={"max_action_age_ms": body.pop("max_action_age_ms")})
        ),
        "max_action_age_ms",
    ),
    "max_action_age_ms 1e999": (  # overflows a double: atof() would give inf
        crafted(_set("max_action_age_ms", 12345.5), raw=lambda b: b.replace(b"12345.5", b"1e999")),
        "max_action_age_ms",
    ),
    "max_action_age_ms twice": (  # section 5: no duplicate keys
        crafted(_set("DUP", 1e308), raw=lambda b: b.replace(b'"DUP"', b'"max_action_age_ms"')),
        "max_action_age_ms",
    ),
    "schema_sha256": (crafted(_set("schema_sha256", "cd" * 32)), "schema_sha256"),
    "model not the pinned one": (crafted(_set("model_sha256", "cd" * 32)), "pinned model"),
    "protocol_version 1": (crafted(_set("protocol_version", 1)), "protocol_version"),
    "task_id": (crafted(_set("task_id", "test/Other-v0")), "task_id"),
    "control_rate_hz": (crafted(_set("control_rate_hz", 50.0)), "control_rate_hz"),
    "not JSON": (crafted(lambda body: None, raw=lambda b: b[:-1]), "not a JSON object"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_c_controller_refuses_a_hostile_welcome(c_controller, tmp_path, case):
    welcome, reason = HOSTILE[case]
    fake = FakeServer(welcome)
    try:
        hello = hello_file(tmp_path, SPEC25)  # pins SPEC25's model
        done = run_c(c_controller, fake.endpoint, SPEC25, hello, 50, timeout=20)
    finally:
        fake.close()
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert reason in result_of(done)["welcome_refused"]
    assert len(done.stderr.splitlines()) == 1 and reason in done.stderr
    assert fake.types() == [p.MsgType.HELLO] and not fake.undecodable  # no OBSERVATION, no BYE
    assert fake.received[0].version == 2 and fake.received[0].seq == 1


def test_c_controller_runs_on_a_good_welcome_and_counts_what_it_ignores(c_controller, tmp_path):
    # The control case of the hostile ones: the same fake, a good WELCOME (with a model the
    # unpinned HELLO accepts), then frames mid-run that are counted and ignored, not obeyed.
    def raw(kind: p.MsgType, session: int, payload: bytes = b"") -> bytes:
        return p.encode(p.Message(kind, session, 1000, 0, time.monotonic_ns(), 0, payload=payload))

    flagged = bytearray(raw(p.MsgType.HEARTBEAT, SID))
    flagged[6] = 2  # a reserved flag bit
    version1 = bytearray(raw(p.MsgType.HEARTBEAT, SID))
    version1[4] = 1
    extras = {
        2: raw(p.MsgType.HEARTBEAT, SID),  # counted
        3: bytes(flagged),  # malformed
        4: bytes(version1),  # malformed
        5: raw(p.MsgType.ERROR, SID, p.encode_error(p.ErrorCode.THROTTLED, "slow down")),
        6: raw(p.MsgType.ERROR, SID + 1, p.encode_error(p.ErrorCode.SESSION_CLOSED, "not you")),
        7: raw(p.MsgType.BYE, SID + 1),  # another session's: unexpected
        8: raw(p.MsgType.DESCRIPTION, 0, b"{}"),  # unexpected
    }
    welcome = crafted(_set("model_sha256", "cd" * 32), k=5)
    fake = FakeServer(welcome, act=True, extras=extras)
    try:
        hello = hello_file(tmp_path, SPEC25, k=5, model_sha256=None)
        done = run_c(c_controller, fake.endpoint, SPEC25, hello, 200, k=5, timeout=30)
    finally:
        fake.close()
    assert done.returncode == 0, done.stderr
    result = result_of(done)
    assert result["session_id"] == SID and result["fault"] is False
    assert result["observations_sent"] == 40 and result["fresh"] >= 36
    assert result["heartbeats"] == 1 and result["malformed"] == 2
    assert result["errors_received"] == 2 and result["unexpected"] == 2
    assert result["bye_answered"] is True
    types = fake.types()
    assert types[0] == p.MsgType.HELLO and types[-1] == p.MsgType.BYE
    assert types.count(p.MsgType.OBSERVATION) == 40 and not fake.undecodable
    assert all(m.version == 2 and m.session_id == SID for m in fake.received[1:])
    assert [m.seq for m in fake.received] == list(range(1, 43))  # HELLO 1, 40 obs, BYE 42


def test_c_controller_brakes_at_once_on_session_closed(c_controller, tmp_path):
    # Section 7: SESSION_CLOSED for its session brakes and latches the fault at once, although
    # this fake keeps sending fresh actions (so the hold window is not what stops it).
    k, close_after, period_s = 10, 10, 1 / SPEC25.control_rate_hz
    fake = FakeServer(crafted(lambda body: None, k=k), act=True, close_after=close_after)
    try:
        hello = hello_file(tmp_path, SPEC25, k=k)
        done = run_c(c_controller, fake.endpoint, SPEC25, hello, 2_000, k=k, timeout=30)
        ended_s = time.monotonic()
    finally:
        fake.close()
    assert done.returncode == 3, (done.stdout, done.stderr)
    result = result_of(done)
    assert result["fault"] is True and "SESSION_CLOSED" in result["fault_reason"]
    assert result["errors_received"] == 1 and "evicted for a test" in done.stderr
    # within 2 policy periods: at most 2 more observations (one a period), and far fewer
    # loop cycles than the 2,000 asked for
    assert fake.observations_after_close() <= 2
    assert result["observations_sent"] <= close_after + 2
    assert result["loop_cycles"] <= (close_after + 2) * k
    assert p.MsgType.BYE not in fake.types()  # the session is gone: nothing more is sent on it
    assert ended_s - fake.closed_at_s < 2.0 + 2 * period_s  # generous: process exit included
