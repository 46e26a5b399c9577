"""CURVE + ZAP: allowed clients get through, others never reach the application; fail closed."""

from __future__ import annotations

import stat
import threading
import time

import numpy as np
import pytest
import zmq
from edge_helpers import LinearPolicy, hello

from factoryfloor.cli import main
from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.auth import (
    SecurityError,
    ServerSecurity,
    check_bind,
    is_loopback,
    keygen,
    secure_client,
)
from factoryfloor.edge_runtime.client import EdgeClient, HandshakeError
from factoryfloor.edge_runtime.serve import EXIT_AUTH_DIED, make_server
from factoryfloor.edge_runtime.server import ServerConfig


@pytest.fixture
def keys(tmp_path):
    keygen(tmp_path / "keys", ["robot1"])
    keygen(tmp_path / "other", ["intruder"])
    return tmp_path


def client_with_keys(endpoint: str, keys_dir, name: str) -> EdgeClient:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    secure_client(socket, keys_dir, name)
    return EdgeClient(endpoint, socket)


def test_keygen_writes_secret_keys_readable_by_the_owner_only(keys):
    root = keys / "keys"
    for path in (root / "server.key_secret", root / "clients" / "robot1.key_secret"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (root / "authorized_clients" / "robot1.key").is_file()
    (root / "clients" / "robot1.key_secret").chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        secure_client(zmq.Context.instance().socket(zmq.DEALER), root, "robot1")


def test_allowed_client_is_served_and_an_unknown_key_never_reaches_the_server(keys):
    config = ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10)
    server, security = make_server(LinearPolicy(), config, keys / "keys")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        good = client_with_keys(server.endpoint, keys / "keys", "robot1")
        good.handshake(hello())
        good.send_observation(np.ones(6, np.float32))
        assert good.receive_action(2.0) is not None
        received = server.metrics.counters["frames_received"]
        # a client whose key is not allow-listed (it knows the server's public key)
        intruder_socket = zmq.Context.instance().socket(zmq.DEALER)
        intruder_socket.setsockopt(zmq.LINGER, 0)
        secure_client(intruder_socket, keys / "other", "intruder")
        intruder_socket.curve_serverkey = security.public
        intruder = EdgeClient(server.endpoint, intruder_socket)
        plain = EdgeClient(server.endpoint)  # no CURVE at all
        for c, reason in (
            (intruder, "refused this controller's CURVE key .*keygen"),
            (plain, "another security mechanism.*--keys DIR --client-name"),
        ):
            with pytest.raises(HandshakeError, match=reason):
                c.handshake(hello(), timeout_s=0.5)
            c.close()
        assert server.metrics.counters["frames_received"] == received  # never reached it
        good.close()
    finally:
        server.stop_event.set()
        thread.join(5)
        server.close()
        security.stop()


def test_authenticator_death_closes_the_listener(keys, monkeypatch):
    from factoryfloor.edge_runtime import serve as serve_module

    captured = {}
    real = serve_module.make_server

    def spy(*args):
        captured["server"], captured["security"] = server, security = real(*args)
        return server, security

    monkeypatch.setattr(serve_module, "make_server", spy)
    result = {}
    options = serve_module.ServeOptions(keys_dir=keys / "keys", report_every_s=60)
    config = ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10)
    thread = threading.Thread(
        target=lambda: result.setdefault(
            "code", serve_module.serve(LinearPolicy(), config, options)
        )
    )
    thread.start()
    while "security" not in captured:
        time.sleep(0.01)
    endpoint = captured["server"].endpoint
    captured["security"].stop()  # the ZAP handler dies while the server runs
    thread.join(5)
    assert result["code"] == EXIT_AUTH_DIED
    assert captured["server"].socket.closed
    late = client_with_keys(endpoint, keys / "keys", "robot1")
    with pytest.raises(HandshakeError):
        late.handshake(hello(), timeout_s=0.5)
    late.close()


def test_stopping_the_authenticator_from_two_threads_at_once_is_safe(keys):
    # pyzmq's ThreadAuthenticator.stop closes its pipe twice when two threads race into it
    # (an operator's stop against the server's own shutdown); ServerSecurity.stop serialises.
    # One context per round: a context's ZAP endpoint is bound once, and its close is async.
    errors: list[BaseException] = []

    def stop(security: ServerSecurity, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            security.stop()
        except BaseException as exc:  # any error fails the test below
            errors.append(exc)

    for _ in range(20):
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            security, barrier = ServerSecurity(context, keys / "keys"), threading.Barrier(2)
            threads = [threading.Thread(target=stop, args=(security, barrier)) for _ in "ab"]
            for t in threads:
                t.start()
            for t in threads:
                t.join(5)
            assert not security.authenticator.is_alive()
        finally:
            context.destroy(linger=0)  # never left to the GC: a blocked term() hangs a worker
    assert errors == []


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True), ("tcp://localhost:5555", True), ("ipc:///tmp/x", True),
        ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False), ("tcp://192.168.1.10:5555", False),
        ("tcp://127.0.0.1.evil.com:5555", False),
    ],
)  # fmt: skip
def test_only_loopback_may_bind_without_keys(endpoint, loopback):
    assert is_loopback(endpoint) is loopback
    if loopback:
        check_bind(endpoint, None)
    else:
        with pytest.raises(SecurityError, match="factoryfloor edge keygen"):
            check_bind(endpoint, None)


def test_cli_refuses_an_insecure_bind(capsys):
    code = main(["edge", "serve", "--policy", "expert", "--task", "factoryfloor/Reach-v0",
                 "--bind", "tcp://0.0.0.0:5599"])  # fmt: skip
    assert code == 2
    assert "factoryfloor edge keygen" in capsys.readouterr().err


def test_one_client_key_holds_at_most_its_sessions_and_the_others_are_refused(keys):
    config = ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10, max_sessions_per_key=2)
    server, security = make_server(LinearPolicy(), config, keys / "keys")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clients = []
    try:
        for _ in range(2):  # two connections with the same key: two sessions
            clients.append(client_with_keys(server.endpoint, keys / "keys", "robot1"))
            clients[-1].handshake(hello())
        third = client_with_keys(server.endpoint, keys / "keys", "robot1")
        clients.append(third)
        with pytest.raises(HandshakeError, match="client key holds 2 sessions") as info:
            third.handshake(hello())
        assert info.value.code == p.ErrorCode.TOO_MANY_SESSIONS
        (key,) = {s.peer.key for s in server.sessions.values()}  # the ZAP User-Id: its key
        assert isinstance(key, str) and len(key) == 40  # Z85 text of a 32-byte CURVE key
        clients[0].send_bye()  # a slot of this key frees
        time.sleep(0.1)
        third.handshake(hello())
        assert len(server.sessions) == 2
    finally:
        for c in clients:
            c.close()
        server.stop_event.set()
        thread.join(5)
        server.close()
        security.stop()
