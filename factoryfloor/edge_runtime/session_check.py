"""Handshake checks: a HELLO is accepted only when it matches the served policy exactly."""

from __future__ import annotations

import math
from typing import Any

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.spec import PolicySpec

REQUIRED = (
    "protocol_version",
    "robot",
    "task_id",
    "observation",
    "action",
    "control_rate_hz",
    "schema_sha256",
)


def check_hello(hello: dict[str, Any], spec: PolicySpec) -> None:
    """Refuse a HELLO that does not match ``spec``.

    Raises:
        ProtocolError: ``BAD_PAYLOAD`` for missing or mistyped fields, ``BAD_VERSION``,
            ``TASK_MISMATCH``, ``SCHEMA_MISMATCH`` or ``MODEL_MISMATCH``, each saying what differs.
    """
    missing = [k for k in REQUIRED if k not in hello]
    if missing:
        raise p.ProtocolError(p.ErrorCode.BAD_PAYLOAD, f"HELLO lacks {missing}")
    if hello["protocol_version"] != p.PROTOCOL_VERSION:
        raise p.ProtocolError(
            p.ErrorCode.BAD_VERSION,
            f"HELLO protocol_version {hello['protocol_version']!r}; the server speaks "
            f"{p.PROTOCOL_VERSION}",
        )
    _check_task(hello, spec)
    _check_schema(hello, spec)
    model = hello.get("model_sha256")
    if model is not None and model != spec.model_sha256:
        raise p.ProtocolError(
            p.ErrorCode.MODEL_MISMATCH,
            f"controller expects model {str(model)[:16]}..., the server serves "
            f"{spec.model_sha256[:16]}...; serve the bundle the controller was certified with",
        )


def _check_task(hello: dict[str, Any], spec: PolicySpec) -> None:
    rate = hello["control_rate_hz"]
    if not isinstance(rate, int | float) or not math.isclose(float(rate), spec.control_rate_hz):
        raise p.ProtocolError(
            p.ErrorCode.TASK_MISMATCH,
            f"control rate {rate!r} Hz; the policy runs at {spec.control_rate_hz} Hz",
        )
    for key, ours in (("task_id", spec.task_id), ("robot", spec.robot)):
        if hello[key] != ours:
            raise p.ProtocolError(
                p.ErrorCode.TASK_MISMATCH, f"{key} {hello[key]!r}; the server serves {ours!r}"
            )


def _well_formed(items: Any) -> bool:
    """A spec list: ``[{"name": str, "shape": [int, ...], ...}, ...]``, not empty."""
    return (
        isinstance(items, list)
        and bool(items)
        and all(
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("shape"), list)
            and all(isinstance(n, int) and n >= 0 for n in item["shape"])
            for item in items
        )
    )


def _check_schema(hello: dict[str, Any], spec: PolicySpec) -> None:
    for key in ("observation", "action"):
        if not _well_formed(hello[key]):
            raise p.ProtocolError(
                p.ErrorCode.BAD_PAYLOAD,
                f"HELLO {key} must be a list of {{name, shape}} objects, got {hello[key]!r:.80}",
            )
    try:
        theirs = p.schema_sha256(hello["observation"], hello["action"])
    except (TypeError, ValueError) as exc:
        raise p.ProtocolError(p.ErrorCode.BAD_PAYLOAD, f"malformed specs in HELLO: {exc}") from None
    if theirs != spec.schema_sha256 or hello["schema_sha256"] != spec.schema_sha256:
        raise p.ProtocolError(
            p.ErrorCode.SCHEMA_MISMATCH,
            "observation/action specs differ from the served policy's (server schema "
            f"{spec.schema_sha256[:16]}..., HELLO {str(hello['schema_sha256'])[:16]}..., specs "
            f"hash to {theirs[:16]}...); the WELCOME/bundle manifest lists the expected specs",
        )
