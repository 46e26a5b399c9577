"""Security of the edge link: CURVE keys, a ZAP allow-list of clients, failing closed.

Key folder layout (``factoryfloor edge keygen DIR``)::

    DIR/server.key                     the server's public key (give it to controllers)
    DIR/server.key_secret              the server's secret key (0600; stays on the server)
    DIR/authorized_clients/NAME.key    public keys of the controllers allowed to connect
    DIR/clients/NAME.key_secret        a controller's key pair (0600; copy it to that controller)

CURVE alone accepts any client that knows the server's public key, so the server also runs
pyzmq's ZAP authenticator with ``authorized_clients/`` as the allow-list. If that authenticator
stops, the server closes its listener (``ServerSecurity.check``) rather than serve unchecked.
Binding a non-loopback address without keys is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from factoryfloor.edge_runtime.protocol import EdgeError

SERVER = "server"
AUTHORIZED = "authorized_clients"
CLIENTS = "clients"
_LOOPBACK = re.compile(r"^(ipc|inproc)://|^tcp://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:|$)")


class SecurityError(EdgeError):
    """Keys missing or unsafe, an insecure bind, or the authenticator gone."""


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` stays on this machine (loopback TCP, ipc or inproc)."""
    return bool(_LOOPBACK.match(endpoint))


def check_bind(endpoint: str, keys_dir: Path | None) -> None:
    """Refuse to bind a non-loopback endpoint without CURVE keys.

    Raises:
        SecurityError: With how to enable keys.
    """
    if keys_dir is None and not is_loopback(endpoint):
        raise SecurityError(
            f"refusing to bind {endpoint} without encryption: anyone on the network could "
            "command the robot. Create keys with `factoryfloor edge keygen KEYS`, pass "
            "`--keys KEYS` to the server, and give each controller KEYS/server.key and its "
            "own KEYS/clients/NAME.key_secret; or bind tcp://127.0.0.1 for a local test"
        )


def keygen(keys_dir: Path | str, clients: list[str] | None = None) -> dict[str, str]:
    """Create the server's key pair (if missing) and one key pair per client name.

    Returns:
        Paths written, by role.
    """
    root = Path(keys_dir)
    for sub in (root, root / AUTHORIZED, root / CLIENTS):
        sub.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if not (root / f"{SERVER}.key_secret").exists():
        public, secret = zmq.auth.create_certificates(root, SERVER)
        os.chmod(secret, 0o600)
        written["server"] = secret
    for name in clients or ["controller"]:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SecurityError(f"client name {name!r}: use letters, digits, '_', '.', '-'")
        public, secret = zmq.auth.create_certificates(root / CLIENTS, name)
        os.chmod(secret, 0o600)
        shutil.copyfile(public, root / AUTHORIZED / f"{name}.key")
        written[name] = secret
    return written


def _load_secret(path: Path) -> tuple[bytes, bytes]:
    if not path.is_file():
        raise SecurityError(f"no secret key at {path}; create keys with `factoryfloor edge keygen`")
    if path.stat().st_mode & 0o077:
        raise SecurityError(f"{path} is readable by others: chmod 600 {path}")
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise SecurityError(f"{path} holds no secret key")
    return public, secret


class ServerSecurity:
    """CURVE server keys plus a running ZAP authenticator with the client allow-list.

    Args:
        context: The ZeroMQ context of the server socket.
        keys_dir: Key folder (see the module docstring).
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], keys_dir: Path | str) -> None:
        root = Path(keys_dir)
        self.public, self.secret = _load_secret(root / f"{SERVER}.key_secret")
        allowed = root / AUTHORIZED
        if not allowed.is_dir() or not any(allowed.glob("*.key")):
            raise SecurityError(f"no client keys in {allowed}: `factoryfloor edge keygen {root}`")
        self._stop_lock = threading.Lock()
        self.authenticator = ThreadAuthenticator(context)
        self.authenticator.start()
        self.authenticator.configure_curve(domain="*", location=str(allowed))

    def apply(self, socket: zmq.Socket[bytes]) -> None:
        """Make ``socket`` a CURVE server (call before ``bind``)."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def check(self) -> None:
        """Raise ``SecurityError`` when the authenticator is no longer running."""
        if not self.authenticator.is_alive():
            raise SecurityError("the ZAP authenticator stopped: closing the listener")

    def stop(self) -> None:
        """Stop the authenticator; safe to call from several threads and more than once.

        pyzmq's ``ThreadAuthenticator.stop`` is neither: two threads inside it at once (an
        operator's stop racing the server's own shutdown) close its pipe twice.
        """
        with self._stop_lock:
            self.authenticator.stop()


def secure_client(socket: zmq.Socket[bytes], keys_dir: Path | str, name: str) -> None:
    """Give a DEALER socket its CURVE identity ``name`` and the server's public key."""
    root = Path(keys_dir)
    public, secret = _load_secret(root / CLIENTS / f"{name}.key_secret")
    server_public, _ = zmq.auth.load_certificate(root / f"{SERVER}.key")
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public
