"""The ZIP container of a ``.ffpolicy`` bundle: written one way, read with strict hygiene.

Reading refuses, before any member is decompressed: a file over ``MAX_BUNDLE_BYTES``, any
member name outside ``MEMBERS`` (so no paths, no ``..``, nothing extra), a name twice, a
compression method other than stored or deflate, the encryption flag, a member or a total over
the size limits. Every failure of :mod:`zipfile` or :mod:`zlib` on corrupted bytes (CRC
mismatch, bad deflate stream, truncated archive) comes out as ``BundleError``, never as the
library's own exception.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping

__all__ = ["MANIFEST", "MAX_BUNDLE_BYTES", "MEMBERS", "BundleError", "pack_members", "unpack"]

MANIFEST = "manifest.json"
MEMBERS = ("manifest.json", "actor.onnx", "actor.npz", "signature.json")
MAX_MEMBER_BYTES = {
    "manifest.json": 1 << 20, "actor.onnx": 256 << 20, "actor.npz": 256 << 20,
    "signature.json": 4096,
}  # fmt: skip
MAX_BUNDLE_BYTES = 600 << 20
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_ENCRYPTED = 0x1
# what zipfile and zlib raise on corrupted input (NotImplementedError: an unknown compression
# method; RuntimeError: encryption; struct.error and OverflowError: garbled headers)
_CORRUPT = (
    zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, IndexError,
    struct.error, OverflowError, NotImplementedError, RuntimeError, UnicodeDecodeError,
)  # fmt: skip


class BundleError(ValueError):
    """A policy bundle that is malformed, tampered with or unsupported; the message says why."""


def pack_members(members: Mapping[str, bytes]) -> bytes:
    """The ZIP bytes of ``members`` (``manifest.json`` first), deflated."""
    unknown = set(members) - set(MEMBERS)
    if unknown or MANIFEST not in members:
        raise BundleError(f"a bundle holds {MANIFEST} and only {MEMBERS}; got {sorted(members)}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members, key=MEMBERS.index):
            zf.writestr(name, members[name])
    return buffer.getvalue()


def unpack(data: bytes, origin: str) -> dict[str, bytes]:
    """The members of a bundle's bytes, after the hygiene checks of the module docstring.

    Args:
        data: The whole file.
        origin: The file's name, for messages.

    Raises:
        BundleError: For anything but a clean archive of known members within the limits.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{origin} is {len(data)} bytes; a bundle is at most {MAX_BUNDLE_BYTES}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            _check_entries(infos, origin)
            return {info.filename: zf.read(info) for info in infos}
    except BundleError:
        raise
    except _CORRUPT as exc:
        reason = f"{type(exc).__name__}: {str(exc)[:120]}"
        raise BundleError(
            f"{origin} is not a readable policy bundle (truncated or corrupted: {reason}); "
            "get or export it again"
        ) from None


def _check_entries(infos: list[zipfile.ZipInfo], origin: str) -> None:
    names = [info.filename for info in infos]
    for name in names:
        if name not in MEMBERS:
            raise BundleError(
                f"{origin} holds an unexpected member {name[:80]!r}; a bundle holds only "
                f"{', '.join(MEMBERS)}"
            )
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise BundleError(f"{origin} holds {twice} twice (a crafted archive); refusing it")
    if MANIFEST not in names:
        raise BundleError(f"{origin} is not a policy bundle: it has no {MANIFEST}")
    total = 0
    for info in infos:
        if info.compress_type not in _METHODS:
            raise BundleError(
                f"{origin}: {info.filename} uses compression method {info.compress_type}; "
                "bundles are stored or deflated only"
            )
        if info.flag_bits & _ENCRYPTED:
            raise BundleError(f"{origin}: {info.filename} is encrypted; bundles never are")
        if info.file_size > MAX_MEMBER_BYTES[info.filename]:
            raise BundleError(
                f"{origin}: {info.filename} is {info.file_size} bytes, over its limit of "
                f"{MAX_MEMBER_BYTES[info.filename]}"
            )
        total += info.file_size
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(f"{origin} unpacks to {total} bytes, over {MAX_BUNDLE_BYTES}")
