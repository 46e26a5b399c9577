"""Validation of demonstration folders (``demos.load_demos``): every field, array and checksum.

A folder is trusted only after its index matches the schema tables below (types, ranges, no
unknown fields), its counts add up, its SHA-256s match (the index's own, ``index_sha256``, and
each episode file's, ``sha256``; folders recorded before they existed have none), and every
episode's ``.npz`` holds exactly the members the index implies, each ``.npy`` header (dtype,
shape) checked before its data is read, with finite floats, actions within the action space's
bounds, and flags and rewards that match the index. Whatever a damaged file makes ``zipfile``,
``zlib``, ``json`` or ``numpy`` raise becomes a ``DemosError`` naming the file. No pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "factoryfloor-demos"
# The format (documented in demos.py); 2: spaces as edge_runtime.spec fields (1: {key: shape}).
FORMAT_VERSION = 2
INDEX = "demos.json"
ARRAYS = ("actions", "rewards", "terminated", "truncated", "is_success")
RECORD = "record them again with `factoryfloor demos record TASK --episodes N --out DIR`"
MAX_INDEX_BYTES, MAX_EPISODE_BYTES = 64 * 2**20, 2**31
# What reading a damaged file raises (zipfile: RuntimeError for "encrypted", NotImplementedError
# for an unknown compression, struct.error for short headers), turned into DemosError.
READ_ERRORS = (
    OSError, EOFError, ValueError, KeyError, TypeError, IndexError, OverflowError, RuntimeError,
    zlib.error, zipfile.BadZipFile, struct.error,
)  # fmt: skip
NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
Check = Callable[[Any], bool]


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


# The index's schema, one table per mapping: field -> (check, what to give). Hashes are optional
# (folders recorded before they were added have none); every other field is required.
OPTIONAL = frozenset({"index_sha256", "sha256"})
INDEX_FIELDS: dict[str, tuple[Check, str]] = {
    "format": (lambda v: v == FORMAT, repr(FORMAT)),
    "format_version": (_nat(2, 2), "2"),
    "env_id": (_is(str), "a string"),
    "robot": (_is(str), "a string"),
    "env_kwargs": (_is(dict), "a mapping"),
    "action_space": (_is(dict), "a mapping"),
    "observation_space": (lambda v: _is(list)(v) and bool(v), "a non-empty list"),
    "episodes": (lambda v: _is(list)(v) and bool(v), "a non-empty list"),
    "total_transitions": (_nat(0), "an integer >= 0"),
    "attempts": (_nat(0), "an integer >= 0"),
    "only_successful": (_is(bool), "true or false"),
    "command": (_is(str), "a string"),
    "factoryfloor_version": (_is(str), "a string"),
    "index_sha256": (_hex, "64 hex digits"),
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
    "file": (lambda v: _is(str)(v) and re.fullmatch(r"episode_\d{5}\.npz", v) is not None,
             "a file name like episode_00000.npz"),
    "seed": (_nat(0), "an integer >= 0"), "length": (_nat(1, 10**7), "an integer in [1, 10**7]"),
    "success": (_is(bool), "true or false"), "return": (_finite, "a finite number"),
    "sha256": (_hex, "64 hex digits"),
}  # fmt: skip


class DemosError(ValueError):
    """A demonstration folder that is missing, malformed or made for another env."""


class _FileError(Exception):
    """What is wrong with a file (``load_demos`` adds which file, and how to fix it)."""


def read_index(folder: Path) -> dict[str, Any]:
    """The validated index of ``folder`` (``DemosError`` otherwise)."""
    path = folder / INDEX
    if folder.is_file():
        raise DemosError(f"{folder} is a file: give the folder that holds {INDEX} and episodes")
    if not path.is_file():
        raise DemosError(f"{folder} holds no demonstrations (no {INDEX}); {RECORD}")
    try:
        size = path.stat().st_size
        if not 0 < size <= MAX_INDEX_BYTES:
            raise _FileError(
                "is empty" if not size else f"is {size:,} bytes, over {MAX_INDEX_BYTES:,}"
            )
        text = path.read_bytes().decode("utf-8")
        index = json.loads(text, object_pairs_hook=_unique, parse_constant=_not_finite)
    except (_FileError, OSError, ValueError, RecursionError) as exc:
        raise DemosError(f"{path}: {_what(exc)}; {RECORD}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DemosError(f"{path} is not a factoryfloor demonstrations index; {RECORD}")
    version = index.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise DemosError(
            f"{path} has format version {_show(version)}; this factoryfloor reads version "
            f"{FORMAT_VERSION}: {RECORD}"
        )
    _check_fields(str(path), index, INDEX_FIELDS)
    if "index_sha256" in index and index["index_sha256"] != index_digest(index):
        raise DemosError(f"{path} is damaged: its contents do not match its index_sha256; {RECORD}")
    for i, field in enumerate(index["observation_space"]):
        _check_fields(f"{path}: observation_space[{i}]", field, OBS_FIELDS)
    _check_fields(f"{path}: action_space", index["action_space"], ACTION_FIELDS)
    for i, entry in enumerate(index["episodes"]):
        _check_fields(f"{path}: episodes[{i}]", entry, EPISODE_FIELDS)
    _check_totals(path, index)
    return index


def _check_fields(where: str, data: Any, schema: dict[str, tuple[Check, str]]) -> None:
    """Refuse a mapping with missing, unexpected or invalid fields (``schema``: the table)."""
    if not isinstance(data, dict):
        raise DemosError(f"{where} is {_show(data)}, not a mapping; {RECORD}")
    missing, extra = sorted(set(schema) - set(data) - OPTIONAL), sorted(set(data) - set(schema))
    if missing or extra:
        raise DemosError(f"{where}: missing fields {missing}, unexpected {_show(extra)}; {RECORD}")
    for key, value in data.items():
        ok, what = schema[key]
        if not ok(value):
            raise DemosError(f"{where}: {key}={_show(value)} is not valid: give {what}; {RECORD}")


def _check_totals(path: Path, index: dict[str, Any]) -> None:
    """The index's counts add up, its names are unique and its action bounds are ordered."""
    episodes, act = index["episodes"], index["action_space"]
    names, files = [f["name"] for f in index["observation_space"]], [e["file"] for e in episodes]
    total, size = sum(e["length"] for e in episodes), math.prod(act["shape"])
    low, high = act["low"], act["high"]
    failed = [i for i, e in enumerate(episodes) if not e["success"]]
    for ok, what in (
        (len(set(names)) == len(names), f"observation_space repeats a name: {names}"),
        (len(set(files)) == len(files), "episodes list the same file twice"),
        (len(low) == len(high) == size, f"action low/high do not hold {size} values each"),
        (all(a <= b for a, b in zip(low, high, strict=False)), "action low exceeds high"),
        (index["total_transitions"] == total, f"total_transitions={index['total_transitions']}, "
         f"but the episodes' lengths add up to {total}"),
        (index["attempts"] >= len(episodes), f"attempts={index['attempts']} < {len(episodes)} "
         "episodes"),
        (not (index["only_successful"] and failed), f"only_successful, but episodes {failed} "
         "failed"),
    ):  # fmt: skip
        if not ok:
            raise DemosError(f"{path} is inconsistent: {what}; {RECORD}")


def read_episode(folder: Path, entry: dict[str, Any], index: dict[str, Any]) -> dict[str, Any]:
    """The validated arrays of the episode ``entry`` of a validated ``index``."""
    path, length, act = folder / entry["file"], entry["length"], index["action_space"]
    expected = {
        f"obs/{f['name']}": ((length + 1, *f["shape"]), np.dtype(f["dtype"]))
        for f in index["observation_space"]
    }
    expected["actions"] = ((length, *act["shape"]), np.dtype(np.float32))
    expected["rewards"] = ((length,), np.dtype(np.float32))
    expected.update({k: ((length,), np.dtype(bool)) for k in ARRAYS[2:]})
    raw = sum(math.prod(shape) * dtype.itemsize for shape, dtype in expected.values())
    try:
        if raw > MAX_EPISODE_BYTES:
            raise _FileError(f"its arrays would take {raw:,} bytes, over {MAX_EPISODE_BYTES:,}")
        arrays = _read_npz(path, entry.get("sha256"), expected, 2 * raw + 2**20)
        _check_content(arrays, entry, act)
    except (_FileError, *READ_ERRORS) as exc:
        raise DemosError(f"episode file {path}: {_what(exc)}; {RECORD}") from None
    return arrays


def _read_npz(
    path: Path,
    sha256: str | None,
    expected: dict[str, tuple[tuple[int, ...], np.dtype]],
    limit: int,
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, checked against its SHA-256 and the expected members."""
    size = path.stat().st_size
    if not 0 < size <= limit:
        raise _FileError(
            "is empty" if not size else f"is {size:,} bytes, over {limit:,} for its arrays"
        )
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise _FileError(f"is damaged: its SHA-256 differs from the one {INDEX} records")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names, wanted = sorted(zf.namelist()), sorted(f"{k}.npy" for k in expected)
        if names != wanted:
            raise _FileError(f"holds members {_show(names)}, expected {wanted}")
        return {key: _read_member(zf, key, *spec) for key, spec in expected.items()}


def _read_member(zf: zipfile.ZipFile, key: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """One ``.npy`` member: its header checked before its data is read."""
    with zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version not in NPY_HEADERS:
            raise _FileError(f"{key}: .npy version {version} is not supported")
        got_shape, fortran, got_dtype = NPY_HEADERS[version](f)
        if got_dtype != dtype:
            raise _FileError(f"{key} has dtype {got_dtype}, expected {dtype}")
        if got_shape != shape:
            raise _FileError(f"{key} has shape {got_shape}, expected {shape} (from {INDEX})")
        nbytes = math.prod(shape) * dtype.itemsize
        data = f.read(nbytes + 1)  # to the end: zipfile checks the CRC-32 there
    if len(data) != nbytes:
        raise _FileError(f"{key} holds {len(data):,} bytes of data, expected {nbytes:,}")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()


def _check_content(arrays: dict[str, Any], entry: dict[str, Any], act: dict[str, Any]) -> None:
    """Finite floats, actions within bounds, and flags and rewards that match the index."""
    for key, a in arrays.items():
        bad = a.size - int(np.count_nonzero(np.isfinite(a))) if a.dtype.kind == "f" else 0
        if bad:
            raise _FileError(f"{key} holds {bad} non-finite (NaN or infinite) values of {a.size}")
    actions = arrays["actions"]
    low, high = (np.asarray(act[k], np.float32).reshape(act["shape"]) for k in ("low", "high"))
    outside = int(np.count_nonzero((actions < low) | (actions > high)))
    done = arrays["terminated"] | arrays["truncated"]
    total = float(arrays["rewards"].sum(dtype=np.float64))
    for ok, what in (
        (not outside, f"actions: {outside} values outside the action space's [low, high]"),
        (bool(done[-1]) and not done[:-1].any(), "terminated/truncated are not set at the last "
         "step only"),
        (bool(arrays["is_success"][-1]) == entry["success"], "is_success at the last step is "
         f"not success={entry['success']} of {INDEX}"),
        (math.isclose(total, entry["return"], rel_tol=1e-4, abs_tol=1e-3),
         f"rewards add up to {total:.6g}, not to return={entry['return']:.6g}"),
    ):  # fmt: skip
        if not ok:
            raise _FileError(what)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"keys appear twice in one object: {_show(twice)}")
    return dict(pairs)


def _not_finite(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _what(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, _FileError) else f"cannot be read ({type(exc).__name__}: {text})"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def index_digest(index: dict[str, Any]) -> str:
    """SHA-256 (hex) of the index without ``index_sha256``: sorted keys, compact JSON."""
    body = {k: v for k, v in index.items() if k != "index_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
