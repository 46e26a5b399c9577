"""What the conformance checks share: results, the check registry, a raw peer, schemas.

A check is a function that raises ``CheckFailed`` (one line: expected vs got) or
``CheckSkipped`` (why), and passes by returning. ``run_checks`` runs a registry of them, each on
its own, timing it and turning anything unexpected into a failure.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import zmq

from factoryfloor.edge_runtime import protocol as p

PROTOCOL = "FFEP/2"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


class CheckFailed(AssertionError):  # noqa: N818 (an outcome, named as the report says it)
    """A rule the implementation breaks; the message says what was expected and what came."""


class CheckSkipped(Exception):  # noqa: N818 (an outcome, named as the report says it)
    """A check that cannot run here; the message says why."""


class Check(NamedTuple):
    """One named rule of ``docs/protocol.md``.

    Attributes:
        section: The doc's section, e.g. ``"§4"``.
        rule: The rule in one sentence.
        run: The check: takes the run's context, raises ``CheckFailed`` or ``CheckSkipped``;
            it may return a note for a pass (e.g. a part it could not check).
    """

    section: str
    rule: str
    run: Callable[[Any], str | None]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: The check's name (its registry key).
        section: The doc's section.
        status: ``passed``, ``failed`` or ``skipped``.
        detail: Why it failed or was skipped ("" when passed, or a note).
        seconds: How long it ran (s).
    """

    name: str
    section: str
    status: str
    detail: str
    seconds: float


Registry = dict[str, Check]


def register(registry: Registry, name: str, section: str, rule: str) -> Callable[..., Any]:
    """A decorator adding a check function to ``registry`` under ``name``."""

    def add(fn: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        if name in registry:
            raise ValueError(f"check {name!r} registered twice")
        registry[name] = Check(section, rule, fn)
        return fn

    return add


def expect(condition: bool, what: str) -> None:
    """Fail with ``what`` unless ``condition``."""
    if not condition:
        raise CheckFailed(what)


def run_checks(
    registry: Registry,
    context: Any,
    names: Iterable[str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run the checks of ``registry`` (all, or ``names`` in registry order), one at a time.

    Raises:
        ValueError: For a name that is not in the registry.
    """
    chosen = list(registry) if names is None else list(names)
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}; choose from {', '.join(registry)}")
    results = []
    for name in [n for n in registry if n in chosen]:
        result = run_one(name, registry[name], context)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def run_one(name: str, check: Check, context: Any) -> CheckResult:
    """Run one check; any exception other than the two outcomes is a failure too."""
    t0 = time.monotonic()
    status, detail = PASSED, ""
    try:
        detail = check.run(context) or ""
    except CheckFailed as exc:
        status, detail = FAILED, str(exc)
    except CheckSkipped as exc:
        status, detail = SKIPPED, str(exc)
    except Exception as exc:  # the check's boundary: a crash is a result, not the end of the run
        status, detail = FAILED, f"{type(exc).__name__}: {exc}"
    return CheckResult(name, check.section, status, detail, round(time.monotonic() - t0, 3))


def validate(obj: Any, schema_file: str) -> str | None:
    """The first error of ``obj`` against ``schemas/<schema_file>``, or None when it is valid.

    Raises:
        CheckSkipped: When the schema file or the ``jsonschema`` package is not there.
    """
    path = SCHEMAS / schema_file
    if not path.is_file():
        raise CheckSkipped(f"{path.name} is absent (factoryfloor/edge_runtime/schemas/)")
    try:
        import jsonschema
    except ModuleNotFoundError:
        raise CheckSkipped("the jsonschema package is not installed") from None
    schema = json.loads(path.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema, registry=_schema_registry())
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is None:
        return None
    where = "/".join(str(k) for k in error.absolute_path) or "(top)"
    return f"{where}: {error.message}"[:300]


def _schema_registry() -> Any:
    """Every schema beside the one validated, by its ``$id`` (for ``$ref`` across files)."""
    from referencing import Registry, Resource

    resources = []
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(contents)
        resources.append((str(contents.get("$id", path.name)), resource))
    return Registry().with_resources(resources)


def frame(
    kind: int,
    payload: bytes = b"",
    *,
    session: int = 0,
    seq: int = 0,
    ack: int = 0,
    t_send: int | None = None,
    t_echo: int = 0,
    flags: int = 0,
    version: int = p.PROTOCOL_VERSION,
    magic: bytes = p.MAGIC,
    payload_len: int | None = None,
) -> bytes:
    """A hand-made frame: any field may break the rules (``payload_len`` defaults to the truth)."""
    length = len(payload) if payload_len is None else payload_len
    stamp = time.monotonic_ns() if t_send is None else t_send
    head = p.HEADER.pack(magic, version, kind, flags, length, session, seq, ack, stamp, t_echo)
    return head + payload


def describe_msg(msg: p.Message | None) -> str:
    """A short text of a received message, for failure lines."""
    if msg is None:
        return "nothing"
    if msg.type is p.MsgType.ERROR:
        code, text = p.decode_error(msg.payload)
        name = p.ErrorCode(code).name if code in set(p.ErrorCode) else str(code)
        return f"ERROR {name} ({text[:80]!r})"
    return msg.type.name


def error_code(msg: p.Message) -> int:
    """The code of an ERROR message."""
    return int(struct.unpack_from("<H", msg.payload)[0])


SocketSetup = Callable[["zmq.Socket[bytes]"], None]


class Peer:
    """One DEALER connection to a server under test, sending hand-made frames.

    Args:
        endpoint: The server's endpoint.
        setup: Applied to the socket before connecting (CURVE keys), or None.
        timeout_s: How long to wait for an answer (s).
    """

    def __init__(self, endpoint: str, setup: SocketSetup | None, timeout_s: float) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        if setup is not None:
            setup(self.socket)
        self.socket.connect(endpoint)
        self.timeout_s = timeout_s
        self.session = 0
        self.seq = 0

    def send(self, data: bytes | list[bytes]) -> None:
        """Send one frame (or a multipart message when ``data`` is a list)."""
        if isinstance(data, list):
            self.socket.send_multipart(data)
        else:
            self.socket.send(data)

    def send_msg(self, kind: p.MsgType, payload: bytes = b"", **fields: Any) -> tuple[int, int]:
        """Send a frame of this peer's session with its next seq; its ``(seq, t_send_ns)``."""
        fields.setdefault("session", self.session)
        if "seq" not in fields:
            self.seq += 1
            fields["seq"] = self.seq
        fields.setdefault("t_send", time.monotonic_ns())
        self.send(frame(int(kind), payload, **fields))
        return int(fields["seq"]), int(fields["t_send"])

    def recv(self, timeout_s: float | None = None) -> p.Message | None:
        """The next frame, decoded, or None when none came in time.

        Raises:
            CheckFailed: When the server sent a frame that breaks the protocol.
        """
        wait = self.timeout_s if timeout_s is None else timeout_s
        if not self.socket.poll(int(wait * 1e3)):
            return None
        parts = self.socket.recv_multipart()
        expect(len(parts) == 1, f"expected one frame per message, got {len(parts)} parts")
        try:
            return p.decode(parts[0])
        except p.ProtocolError as exc:
            raise CheckFailed(f"the server sent a malformed frame: {exc}") from None

    def reply(self, kind: p.MsgType, what: str) -> p.Message:
        """The next frame, which must be of ``kind``."""
        msg = self.recv()
        got = describe_msg(msg)
        expect(msg is not None, f"{what}: expected {kind.name}, got nothing in {self.timeout_s} s")
        assert msg is not None
        expect(msg.type is kind, f"{what}: expected {kind.name}, got {got}")
        return msg

    def error(self, code: p.ErrorCode, what: str) -> p.Message:
        """The next frame, which must be an ERROR with ``code``."""
        msg = self.recv()
        expect(
            msg is not None and msg.type is p.MsgType.ERROR and error_code(msg) == code,
            f"{what}: expected ERROR {code.name}, got {describe_msg(msg)}",
        )
        assert msg is not None
        return msg

    def silence(self, window_s: float, what: str) -> None:
        """Fail when any frame arrives within ``window_s``."""
        msg = self.recv(window_s)
        expect(msg is None, f"{what}: expected no reply, got {describe_msg(msg)}")

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(0)


@dataclass
class ServerTarget:
    """The server under test, and how to open connections to it.

    Attributes:
        endpoint: Its endpoint.
        setup: Socket setup before connecting (CURVE), or None.
        timeout_s: How long to wait for an expected answer (s).
        silence_s: How long to listen for a reply that must not come (s).
    """

    endpoint: str
    setup: SocketSetup | None = None
    timeout_s: float = 1.0
    silence_s: float = 0.3

    def peer(self) -> Peer:
        """A new connection."""
        return Peer(self.endpoint, self.setup, self.timeout_s)

    @contextmanager
    def peers(self) -> Iterator[Callable[[], Peer]]:
        """A factory of connections, each ended with BYE (if in a session) and closed."""
        opened: list[Peer] = []

        def make() -> Peer:
            opened.append(self.peer())
            return opened[-1]

        try:
            yield make
        finally:
            for peer in opened:
                if peer.session:
                    peer.send_msg(p.MsgType.BYE)
            for peer in opened:
                if peer.session:
                    peer.recv(0.2)
                peer.close()


def describe(peer: Peer, seq: int = 0) -> dict[str, Any]:
    """DESCRIBE (with ``seq``), and the DESCRIPTION's JSON.

    Raises:
        CheckFailed: When no DESCRIPTION comes, or it is not valid JSON.
    """
    peer.send_msg(p.MsgType.DESCRIBE, seq=seq)
    msg = peer.reply(p.MsgType.DESCRIPTION, "DESCRIBE")
    try:
        return p.decode_json(msg.payload)
    except p.ProtocolError as exc:
        raise CheckFailed(f"DESCRIPTION is not valid JSON: {exc.text}") from None
