"""Policy server and client over loopback TCP: handshake, wire faults, batching, newest-only."""

from __future__ import annotations

import time

import numpy as np
import pytest
from edge_helpers import ACT, OBS, SPEC, LinearPolicy, RawPeer, hello, running_server

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.client import EdgeClient, HandshakeError


def connected(server) -> EdgeClient:
    client = EdgeClient(server.endpoint)
    client.handshake(hello())
    return client


def test_handshake_then_actions_answer_observations():
    policy = LinearPolicy()
    with running_server(policy) as server:
        client = EdgeClient(server.endpoint)
        welcome = client.handshake(hello())
        assert welcome["session_id"] == client.session_id != 0
        assert welcome["schema_sha256"] == p.schema_sha256(OBS, ACT)
        assert welcome["model_sha256"] == SPEC.model_sha256
        for k in range(5):
            obs = np.arange(6, dtype=np.float32) + k
            client.send_observation(obs, episode_start=k == 0)
            action = client.receive_action(1.0)
            assert np.allclose(action, obs[:2] / 10)
        assert policy.resets == [client.session_id]  # EPISODE_START reached the policy
        assert client.metrics.counters["actions_accepted"] == 5
        client.close()


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"protocol_version": 1}, p.ErrorCode.BAD_VERSION),
        ({"task_id": "other/Task-v0"}, p.ErrorCode.TASK_MISMATCH),
        ({"robot": "xarm6"}, p.ErrorCode.TASK_MISMATCH),
        ({"control_rate_hz": 50.0}, p.ErrorCode.TASK_MISMATCH),
        ({"observation": [{"name": "observation", "shape": [7]}]}, p.ErrorCode.SCHEMA_MISMATCH),
        ({"schema_sha256": "0" * 64}, p.ErrorCode.SCHEMA_MISMATCH),
        ({"model_sha256": "cd" * 32}, p.ErrorCode.MODEL_MISMATCH),
        ({"observation": "garbage"}, p.ErrorCode.BAD_PAYLOAD),
    ],
)
def test_mismatched_handshakes_are_refused_with_their_code(overrides, code):
    with running_server(LinearPolicy()) as server:
        client = EdgeClient(server.endpoint)
        with pytest.raises(HandshakeError) as info:
            client.handshake(hello(**overrides))
        assert info.value.code == code
        assert server.sessions == {}
        client.close()


def test_no_motion_message_is_accepted_before_the_handshake():
    policy = LinearPolicy()
    with running_server(policy) as server:
        peer = RawPeer(server.endpoint)
        obs = p.Message(p.MsgType.OBSERVATION, 12345, 1, 0, 1, 0, payload=p.encode_floats([0] * 6))
        peer.send(p.encode(obs))
        answer = peer.recv()
        assert answer.type is p.MsgType.ERROR
        assert p.decode_error(answer.payload)[0] == p.ErrorCode.NO_SESSION
        assert policy.batches == []
        peer.close()


def test_malformed_frames_get_counted_rate_limited_errors_and_the_server_goes_on():
    with running_server(LinearPolicy(), error_replies_per_s=5.0) as server:
        peer = RawPeer(server.endpoint)
        garbage = [b"", b"x" * 47, b"FFEQ" + bytes(44), bytes(48), [b"two", b"frames"]]
        for _ in range(10):
            for frame in garbage:
                peer.send(frame)
        errors = 0
        while (msg := peer.recv(0.3)) is not None:
            assert msg.type is p.MsgType.ERROR
            errors += 1
        assert 1 <= errors <= 6  # 5 per second, with a second of refill at most
        rejected = sum(v for k, v in server.metrics.counters.items() if k.startswith("rejected"))
        assert rejected == 50
        client = connected(server)  # still serving
        client.send_observation(np.ones(6, np.float32))
        assert client.receive_action(1.0) is not None
        client.close()
        peer.close()


def test_stale_duplicated_and_replayed_observations_are_dropped_by_the_server():
    policy = LinearPolicy()
    with running_server(policy) as server:
        client = connected(server)
        sid = client.session_id
        peer = client.socket

        def obs_frame(seq: int) -> bytes:
            payload = p.encode_floats(np.full(6, seq, np.float32))
            return p.encode(
                p.Message(
                    p.MsgType.OBSERVATION, sid, seq, 0, time.monotonic_ns(), 0, payload=payload
                )
            )

        peer.send(obs_frame(10))
        assert client.receive_action(1.0) is None  # seq 10 > client's counter: its ack is refused
        for seq in (10, 9, 3):  # duplicate, reordered, replayed
            peer.send(obs_frame(seq))
        time.sleep(0.2)
        assert server.metrics.counters["observations_stale"] == 3
        assert sum(len(b) for b in policy.batches) == 1
        client.close()


def test_only_the_newest_observation_of_a_session_is_answered_in_one_batch():
    policy = LinearPolicy(delay_s=0.05)  # a slow policy lets observations pile up
    with running_server(policy, max_action_age_ms=2_000.0) as server:
        clients = [connected(server) for _ in range(3)]
        clients[0].send_observation(np.zeros(6, np.float32))  # occupies the server for 50 ms
        time.sleep(0.01)
        for c in clients:
            for k in range(1, 4):
                c.send_observation(np.full(6, k, np.float32))
        time.sleep(0.3)
        latest = [c.receive_action(1.0) for c in clients]
        for action in latest:
            assert np.allclose(action, 0.3)  # the answer to the newest observation (value 3)
        assert sorted(len(b) for b in policy.batches)[-1] == 3  # three robots, one call
        assert server.metrics.counters["observations_superseded"] >= 6
        for c in clients:
            c.close()


def test_client_drops_actions_of_other_sessions_stale_replayed_and_too_old(monkeypatch):
    """Frames of the session's ACTION stream take the ``StreamCodec`` path (no ``decode``),
    the rest the general one; both refuse and count alike."""
    with running_server(LinearPolicy(), max_action_age_ms=50.0) as server:
        client = connected(server)
        seq = client.send_observation(np.ones(6, np.float32))
        fresh = client.receive_action(1.0)
        assert fresh is not None
        now = time.monotonic_ns()  # hand-made actions, as a confused or malicious server sends
        decoded: list[bytes] = []
        decode = p.decode
        monkeypatch.setattr(p, "decode", lambda frame: decoded.append(frame) or decode(frame))

        def action(session: int, ack: int, echo_ns: int, values=(0.1, 0.2)) -> bytes:
            payload = p.encode_floats(values)
            return p.encode(p.Message(p.MsgType.ACTION, session, 99, ack, now, echo_ns, 0, payload))

        for frame in (
            action(client.session_id + 1, seq, now),  # another session
            action(client.session_id, seq, now),  # replay of the answered observation
            action(client.session_id, seq + 5, now),  # answers an observation never sent
            action(client.session_id, seq, now - 10**9),  # stale
        ):
            assert client._action_of(frame) is None
        client.send_observation(np.ones(6, np.float32))
        old = action(client.session_id, seq + 1, now - 200_000_000)  # 200 ms old
        assert client._action_of(old) is None
        wrong_size = action(client.session_id, seq + 1, time.monotonic_ns(), (1.0,))
        assert client._action_of(wrong_size) is None
        counters = client.metrics.counters
        assert counters["actions_other_session"] == 1
        assert counters["actions_stale_or_replayed"] == 3
        assert counters["actions_too_old"] == 1 and counters["actions_wrong_size"] == 1
        assert decoded == [action(client.session_id + 1, seq, now), wrong_size]  # the rest: codec
        good = client._action_of(action(client.session_id, seq + 1, time.monotonic_ns()))
        assert good is not None and good.dtype == np.float32 and good.flags.writeable
        assert np.array_equal(good, np.float32([0.1, 0.2])) and len(decoded) == 2
        client.close()


def test_bye_closes_the_session_and_a_new_hello_replaces_the_old_one():
    policy = LinearPolicy()
    with running_server(policy) as server:
        client = connected(server)
        first = client.session_id
        client.handshake(hello())
        assert client.session_id != first and list(server.sessions) == [client.session_id]
        client.send_bye()
        time.sleep(0.1)
        assert server.sessions == {}
        client.close()


def test_non_finite_observations_get_no_action_and_a_failing_policy_an_internal_error():
    policy = LinearPolicy()
    with running_server(policy) as server:
        client = connected(server)
        client.send_observation(np.full(6, np.nan, np.float32))
        assert client.receive_action(0.3) is None
        assert server.metrics.counters["observations_nonfinite"] == 1

        def broken(sessions, obs):
            raise RuntimeError("weights corrupted")

        policy.act_batch = broken
        client.send_observation(np.ones(6, np.float32))
        assert client.receive_action(0.3) is None
        assert client.metrics.counters[f"server_error_{int(p.ErrorCode.INTERNAL)}"] == 1
        assert server.metrics.counters["rejected_internal"] == 1
        del policy.act_batch  # healthy again: the server kept serving
        client.send_observation(np.ones(6, np.float32))
        assert client.receive_action(1.0) is not None
        client.close()


def test_a_lone_observation_takes_the_short_path_and_gets_what_the_general_path_gives():
    """``_answer_alone`` (one observation, nothing else waiting) and the drain-and-batch path
    answer alike: same action, acknowledged sequence, echoed time, reset and counters."""
    from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig

    answers, counters = {}, {}
    for short in (True, False):
        policy = LinearPolicy()
        server = PolicyServer(policy, ServerConfig(bind="tcp://127.0.0.1:0"))  # type: ignore[arg-type]
        if not short:
            server._answer_alone = lambda frames: None  # every frame takes the general path
        general_calls: list[int] = []
        general = server._answer
        server._answer = lambda inbox, c=general_calls, g=general: c.append(1) or g(inbox)
        peer = RawPeer(server.endpoint)
        peer.send(p.encode(p.Message(p.MsgType.HELLO, seq=1, payload=p.encode_json(hello()))))
        server.run_once(1000)
        sid = peer.recv().session_id
        obs = p.encode_floats(np.arange(6, dtype=np.float32))
        msg = p.Message(p.MsgType.OBSERVATION, sid, 2, 0, 123, 0, p.Flags.EPISODE_START, obs)
        peer.send(p.encode(msg))
        time.sleep(0.05)  # arrived whole before the server looks
        assert server.run_once(1000) == 1
        reply = peer.recv()
        answers[short] = (reply.type, reply.ack_seq, reply.t_echo_ns, reply.payload)
        counters[short] = {
            k: server.metrics.counters[k] for k in ("frames_received", "batches", "actions_sent")
        }
        assert policy.resets == [sid] and policy.batches == [[sid]]
        assert len(general_calls) == (0 if short else 1)
        peer.close()
        server.close()
    assert answers[True] == answers[False]
    assert answers[True][:3] == (p.MsgType.ACTION, 2, 123)
    assert np.allclose(p.decode_floats(answers[True][3], 2), [0.0, 0.1])
    assert counters[True] == counters[False] == {
        "frames_received": 2, "batches": 1, "actions_sent": 1,
    }  # fmt: skip
