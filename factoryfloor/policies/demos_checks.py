"""Validation of Minari demonstration datasets where they enter (``demos.load_demos``).

A dataset folder (the ``data`` folder of a Minari dataset) is input from outside. Before any of
it is used:

* its ``metadata.json`` (Minari's) must be strict JSON of a bounded size with the fields and
  types Minari writes, a storage of ``arrow`` or ``parquet`` and serialised observation and
  action spaces (a dataset that would need ``gym.make`` of its recorded env spec to learn its
  spaces is refused: that would run code named by the file);
* when it has a ``factoryfloor.json`` sidecar (datasets factoryfloor wrote), the sidecar must
  match the schema tables below and its own digest, list exactly the files of the folder, and
  every file's SHA-256 must match: an edited data file is refused even when the arrow file is
  rewritten consistently. Without a sidecar (a foreign dataset) the structural checks of
  ``demos_read`` alone apply and the dataset is marked unverified.

Whatever a damaged file makes ``json`` or the file system raise becomes a ``DemosError`` naming
the file and the fix. No pickle is ever loaded (Minari serialises spaces as JSON).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = "factoryfloor-minari-demos"
# 4: Minari datasets with a factoryfloor.json sidecar that states the recording's action noise
# (3: the same without it; 2: .npz folders + demos.json, retired).
FORMAT_VERSION = 4
SIDECAR = "factoryfloor.json"
METADATA = "metadata.json"
STORAGES = ("arrow", "parquet")
RECORD = "record them again with `factoryfloor demos record TASK --episodes N [--out ROOT]`"
MAX_JSON_BYTES, MAX_FILE_BYTES, MAX_EPISODES = 64 * 2**20, 2**33, 10**6
DATASET_ID = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*-v\d+")
Check = Callable[[Any], bool]


class DemosError(ValueError):
    """A demonstration dataset that is missing, malformed or made for another env."""


class FileError(Exception):
    """What is wrong with a file (the caller adds which file, and how to fix it)."""


def _nat(low: int, high: int = 2**63) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _is(*kinds: type) -> Check:
    return lambda v: isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)


def _shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= 4 and all(_nat(1, 2**20)(n) for n in v)


def _finite(v: Any) -> bool:
    return _is(int, float)(v) and math.isfinite(v)


def _hex(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None


def _files(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(_relpath(k) and _hex(h) for k, h in v.items())


def _relpath(v: Any) -> bool:
    parts = v.split("/") if isinstance(v, str) else [""]
    return all(p and p not in (".", "..") and "\\" not in p for p in parts) and v != SIDECAR


# The sidecar's schema, one table per mapping: field -> (check, what to give). All required.
SIDECAR_FIELDS: dict[str, tuple[Check, str]] = {
    "format": (lambda v: v == FORMAT, repr(FORMAT)),
    "format_version": (_nat(FORMAT_VERSION, FORMAT_VERSION), str(FORMAT_VERSION)),
    "dataset_id": (lambda v: _is(str)(v) and DATASET_ID.fullmatch(v) is not None, "an id"),
    "env_id": (_is(str), "a string"),
    "robot": (_is(str), "a string"),
    "obs_mode": (_is(str), "a string"),
    "env_kwargs": (_is(dict), "a mapping"),
    "storage": (lambda v: v in STORAGES, " or ".join(STORAGES)),
    "jpeg_encoding": (_is(bool), "true or false"),
    "observation_space": (lambda v: _is(list)(v) and bool(v), "a non-empty list"),
    "action_space": (_is(dict), "a mapping"),
    "episodes": (lambda v: _is(list)(v) and 0 < len(v) <= MAX_EPISODES, "a non-empty list"),
    "total_transitions": (_nat(0), "an integer >= 0"),
    "attempts": (_nat(0), "an integer >= 0"),
    "only_successful": (_is(bool), "true or false"),
    "action_noise": (lambda v: _finite(v) and 0 <= v <= 1, "a noise std in [0, 1]"),
    "command": (_is(str), "a string"),
    "factoryfloor_version": (_is(str), "a string"),
    "files": (_files, "a mapping of relative file paths to 64 hex digits"),
    "sidecar_sha256": (_hex, "64 hex digits"),
}
OBS_FIELDS: dict[str, tuple[Check, str]] = {
    "name": (lambda v: _is(str)(v) and v.isidentifier(), "a name"),
    "shape": (_shape, "a list of <= 4 sizes in [1, 2**20]"),
    "units": (_is(str), "a string"),
    "dtype": (lambda v: v in ("float32", "float64", "uint8"), "float32, float64 or uint8"),
}
ACTION_FIELDS: dict[str, tuple[Check, str]] = {
    **OBS_FIELDS,
    "dtype": (lambda v: v in ("float32", "float64"), "float32 or float64"),
    "low": (lambda v: _is(list)(v) and all(map(_finite, v)), "a list of finite numbers"),
    "high": (lambda v: _is(list)(v) and all(map(_finite, v)), "a list of finite numbers"),
}
EPISODE_FIELDS: dict[str, tuple[Check, str]] = {
    "id": (_nat(0, MAX_EPISODES), "an integer >= 0"),
    "seed": (_nat(0), "an integer >= 0"), "length": (_nat(1, 10**7), "an integer in [1, 10**7]"),
    "success": (_is(bool), "true or false"), "return": (_finite, "a finite number"),
}  # fmt: skip
# Minari's metadata.json: the fields read, with their types (others are kept, unread).
METADATA_FIELDS: dict[str, tuple[Check, str]] = {
    "dataset_id": (lambda v: _is(str)(v) and DATASET_ID.fullmatch(v) is not None, "an id"),
    "data_format": (lambda v: v in STORAGES, " or ".join(STORAGES)),
    "observation_space": (_is(str), "a serialised space (JSON text)"),
    "action_space": (_is(str), "a serialised space (JSON text)"),
    "total_episodes": (_nat(1, MAX_EPISODES), f"an integer in [1, {MAX_EPISODES}]"),
    "total_steps": (_nat(1, 10**10), "an integer >= 1"),
    "minari_version": (_is(str), "a string"),
}
EPISODE_METADATA_FIELDS: dict[str, tuple[Check, str]] = {
    "id": (_nat(0, MAX_EPISODES), "an integer >= 0"),
    "total_steps": (_nat(1, 10**7), "an integer in [1, 10**7]"),
}


def read_json(path: Path) -> Any:
    """Strict JSON of at most ``MAX_JSON_BYTES`` (no NaN, no repeated keys), or ``FileError``."""
    try:
        if path.is_symlink() or not path.is_file():
            raise FileError("is missing (or not a plain file)")
        size = path.stat().st_size
        if not 0 < size <= MAX_JSON_BYTES:
            raise FileError(
                "is empty" if not size else f"is {size:,} bytes, over {MAX_JSON_BYTES:,}"
            )
        text = path.read_bytes().decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique, parse_constant=_not_finite)
    except (OSError, ValueError, RecursionError) as exc:
        raise FileError(what(exc)) from None


def check_fields(
    where: str, data: Any, schema: dict[str, tuple[Check, str]], strict: bool = True
) -> None:
    """Refuse a mapping with missing, (``strict``: unexpected) or invalid fields."""
    if not isinstance(data, dict):
        raise DemosError(f"{where} is {show(data)}, not a mapping; {RECORD}")
    missing, extra = sorted(set(schema) - set(data)), sorted(set(data) - set(schema))
    if missing or (strict and extra):
        raise DemosError(f"{where}: missing fields {missing}, unexpected {show(extra)}; {RECORD}")
    for key in schema:
        ok, text = schema[key]
        if not ok(data[key]):
            raise DemosError(
                f"{where}: {key}={show(data[key])} is not valid: give {text}; {RECORD}"
            )


def read_metadata(folder: Path) -> dict[str, Any]:
    """Minari's validated ``metadata.json`` of the dataset folder ``folder``."""
    path = folder / METADATA
    try:
        metadata = read_json(path)
    except FileError as exc:
        raise DemosError(f"{path}: {exc}; {RECORD}") from None
    if isinstance(metadata, dict) and metadata.get("data_format") not in (None, *STORAGES):
        raise DemosError(
            f"{path}: storage {show(metadata['data_format'])} is not read by factoryfloor; "
            f"convert it to arrow or parquet (minari.create_dataset_from_buffers), or {RECORD}"
        )
    if isinstance(metadata, dict) and "observation_space" not in metadata:
        raise DemosError(
            f"{path} has no serialised observation_space (reading it would need gym.make of the "
            f"env spec it names); write the dataset with its spaces, or {RECORD}"
        )
    check_fields(str(path), metadata, METADATA_FIELDS, strict=False)
    return metadata


def read_sidecar(folder: Path) -> dict[str, Any] | None:
    """The validated ``factoryfloor.json`` of ``folder``, or None when it has none."""
    path = folder / SIDECAR
    if not path.exists() and not path.is_symlink():
        return None
    try:
        sidecar = read_json(path)
    except FileError as exc:
        raise DemosError(f"{path}: {exc}; {RECORD}") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise DemosError(f"{path} is not a factoryfloor dataset sidecar; {RECORD}")
    version = sidecar.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise DemosError(
            f"{path} has format version {show(version)}; this factoryfloor reads version "
            f"{FORMAT_VERSION}: {RECORD}"
        )
    check_fields(str(path), sidecar, SIDECAR_FIELDS)
    if sidecar["sidecar_sha256"] != digest(sidecar):
        raise DemosError(
            f"{path} is damaged: its contents do not match its sidecar_sha256; {RECORD}"
        )
    for i, field in enumerate(sidecar["observation_space"]):
        check_fields(f"{path}: observation_space[{i}]", field, OBS_FIELDS)
    check_fields(f"{path}: action_space", sidecar["action_space"], ACTION_FIELDS)
    for i, entry in enumerate(sidecar["episodes"]):
        check_fields(f"{path}: episodes[{i}]", entry, EPISODE_FIELDS)
    _check_totals(path, sidecar)
    return sidecar


def _check_totals(path: Path, sidecar: dict[str, Any]) -> None:
    """The sidecar's counts add up, its ids run 0, 1, ... and its action bounds are ordered."""
    episodes, act = sidecar["episodes"], sidecar["action_space"]
    names = [f["name"] for f in sidecar["observation_space"]]
    total, size = sum(e["length"] for e in episodes), math.prod(act["shape"])
    failed = [e["id"] for e in episodes if not e["success"]]
    for ok, text in (
        (len(set(names)) == len(names), f"observation_space repeats a name: {names}"),
        ([e["id"] for e in episodes] == list(range(len(episodes))), "episode ids are not 0, 1.."),
        (len(act["low"]) == len(act["high"]) == size, f"action low/high do not hold {size} values"),
        (all(a <= b for a, b in zip(act["low"], act["high"], strict=False)), "action low > high"),
        (sidecar["total_transitions"] == total, f"total_transitions="
         f"{sidecar['total_transitions']}, but the episodes' lengths add up to {total}"),
        (sidecar["attempts"] >= len(episodes), f"attempts={sidecar['attempts']} < "
         f"{len(episodes)} episodes"),
        (not (sidecar["only_successful"] and failed), f"only_successful, but episodes {failed} "
         "failed"),
    ):  # fmt: skip
        if not ok:
            raise DemosError(f"{path} is inconsistent: {text}; {RECORD}")


def data_files(folder: Path) -> dict[str, Path]:
    """Every file below ``folder`` but the sidecar, by relative path (links are refused)."""
    out: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise DemosError(f"{path} is a link or special file, not data; {RECORD}")
        if path.is_file() and rel != SIDECAR:
            out[rel] = path
    return out


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file of at most ``MAX_FILE_BYTES``, read in chunks."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FileError(f"is {size:,} bytes, over {MAX_FILE_BYTES:,}")
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(2**20):
            h.update(chunk)
    return h.hexdigest()


def verify_files(folder: Path, sidecar: dict[str, Any]) -> None:
    """Refuse a folder whose files are not exactly those the sidecar lists, with its hashes."""
    files, listed = data_files(folder), sidecar["files"]
    if sorted(files) != sorted(listed):
        extra, missing = sorted(set(files) - set(listed)), sorted(set(listed) - set(files))
        raise DemosError(
            f"{folder} does not hold the files its {SIDECAR} lists (missing {show(missing)}, "
            f"unexpected {show(extra)}); {RECORD}"
        )
    for rel, path in files.items():
        try:
            ok = file_sha256(path) == listed[rel]
        except (OSError, FileError) as exc:
            raise DemosError(f"{path}: {what(exc)}; {RECORD}") from None
        if not ok:
            raise DemosError(
                f"{path} is damaged or edited: its SHA-256 differs from the one {SIDECAR} records;"
                f" {RECORD}"
            )


def digest(sidecar: dict[str, Any]) -> str:
    """SHA-256 (hex) of the sidecar without ``sidecar_sha256``: sorted keys, compact JSON."""
    body = {k: v for k, v in sidecar.items() if k != "sidecar_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"keys appear twice in one object: {show(twice)}")
    return dict(pairs)


def _not_finite(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def what(exc: BaseException) -> str:
    """One line about ``exc``: its text for a ``FileError``, else its type and text."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return text if isinstance(exc, FileError) else f"cannot be read ({type(exc).__name__}: {text})"


def show(value: Any) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
