"""A seeded generator of corrupted ``.ffpolicy`` bundles, the way an outsider would make them.

``corpus(base, n, seed, attacker_key)`` yields ``(kind, bytes)`` pairs made from one good
bundle: bit flips, truncation, replaced and duplicated members, extra and path members,
mistyped and edited manifests (re-hashed, so only the signature can tell), edited weights
(re-hashed), deep nesting, unknown compression, the encryption flag, and signatures that are
stripped, garbled or made by another key. ``judge`` loads one and says what happened.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from factoryfloor.edge_runtime import bundle as bd
from factoryfloor.edge_runtime import signing

MANIFEST, ONNX, NPZ, SIG = bd.MANIFEST, bd.ONNX, bd.NPZ, signing.SIGNATURE
Members = dict[str, bytes]


def members_of(data: bytes) -> Members:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def zip_of(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names: wanted here
        with zipfile.ZipFile(buffer, "w", compression=method) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buffer.getvalue()


def rehash(members: Members) -> Members:
    """``members`` with the manifest's sizes and SHA-256s recomputed (the signature kept)."""
    manifest = json.loads(members[MANIFEST])
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
        manifest["files"] = {
            name: {"bytes": len(members[name]), "sha256": bd.sha256_hex(members[name])}
            for name in manifest["files"]
            if name in members
        }
    return {**members, MANIFEST: json.dumps(manifest).encode()}


def _mutated_value(rng: np.random.Generator) -> Any:
    choices: list[Any] = [
        None, "x", "", -5, 0, 1e308, 2**60, [], {}, [1, "a"], {"a": 1}, True, -1.5,
        "nan", [None], "../../etc/passwd", "a" * 5000,
    ]  # fmt: skip
    return choices[int(rng.integers(len(choices)))]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:6]):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def mistype_manifest(members: Members, rng: np.random.Generator) -> Members:
    manifest = json.loads(members[MANIFEST])
    paths = [p for p in _paths(manifest) if p[0] not in ("training", "metrics", "command")]
    path = paths[int(rng.integers(len(paths)))]
    if rng.random() < 0.2 and len(path) >= 1:
        parent: Any = manifest
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict):
            parent.pop(path[-1])
        else:
            _set(manifest, path, _mutated_value(rng))
    else:
        _set(manifest, path, _mutated_value(rng))
    return rehash({**members, MANIFEST: json.dumps(manifest).encode()})


EDITS: list[Callable[[dict[str, Any]], None]] = [
    lambda m: m.update(task_id="factoryfloor/Reach-v9"),
    lambda m: m.update(robot="xarm6"),
    lambda m: m.update(control_rate_hz=None),
    lambda m: m.update(control_rate_hz=250.0),
    lambda m: m["action"].update(low=[-10.0] * len(m["action"]["low"])),
    lambda m: m["action"].update(high=[10.0] * len(m["action"]["high"])),
    lambda m: m["actor"].update(activation="tanh"),
    lambda m: m["actor"].update(squash=None),
    lambda m: m["observation"].update(keys=list(reversed(m["observation"]["keys"]))),
    lambda m: m.update(format_version=2),
    lambda m: m["metrics"].update(note="edited"),
]


def edit_manifest(members: Members, rng: np.random.Generator) -> Members:
    manifest = json.loads(members[MANIFEST])
    EDITS[int(rng.integers(len(EDITS)))](manifest)
    return rehash({**members, MANIFEST: json.dumps(manifest, indent=2).encode()})


def edit_weights(members: Members, rng: np.random.Generator) -> Members:
    out = dict(members)
    if NPZ in members and rng.random() < 0.6:
        with np.load(io.BytesIO(members[NPZ]), allow_pickle=False) as npz:
            arrays = {k: npz[k].copy() for k in npz.files}
        name = [k for k in arrays if k.startswith("w")][int(rng.integers(2))]
        flat = arrays[name].reshape(-1)
        where = int(rng.integers(flat.size))
        flat[where] = [np.nan, np.inf, flat[where] * 1.5 + 0.1, 0.0][int(rng.integers(4))]
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        out[NPZ] = buffer.getvalue()
    else:
        onnx = bytearray(members[ONNX])
        for _ in range(int(rng.integers(1, 4))):
            onnx[int(rng.integers(len(onnx) // 4, len(onnx)))] ^= 1 << int(rng.integers(8))
        out[ONNX] = bytes(onnx)
    return rehash(out)


def _patch_headers(
    data: bytes, offset_local: int, offset_central: int, fmt: str, value: int
) -> bytes:
    """Set a field in every local header (PK\\3\\4) and central entry (PK\\1\\2)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", offset_local), (b"PK\x01\x02", offset_central)):
        start = 0
        while (at := out.find(signature, start)) >= 0:
            struct.pack_into(fmt, out, at + offset, value)
            start = at + 4
    return bytes(out)


class _Corruptor:
    """The corruptions of one good bundle, each a method returning the corrupted bytes."""

    def __init__(self, base: bytes, rng: np.random.Generator, attacker_key: Any) -> None:
        self.base, self.rng, self.attacker_key = base, rng, attacker_key
        self.members = members_of(base)
        self.names = list(self.members)
        self.unsigned = {k: v for k, v in self.members.items() if k != SIG}

    def bit_flip(self) -> bytes:
        data = bytearray(self.base)
        for _ in range(int(self.rng.integers(1, 4))):
            data[int(self.rng.integers(len(data)))] ^= 1 << int(self.rng.integers(8))
        return bytes(data)

    def truncate(self) -> bytes:
        return self.base[: int(self.rng.integers(0, len(self.base)))]

    def replace_member(self) -> bytes:
        name = self.names[int(self.rng.integers(len(self.names)))]
        changed = {**self.members, name: self.rng.bytes(int(self.rng.integers(0, 2000)))}
        if name != MANIFEST and self.rng.random() < 0.5:
            changed = rehash(changed)
        return zip_of(list(changed.items()))

    def duplicate_member(self) -> bytes:
        name = self.names[int(self.rng.integers(len(self.names)))]
        second = self.members[name]
        if name == MANIFEST:
            manifest = json.loads(second)
            manifest["task_id"] = "factoryfloor/Evil-v0"
            second = json.dumps(manifest).encode()
        return zip_of([*self.members.items(), (name, second)])

    def extra_member(self) -> bytes:
        names = ["../evil.py", "/etc/cron.d/x", "dir/actor.onnx", "README", "actor.pkl"]
        return zip_of([*self.members.items(), (names[int(self.rng.integers(5))], b"import os")])

    def deep_manifest(self) -> bytes:
        depth = int(self.rng.integers(20, 200_000))
        text = json.dumps(json.loads(rehash(self.members)[MANIFEST]))[:-1]
        text += ', "x": ' + "[" * depth + "]" * depth + "}"
        return zip_of(list({**self.members, MANIFEST: text.encode()}.items()))

    def compression_method(self) -> bytes:
        stored = zip_of(list(self.members.items()), zipfile.ZIP_STORED)
        return _patch_headers(stored, 8, 10, "<H", 99)

    def encrypted_flag(self) -> bytes:
        return _patch_headers(zip_of(list(self.members.items())), 6, 8, "<H", 0x1)

    def strip_signature(self) -> bytes:
        return zip_of(list(self.unsigned.items()))

    def garble_signature(self) -> bytes:
        body = json.loads(self.members[SIG]) if SIG in self.members else {}
        field = ["signature", "public_key", "key_id", "algorithm", "format"][
            int(self.rng.integers(5))
        ]
        garbled = str(body.get(field, ""))[::-1]
        body[field] = _mutated_value(self.rng) if self.rng.random() < 0.5 else garbled
        return zip_of([*self.unsigned.items(), (SIG, json.dumps(body).encode())])

    def resign_edited(self) -> bytes:
        edit = edit_manifest if self.rng.random() < 0.5 else edit_weights
        changed = edit(self.unsigned, self.rng)
        changed[SIG] = signing.sign_members(changed, self.attacker_key)
        return zip_of(list(changed.items()))

    def mistyped(self) -> bytes:
        return zip_of(list(mistype_manifest(self.members, self.rng).items()))

    def edited_manifest(self) -> bytes:
        return zip_of(list(edit_manifest(self.members, self.rng).items()))

    def edited_weights(self) -> bytes:
        return zip_of(list(edit_weights(self.members, self.rng).items()))


KINDS = {
    "bit flip": _Corruptor.bit_flip,
    "truncation": _Corruptor.truncate,
    "replaced member": _Corruptor.replace_member,
    "duplicated member": _Corruptor.duplicate_member,
    "extra or path member": _Corruptor.extra_member,
    "mistyped manifest (re-hashed)": _Corruptor.mistyped,
    "edited manifest (re-hashed)": _Corruptor.edited_manifest,
    "edited weights (re-hashed)": _Corruptor.edited_weights,
    "deep manifest": _Corruptor.deep_manifest,
    "compression method 99": _Corruptor.compression_method,
    "encryption flag": _Corruptor.encrypted_flag,
    "signature stripped": _Corruptor.strip_signature,
    "signature garbled": _Corruptor.garble_signature,
    "re-signed by another key": _Corruptor.resign_edited,
}


def corpus(base: bytes, n: int, seed: int, attacker_key: Any) -> Iterator[tuple[str, bytes]]:
    """``n`` corrupted variants of the bundle ``base``, ``(kind, bytes)``, seeded.

    The first ``3 * len(KINDS)`` cycle through every kind; the rest draw kinds at random.
    """
    rng = np.random.default_rng(seed)
    maker = _Corruptor(base, rng, attacker_key)
    order = list(KINDS)
    for i in range(n):
        kind = order[i % len(order)] if i < 3 * len(order) else order[int(rng.integers(len(order)))]
        yield kind, KINDS[kind](maker)


def judge(data: bytes, original: bytes, trust: Any) -> tuple[str, str]:
    """Load ``data``; ``("refused", message)``, ``("same", ...)`` or ``("changed", ...)``.

    ``same``: it loaded and every member the policy runs on is byte-identical to ``original``'s
    (a flip in a ZIP header field nothing reads); ``changed``: it loaded with other content.
    Any exception other than ``BundleError`` propagates (a traceback in the CLI).
    """
    try:
        policy = bd.bundle_from_bytes(data, "auto", "corrupt.ffpolicy", trust=trust)
    except bd.BundleError as exc:
        return "refused", str(exc)
    ours = members_of(data)
    theirs = members_of(original)
    keys = (MANIFEST, ONNX, NPZ)
    same = all(ours.get(k) == theirs.get(k) for k in keys)
    trusted = policy.signer is not None and policy.signer.trusted
    return ("same" if same else "changed"), f"signer {policy.signer}, trusted {trusted}"
