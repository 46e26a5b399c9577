"""Handshake checks, both ways: the server's of a HELLO, the controller's of a WELCOME.

Both sides distrust the other (``docs/protocol.md``, section 5). A payload is first parsed with
limits (``strict_json``), then validated against its JSON Schema (``schemas/``, the same files
the docs link to), and only then compared with the served or the controller's own spec, in the
order the protocol's "which error wins" rule gives. Every refusal is a ``ProtocolError`` with its
error code and one line saying what differs; nothing here raises anything else on bad input.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.spec import PolicySpec

MAX_LOOP_MULTIPLE = 100
MAX_ACTION_AGE_MS = 10_000.0
_RATE_TOLERANCE = 1e-9


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator of ``schemas/<name>.schema.json`` (``hello`` or ``welcome``)."""
    registry: Registry = Registry()
    schemas = {}
    for each in ("hello", "welcome"):
        text = (files("factoryfloor.edge_runtime") / "schemas" / f"{each}.schema.json").read_text()
        schemas[each] = json.loads(text)
        registry = registry.with_resource(
            schemas[each]["$id"], Resource.from_contents(schemas[each])
        )
    return Draft202012Validator(schemas[name], registry=registry)


def _validate(name: str, doc: dict[str, Any], what: str) -> None:
    error = best_match(validator(name).iter_errors(doc))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        raise p.ProtocolError(p.ErrorCode.BAD_PAYLOAD, f"{what} {where}: {error.message:.160}")


def _check_version(doc: dict[str, Any], what: str) -> None:
    version = doc.get("protocol_version")
    if type(version) is not int or version != p.PROTOCOL_VERSION:  # 2.0 and true are not 2
        raise p.ProtocolError(
            p.ErrorCode.BAD_VERSION,
            f"{what} protocol_version {str(version)[:20]!r}; this side speaks {p.PROTOCOL_VERSION}",
        )


def check_hello(hello: dict[str, Any], spec: PolicySpec) -> float:
    """Refuse a HELLO that does not match ``spec``; returns the controller's loop rate (Hz).

    Raises:
        ProtocolError: ``BAD_VERSION``, ``BAD_PAYLOAD`` (schema), ``TASK_MISMATCH``,
            ``SCHEMA_MISMATCH`` or ``MODEL_MISMATCH``, in that order, each saying what differs.
    """
    _check_version(hello, "HELLO")
    _validate("hello", hello, "HELLO")
    loop_rate = _check_task(hello, spec)
    _check_schema(hello, spec)
    model = hello.get("model_sha256")
    if model is not None and model != spec.model_sha256:
        raise p.ProtocolError(
            p.ErrorCode.MODEL_MISMATCH,
            f"controller expects model {model[:16]}..., the server serves "
            f"{spec.model_sha256[:16]}...; serve the bundle the controller was certified with",
        )
    return loop_rate


def _check_task(hello: dict[str, Any], spec: PolicySpec) -> float:
    for key, ours in (("task_id", spec.task_id), ("robot", spec.robot)):
        if hello[key] != ours:
            raise p.ProtocolError(
                p.ErrorCode.TASK_MISMATCH, f"{key} {hello[key][:64]!r}; the server serves {ours!r}"
            )
    rate = float(hello["control_rate_hz"])
    if not math.isclose(rate, spec.control_rate_hz, rel_tol=_RATE_TOLERANCE):
        raise p.ProtocolError(
            p.ErrorCode.TASK_MISMATCH,
            f"control_rate_hz {rate:g}; the policy runs at {spec.control_rate_hz:g} Hz (a faster "
            "robot loop states loop_rate_hz, an integer multiple of it)",
        )
    loop = float(hello.get("loop_rate_hz", spec.control_rate_hz))
    multiple = loop / spec.control_rate_hz
    k = round(multiple)
    if not (1 <= k <= MAX_LOOP_MULTIPLE and math.isclose(multiple, k, rel_tol=_RATE_TOLERANCE)):
        raise p.ProtocolError(
            p.ErrorCode.TASK_MISMATCH,
            f"loop_rate_hz {loop:g} is not an integer multiple (1..{MAX_LOOP_MULTIPLE}) of the "
            f"policy's {spec.control_rate_hz:g} Hz",
        )
    return k * spec.control_rate_hz


def _check_schema(hello: dict[str, Any], spec: PolicySpec) -> None:
    theirs = p.schema_sha256(hello["observation"], hello["action"])
    if theirs != hello["schema_sha256"]:
        raise p.ProtocolError(
            p.ErrorCode.SCHEMA_MISMATCH,
            f"HELLO's schema_sha256 {hello['schema_sha256'][:16]}... is not the hash of its own "
            f"specs ({theirs[:16]}...): hash the RFC 8785 text of docs/protocol.md, section 5",
        )
    if theirs != spec.schema_sha256:
        raise p.ProtocolError(
            p.ErrorCode.SCHEMA_MISMATCH,
            f"observation/action specs differ from the served policy's (server schema "
            f"{spec.schema_sha256[:16]}..., HELLO {theirs[:16]}...): send DESCRIBE, or use the "
            "WELCOME/bundle manifest's specs",
        )


def check_welcome(
    welcome: dict[str, Any],
    header_session: int,
    spec: PolicySpec,
    pinned_model: str | None,
    pinned_publisher: str | None = None,
) -> None:
    """Refuse a WELCOME that does not match what the controller asked for.

    Args:
        welcome: The WELCOME's JSON (``strict_json`` limits already applied).
        header_session: The WELCOME frame's header ``session_id``.
        spec: The controller's own interface (what it sent in HELLO).
        pinned_model: The model the controller was certified with, or None.
        pinned_publisher: The key id of the only publisher whose bundles it accepts, or None.

    Raises:
        ProtocolError: Saying what the server got wrong (the client turns it into a
            ``HandshakeError``).
    """
    _check_version(welcome, "WELCOME")
    _validate("welcome", welcome, "WELCOME")
    session = welcome.get("session_id")
    if not header_session or session != header_session:
        raise p.ProtocolError(
            p.ErrorCode.BAD_PAYLOAD,
            f"WELCOME's session_id {session!r} and its header's {header_session} must be equal "
            "and non-zero",
        )
    for key, ours in (("task_id", spec.task_id), ("robot", spec.robot)):
        if welcome[key] != ours:
            raise p.ProtocolError(p.ErrorCode.TASK_MISMATCH, f"WELCOME {key} {welcome[key]!r}")
    if not math.isclose(welcome["control_rate_hz"], spec.control_rate_hz, rel_tol=_RATE_TOLERANCE):
        raise p.ProtocolError(
            p.ErrorCode.TASK_MISMATCH, f"WELCOME control_rate_hz {welcome['control_rate_hz']:g}"
        )
    _check_welcome_specs(welcome, spec)
    if pinned_model is not None and welcome["model_sha256"] != pinned_model:
        raise p.ProtocolError(
            p.ErrorCode.MODEL_MISMATCH,
            f"the server reports model {welcome['model_sha256'][:16]}..., this controller is "
            f"pinned to {pinned_model[:16]}...",
        )
    if pinned_publisher is not None and welcome.get("publisher") != pinned_publisher:
        raise p.ProtocolError(
            p.ErrorCode.MODEL_MISMATCH,
            f"the server's bundle is signed by {welcome.get('publisher') or 'nobody'}, this "
            f"controller accepts only publisher {pinned_publisher}",
        )


def _check_welcome_specs(welcome: dict[str, Any], spec: PolicySpec) -> None:
    try:
        theirs = p.schema_sha256(welcome["observation"], welcome["action"])
        sizes = (p.spec_floats(welcome["observation"]), p.spec_floats(welcome["action"]))
    except (TypeError, ValueError) as exc:
        raise p.ProtocolError(p.ErrorCode.BAD_PAYLOAD, f"WELCOME specs: {exc}") from None
    if sizes != (spec.obs_size, spec.action_size):
        raise p.ProtocolError(
            p.ErrorCode.SCHEMA_MISMATCH,
            f"WELCOME specs have {sizes[0]} observation and {sizes[1]} action values; this "
            f"controller has {spec.obs_size} and {spec.action_size}",
        )
    if theirs != spec.schema_sha256 or welcome["schema_sha256"] != spec.schema_sha256:
        raise p.ProtocolError(
            p.ErrorCode.SCHEMA_MISMATCH,
            f"WELCOME specs hash to {theirs[:16]}... (it says {welcome['schema_sha256'][:16]}...), "
            f"this controller's to {spec.schema_sha256[:16]}...",
        )
