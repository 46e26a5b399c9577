"""uint8 image fields on the wire: layout, hash, server batching, hostile frames, the client."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from edge_helpers import ACT, OBS, LinearPolicy, RawPeer, hello, running_server

from factoryfloor.edge_runtime import conformance as kit
from factoryfloor.edge_runtime import fastpath
from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.client import EdgeClient, HandshakeError
from factoryfloor.edge_runtime.payload import Layout
from factoryfloor.edge_runtime.session_check import check_hello
from factoryfloor.edge_runtime.spec import PolicySpec

IMG_OBS = [
    {"name": "state", "shape": [6], "dtype": "float32", "units": "m"},
    {"name": "image", "shape": [3, 64, 64], "dtype": "uint8", "units": "RGB"},
]
ODD_OBS = [  # an image of an odd byte count between two float fields: padding in the middle
    {"name": "a", "shape": [2], "dtype": "float32"},
    {"name": "img", "shape": [3, 5, 5], "dtype": "uint8"},
    {"name": "b", "shape": [3]},
]
IMG_SPEC = PolicySpec(
    task_id="test/Task-v0", robot="panda", control_rate_hz=100.0, observation=IMG_OBS,
    action=ACT, model_sha256="ab" * 32,
)  # fmt: skip


class ImagePolicy:
    """action = state[:2] / 10; records each batch's sessions, image checksums and states."""

    spec = IMG_SPEC

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.checksums: list[str] = []
        self.states: list[np.ndarray] = []
        self.dtypes: list[tuple[np.dtype, np.dtype]] = []
        self.delay_s = delay_s

    def act_batch(self, sessions: list[int], obs: dict[str, np.ndarray]) -> np.ndarray:
        self.batches.append(list(sessions))
        self.dtypes.append((obs["state"].dtype, obs["image"].dtype))
        assert obs["image"].shape == (len(sessions), 3, 64, 64)
        self.checksums += [hashlib.sha256(im.tobytes()).hexdigest() for im in obs["image"]]
        self.states += [s.copy() for s in obs["state"]]
        if self.delay_s:
            time.sleep(self.delay_s)
        return obs["state"][:, :2] / 10.0

    def reset(self, session: int) -> None:
        pass


def img_hello(**overrides: object) -> dict:
    hello = IMG_SPEC.hello("test", 20.0, None)
    hello.update(overrides)
    return hello


def wait_until(predicate, timeout_s: float = 3.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "state": rng.normal(0, 1, 6).astype(np.float32),
        "image": rng.integers(0, 256, (3, 64, 64), dtype=np.uint8),
    }


def test_layout_pads_uint8_fields_to_4_bytes_and_keeps_float_payloads_unchanged():
    layout = Layout(ODD_OBS)
    assert [s.offset for s in layout.slots] == [0, 8, 84] and layout.size == 96
    assert layout.mixed and layout.float_spans == ((0, 8), (84, 96))
    obs = {"a": [1.0, 2.0], "img": np.arange(75, dtype=np.uint8), "b": [3.0, 4.0, 5.0]}
    payload = layout.pack(obs)
    assert payload[8:83] == bytes(range(75)) and payload[83] == 0  # one zero pad byte
    assert payload[84:] == p.encode_floats([3.0, 4.0, 5.0])
    back = layout.unpack(payload)
    assert back["img"].dtype == np.uint8 and back["img"].shape == (3, 5, 5)
    assert np.array_equal(back["b"], [3.0, 4.0, 5.0])
    rows = np.frombuffer(payload * 2, np.uint8).reshape(2, -1).copy()
    views = layout.split(rows)
    assert views["img"].shape == (2, 3, 5, 5) and np.shares_memory(views["img"], rows)
    floats = Layout(OBS)
    assert not floats.mixed and floats.size == 24
    assert floats.pack({"observation": np.arange(6.0)}) == p.encode_floats(np.arange(6.0))
    with pytest.raises(ValueError, match="uint8 field"):
        layout.pack({**obs, "img": np.arange(75.0)})  # no silent float -> byte conversion
    with pytest.raises(p.ProtocolError):
        layout.unpack(payload[:-1])
    with pytest.raises(p.ProtocolError):
        Layout([{"name": "x", "shape": [2], "dtype": "float64"}])
    with pytest.raises(p.ProtocolError):
        Layout([{"name": "x", "shape": [3, 200, 200], "dtype": "uint8"}])  # over 65,536 bytes


def test_schema_hash_differs_by_dtype_and_float32_hashes_are_unchanged():
    as_float = [{**f, "dtype": "float32"} for f in IMG_OBS]
    assert p.schema_sha256(IMG_OBS, ACT) != p.schema_sha256(as_float, ACT)
    untyped = [{k: v for k, v in f.items() if k != "dtype"} for f in as_float]
    assert p.schema_sha256(as_float, ACT) == p.schema_sha256(untyped, ACT)
    assert '"dtype":"uint8"' in p.schema_canonical(IMG_OBS, ACT)
    assert "dtype" not in p.schema_canonical(as_float, ACT)


def test_a_peer_ignoring_dtype_is_refused_with_schema_mismatch():
    float_only = [{k: v for k, v in f.items() if k != "dtype"} for f in IMG_OBS]
    hello = img_hello(observation=float_only, schema_sha256=p.schema_sha256(float_only, ACT))
    with pytest.raises(p.ProtocolError) as info:
        check_hello(hello, IMG_SPEC)
    assert info.value.code == p.ErrorCode.SCHEMA_MISMATCH
    bad = [{**IMG_OBS[0]}, {**IMG_OBS[1], "dtype": "int16"}]
    with pytest.raises(p.ProtocolError) as info:
        check_hello(img_hello(observation=bad, schema_sha256=p.schema_sha256(bad, ACT)), IMG_SPEC)
    assert info.value.code == p.ErrorCode.BAD_PAYLOAD  # an unknown dtype: the schema refuses
    uint8_action = [{**ACT[0], "dtype": "uint8"}]
    hello = img_hello(action=uint8_action, schema_sha256=p.schema_sha256(IMG_OBS, uint8_action))
    with pytest.raises(p.ProtocolError) as info:
        check_hello(hello, IMG_SPEC)
    assert info.value.code == p.ErrorCode.BAD_PAYLOAD  # actions stay float32


def test_a_float32_server_refuses_a_uint8_hello():
    hello = img_hello(task_id="test/Task-v0")
    with running_server(LinearPolicy()) as server:
        client = EdgeClient(server.endpoint)
        with pytest.raises(HandshakeError) as info:
            client.handshake(hello)
        assert info.value.code == p.ErrorCode.SCHEMA_MISMATCH
        client.close()


def test_round_trip_carries_the_exact_image_bytes_and_floats():
    rng = np.random.default_rng(0)
    policy = ImagePolicy()
    with running_server(policy) as server:
        client = EdgeClient(server.endpoint)
        welcome = client.handshake(img_hello())
        assert welcome["observation"][1]["dtype"] == "uint8"
        sent = []
        for k in range(4):
            obs = sample(rng)
            sent.append(obs)
            if k % 2:  # a mapping, or the packed buffer
                client.send_observation(obs, episode_start=k == 0)
            else:
                client.send_observation(IMG_SPEC.obs_layout.pack(obs), episode_start=k == 0)
            action = client.receive_action(2.0)
            assert action is not None and np.allclose(action, obs["state"][:2] / 10)
        assert policy.checksums == [hashlib.sha256(o["image"].tobytes()).hexdigest() for o in sent]
        for got, obs in zip(policy.states, sent, strict=True):
            assert np.array_equal(got, obs["state"])  # bit for bit
        assert set(policy.dtypes) == {(np.dtype(np.float32), np.dtype(np.uint8))}
        client.close()


def test_sessions_with_image_specs_are_batched():
    rng = np.random.default_rng(1)
    policy = ImagePolicy(delay_s=0.05)  # a slow policy lets observations pile up
    with running_server(policy, max_action_age_ms=2_000.0) as server:
        clients = [EdgeClient(server.endpoint) for _ in range(3)]
        for c in clients:
            c.handshake(img_hello())
        clients[0].send_observation(sample(rng))  # occupies the server for 50 ms
        time.sleep(0.01)
        sent = {}
        for c in clients:
            obs = sample(rng)
            sent[c.session_id] = obs
            c.send_observation(obs)
        assert wait_until(lambda: max(len(b) for b in policy.batches) == 3)
        for c in clients:
            action = c.receive_action(2.0)
            assert np.allclose(action, sent[c.session_id]["state"][:2] / 10)
        batch = next(b for b in policy.batches if len(b) == 3)
        start = sum(len(b) for b in policy.batches[: policy.batches.index(batch)])
        expect = [hashlib.sha256(sent[s]["image"].tobytes()).hexdigest() for s in batch]
        assert policy.checksums[start : start + 3] == expect
        for c in clients:
            c.close()


def test_hostile_image_frames_are_refused_and_counted():
    policy = ImagePolicy()
    size = IMG_SPEC.obs_bytes
    assert size == 24 + 3 * 64 * 64
    with running_server(policy) as server:
        client = EdgeClient(server.endpoint)
        client.handshake(img_hello())
        sid, seq = client.session_id, 100

        def frame(payload: bytes) -> bytes:
            nonlocal seq
            seq += 1
            message = p.Message(p.MsgType.OBSERVATION, sid, seq, 0, time.monotonic_ns(), 0)
            header = p.HEADER.pack(
                p.MAGIC, 2, 3, 0, len(payload), sid, message.seq, 0, message.t_send_ns, 0
            )
            return header + payload

        good = IMG_SPEC.obs_layout.pack(sample(np.random.default_rng(2)))
        hostile = [
            good[:-1],  # one byte short (and not a multiple of 4)
            good + b"\x00",  # one byte long
            good[:-4],  # one word short
            good + bytes(4),  # one word long
            bytes(4 * IMG_SPEC.obs_size),  # a float32-sized payload (12,294 values)
        ]
        for payload in hostile:
            client.socket.send(frame(payload))
        counters = server.metrics.counters
        assert wait_until(lambda: counters.get("rejected_bad_length", 0) == len(hostile))
        nan = bytearray(good)
        nan[0:4] = np.float32(np.nan).tobytes()
        client.socket.send(frame(bytes(nan)))
        assert wait_until(lambda: counters.get("observations_nonfinite", 0) == 1)
        ff = bytearray(good)  # image bytes that would read as NaN floats are just bytes
        ff[24:28] = b"\xff\xff\xff\x7f"
        client.socket.send(frame(bytes(ff)))
        assert wait_until(lambda: len(policy.checksums) == 1)
        assert policy.batches and counters["observations_nonfinite"] == 1
        client.close()


def test_a_raw_peer_cannot_send_a_float32_sized_frame_without_a_session():
    with running_server(ImagePolicy()) as server:
        peer = RawPeer(server.endpoint)
        payload = bytes(IMG_SPEC.obs_bytes)
        header = p.HEADER.pack(p.MAGIC, 2, 3, 0, len(payload), 7, 1, 0, 0, 0)
        peer.send(header + payload)
        answer = peer.recv()
        assert answer is not None and p.decode_error(answer.payload)[0] == p.ErrorCode.NO_SESSION
        peer.close()


def test_mixed_gate_copies_bytes_and_checks_only_float_spans():
    spec = IMG_SPEC
    codec = p.StreamCodec(p.MsgType.OBSERVATION, 9, spec.obs_bytes // 4)
    rows = np.zeros((2, spec.obs_bytes), np.uint8)
    gate = fastpath.gate(codec, fastpath.SEQ, rows, spec.obs_layout.float_spans)
    payload = bytearray(spec.obs_layout.pack(sample(np.random.default_rng(3))))
    payload[24:28] = b"\xff\xff\xff\x7f"
    frame = codec.encode(5, 0, 1, 0, bytes(payload), 1)
    assert gate.check(frame, 4, fastpath.U64_MAX, 1) == 1  # flags EPISODE_START
    assert rows[1].tobytes() == bytes(payload) and gate.tail[0] == 5
    assert gate.check(frame, 5, fastpath.U64_MAX, 0) == fastpath.STALE
    assert gate.check(frame[:-4], 4, fastpath.U64_MAX, 0) == fastpath.NOT_STREAM
    payload[0:4] = np.float32(np.inf).tobytes()
    frame = codec.encode(6, 0, 1, 0, bytes(payload))
    assert gate.check(frame, 5, fastpath.U64_MAX, 0) == fastpath.NONFINITE


def test_every_server_check_passes_against_a_server_of_an_image_spec():
    with running_server(ImagePolicy()) as server:
        results = kit.run_checks(kit.SERVER_CHECKS, kit.ServerTarget(server.endpoint))
    assert [r.name for r in results] == list(kit.SERVER_CHECKS)
    assert not [f"{r.name}: {r.detail}" for r in results if r.status == "failed"]


def test_the_client_packs_a_mapping_for_a_float32_spec_too_and_needs_a_session_for_one():
    with running_server(LinearPolicy()) as server:
        client = EdgeClient(server.endpoint)
        with pytest.raises(ValueError, match="no session"):
            client.send_observation({"observation": np.zeros(6, np.float32)})
        client.handshake(hello())
        obs = np.arange(6, dtype=np.float32)
        client.send_observation({"observation": obs})
        assert np.allclose(client.receive_action(2.0), obs[:2] / 10)
        client.close()
