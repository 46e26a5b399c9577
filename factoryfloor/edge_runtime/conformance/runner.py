"""The kit's entry points, for the CLI: run a registry, print it, write JSON, exit status.

``factoryfloor edge conformance`` and ``factoryfloor edge describe`` are thin over these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.conformance.kit import (
    FAILED,
    CheckFailed,
    Peer,
    Registry,
    SocketSetup,
    describe,
    run_checks,
)
from factoryfloor.edge_runtime.conformance.report import write_json, write_table
from factoryfloor.edge_runtime.spec import PolicySpec

DESCRIPTION_SPEC_KEYS = ("task_id", "robot", "control_rate_hz", "observation", "action")


def socket_setup(keys_dir: Path | None, client_name: str) -> SocketSetup | None:
    """CURVE setup of the kit's sockets from a key folder (``factoryfloor edge keygen``)."""
    if keys_dir is None:
        return None
    from factoryfloor.edge_runtime.auth import secure_client

    def setup(socket: Any) -> None:
        secure_client(socket, keys_dir, client_name)

    return setup


def describe_endpoint(endpoint: str, setup: SocketSetup | None, timeout_s: float) -> dict[str, Any]:
    """The DESCRIPTION a server at ``endpoint`` answers.

    Raises:
        EdgeError: When no valid DESCRIPTION comes within ``timeout_s``.
    """
    peer = Peer(endpoint, setup, timeout_s)
    try:
        return describe(peer)
    except CheckFailed as exc:
        raise p.EdgeError(f"{endpoint}: {exc}; is an FFEP/2 server running there?") from None
    finally:
        peer.close()


def spec_from_description(desc: dict[str, Any], source: str) -> PolicySpec:
    """The served interface a DESCRIPTION (or WELCOME) JSON states.

    Raises:
        ValueError: When a key is missing or the specs are unusable.
    """
    missing = [k for k in DESCRIPTION_SPEC_KEYS if k not in desc]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}; give a DESCRIPTION JSON")
    try:
        spec = PolicySpec(
            task_id=str(desc["task_id"]),
            robot=str(desc["robot"]),
            control_rate_hz=float(desc["control_rate_hz"]),
            observation=list(desc["observation"]),
            action=list(desc["action"]),
            model_sha256=str(desc.get("model_sha256") or ""),
        )
        _ = spec.obs_size, spec.action_size, spec.schema_sha256
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: unusable specs ({exc})") from None
    return spec


def load_spec(path: Path) -> PolicySpec:
    """``spec_from_description`` of a JSON file.

    Raises:
        ValueError: When it is not a DESCRIPTION JSON object.
    """
    try:
        desc = p.decode_json(path.read_bytes())
    except p.ProtocolError as exc:
        raise ValueError(f"{path}: {exc.text}") from None
    return spec_from_description(desc, str(path))


def conformance(
    registry: Registry,
    context: Any,
    endpoint: str,
    out: Path | None = None,
    names: Sequence[str] | None = None,
) -> int:
    """Run the checks, print the table, write ``out`` (JSON); 0 only when none failed."""
    results = run_checks(registry, context, names)
    write_table(f"FFEP/2 conformance of {endpoint}", results)
    if out is not None:
        write_json(out, endpoint, results)
    return 1 if any(r.status == FAILED for r in results) else 0
