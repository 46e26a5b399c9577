"""The server's inference on preallocated rows: the bundle's own answers, in one call per batch,
with the inputs and output bound once per batch size (no per-call allocation of either)."""

from __future__ import annotations

import time
from importlib.resources import files

import numpy as np
import pytest
from edge_helpers import RawPeer

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.edge_runtime.inference import RowInference
from factoryfloor.edge_runtime.served import ActBatchRows, BundleServedPolicy, rows_for
from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig

BUNDLE = files("factoryfloor.policies") / "pretrained" / "pick_place_panda.ffpolicy"


@pytest.mark.parametrize("backend", ["onnxruntime", "numpy"])
def test_rows_give_the_bundles_actions_at_every_batch_size(backend):
    bundle = load_bundle(BUNDLE, backend=backend)
    rows = RowInference(bundle, 64)
    rng = np.random.default_rng(0)
    for batch in (1, 2, 7, 64, 3, 1):  # sizes again after others: the bindings are reused
        rows.obs[:batch] = rng.normal(0, 1, (batch, bundle.obs_size))
        actions = rows.run(list(range(batch)))
        assert actions.shape == (batch, 4)
        assert np.shares_memory(actions, rows.actions)  # written in place, not allocated
        np.testing.assert_array_equal(actions, bundle.act_flat(rows.obs[:batch].copy()))
    with pytest.raises(ValueError, match=r"outside 1\.\.64"):
        rows.run(list(range(65)))


def test_a_bundle_gets_row_inference_and_any_other_policy_act_batch_rows():
    from edge_helpers import LinearPolicy

    assert isinstance(rows_for(BundleServedPolicy(load_bundle(BUNDLE)), 4), RowInference)
    other = rows_for(LinearPolicy(), 4)
    assert isinstance(other, ActBatchRows)
    other.obs[:2] = 5.0
    np.testing.assert_allclose(other.run([1, 2]), 0.5)


def test_sixteen_sessions_waiting_together_are_answered_in_one_batch():
    policy = BundleServedPolicy(load_bundle(BUNDLE))
    # a drain long enough for all 16 (by default it stops after 0.5 ms and answers those read)
    server = PolicyServer(policy, ServerConfig(bind="tcp://127.0.0.1:0", drain_budget_ms=100))
    calls: list[int] = []
    run = server.rows.run
    server.rows.run = lambda sessions: calls.append(len(sessions)) or run(sessions)
    spec = policy.spec
    peers, sids = [RawPeer(server.endpoint) for _ in range(16)], []
    for peer in peers:
        payload = p.encode_json(spec.hello("robot", 20.0, None))
        peer.send(p.encode(p.Message(p.MsgType.HELLO, seq=1, payload=payload)))
        welcome = None
        for _ in range(100):
            server.run_once(20)
            if (welcome := peer.recv(0.01)) is not None:
                break
        assert welcome is not None and welcome.type is p.MsgType.WELCOME
        sids.append(welcome.session_id)
    rng = np.random.default_rng(1)
    obs = rng.normal(0, 1, (16, spec.obs_size)).astype(np.float32)
    for i, (peer, sid) in enumerate(zip(peers, sids, strict=True)):
        peer.send(p.encode(p.Message(p.MsgType.OBSERVATION, sid, 2, 0, 10 + i, 0,
                                     payload=obs[i].tobytes())))  # fmt: skip
    time.sleep(0.2)  # all of them arrived before the server looks
    assert server.run_once(1000) == 16
    assert calls == [16]
    want = load_bundle(BUNDLE).act_flat(obs)
    for i, peer in enumerate(peers):
        reply = peer.recv()
        assert (reply.type, reply.ack_seq, reply.t_echo_ns) == (p.MsgType.ACTION, 2, 10 + i)
        np.testing.assert_array_equal(np.frombuffer(reply.payload, "<f4"), want[i])
        peer.close()
    server.close()
