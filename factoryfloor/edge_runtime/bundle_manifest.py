"""A bundle's ``manifest.json``: parsed with limits, validated by one schema, then cross-checked.

``schemas/bundle_manifest.schema.json`` states every field's type and range (JSON Schema
2020-12, the same file another implementation can use). What a schema cannot say is checked
here: the observation keys name exactly the spaces, the action bounds have one finite value per
action element with ``low < high``, the robot is one this runtime knows, and the member files
and their sizes agree with the archive. Parsing goes through ``strict_json`` (bounded depth, no
duplicate keys, finite numbers), so a manifest nested 100,000 deep is one line, not a
``RecursionError``.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib.resources import files
from typing import Any

from factoryfloor.edge_runtime import strict_json
from factoryfloor.edge_runtime.bundle_archive import MANIFEST, BundleError

FORMAT = "factoryfloor-policy"
FORMAT_VERSION = 1
_MAX_MANIFEST_BYTES = 1 << 20
_MAX_FLOATS = 1 << 20  # observation floats per robot


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    text = files("factoryfloor.edge_runtime") / "schemas" / "bundle_manifest.schema.json"
    return Draft202012Validator(json.loads(text.read_text()))


def parse_manifest(data: bytes, origin: str) -> dict[str, Any]:
    """The validated manifest of ``manifest.json``'s bytes.

    Raises:
        BundleError: Naming the file, the field and what is wrong.
    """
    try:
        manifest = strict_json.loads(data, max_bytes=_MAX_MANIFEST_BYTES)
    except ValueError as exc:
        raise BundleError(f"{origin}: {MANIFEST} is not valid JSON ({exc})") from None
    _check_version(manifest, origin)
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(manifest))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        raise BundleError(f"{origin}: {MANIFEST} {where}: {error.message[:160]}")
    _check_observation(manifest["observation"], origin)
    _check_action(manifest["action"], origin)
    _check_robot(manifest["robot"], origin)
    return manifest


def _check_version(manifest: dict[str, Any], origin: str) -> None:
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{origin}: format is {manifest.get('format')!r:.40}, not {FORMAT!r}")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise BundleError(
            f"{origin}: format_version {version!r:.20} is not supported (this factoryfloor "
            f"reads {FORMAT_VERSION}); export the run again"
        )


def _check_observation(observation: dict[str, Any], origin: str) -> None:
    keys, spaces = observation["keys"], observation["spaces"]
    if sorted(keys) != sorted(spaces):
        raise BundleError(
            f"{origin}: {MANIFEST} observation keys {keys} do not name exactly its spaces "
            f"{sorted(spaces)}"
        )
    floats = sum(math.prod(spaces[k]["shape"]) for k in keys)
    if floats > _MAX_FLOATS:
        raise BundleError(f"{origin}: observation of {floats} floats, over {_MAX_FLOATS}")


def _check_action(action: dict[str, Any], origin: str) -> None:
    size = math.prod(action["shape"])
    low, high = action["low"], action["high"]
    if len(low) != size or len(high) != size:
        raise BundleError(
            f"{origin}: {MANIFEST} action low/high have {len(low)}/{len(high)} values for an "
            f"action of shape {action['shape']} ({size} values)"
        )
    for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise BundleError(
                f"{origin}: {MANIFEST} action bounds [{lo}, {hi}] at index {i}: need finite "
                "low < high"
            )


def _check_robot(robot: str, origin: str) -> None:
    from factoryfloor.robots import robot_names

    if robot not in robot_names():
        raise BundleError(
            f"{origin}: robot {robot!r} is not one this runtime knows ({', '.join(robot_names())})"
        )


def check_files(manifest: dict[str, Any], members: dict[str, bytes], origin: str) -> None:
    """The archive holds exactly the files the manifest lists, each of its size and SHA-256.

    Raises:
        BundleError: For a missing, extra, resized or altered member.
    """
    import hashlib

    listed = set(manifest["files"])
    present = set(members) - {MANIFEST, "signature.json"}
    if listed != present:
        missing, extra = sorted(listed - present), sorted(present - listed)
        raise BundleError(
            f"{origin} is incomplete or padded: missing {missing}, not listed in {MANIFEST} "
            f"{extra}; export the run again"
        )
    for name in sorted(listed):
        entry, data = manifest["files"][name], members[name]
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(
                f"{origin}: {name} does not match its SHA-256 in {MANIFEST} (tampered or "
                "corrupted); export the run again"
            )
    if manifest["actor"]["numpy"] != ("actor.npz" in listed):
        raise BundleError(f"{origin}: actor.numpy disagrees with whether actor.npz is listed")
