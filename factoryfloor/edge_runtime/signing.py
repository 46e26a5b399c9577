"""Publisher signatures of policy bundles (Ed25519, through ``cryptography``) and trust stores.

A publisher key pair is two PEM files made by ``factoryfloor bundle keygen DIR``:
``DIR/<name>.key`` (the secret half, PKCS#8, mode 0600; it never leaves the publisher) and
``DIR/<name>.pub`` (the public half, SubjectPublicKeyInfo). A key's id is the first 16 hex
digits of the SHA-256 of its 32 raw public bytes.

A signed bundle holds one more member, ``signature.json``::

    {"format": "factoryfloor-signature", "version": 1, "algorithm": "ed25519",
     "key_id": "...", "public_key": "<base64 of the 32 raw bytes>",
     "signature": "<base64 of the 64-byte signature>"}

The signature is over ``signed_message(members)``: a fixed prefix, then for every other member
(``manifest.json`` included) in name order, its name, size and SHA-256. So it covers every byte
of the manifest and of every file; an edited manifest, graph or weight array, an added or
removed member, all break it. The public key travels with the signature so that any tampering
is detected even without a trust store; whether the signer is *trusted* is a separate question,
answered by a ``TrustStore``: a folder of ``*.pub`` files (``--trust DIR`` or
``FACTORYFLOOR_TRUST``). Without one, the package's own store (``trust/``, holding the release
key that signs the shipped pretrained bundles) says who is trusted, and unsigned bundles load
(marked unsigned); with one, only bundles signed by one of its keys load.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from factoryfloor.edge_runtime import strict_json

__all__ = [
    "SIGNATURE",
    "TRUST_ENV",
    "Signer",
    "SigningError",
    "TrustStore",
    "keygen",
    "load_secret_key",
    "sign_members",
    "verify_members",
]

SIGNATURE = "signature.json"
SIGNATURE_FORMAT = "factoryfloor-signature"
TRUST_ENV = "FACTORYFLOOR_TRUST"
DEFAULT_STORE = Path(__file__).with_name("trust")
_PREFIX = b"factoryfloor-policy-signature/1\n"
_MAX_KEY_FILE_BYTES = 4096


class SigningError(ValueError):
    """A key, signature or trust store that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Signer:
    """Who signed a bundle, as verified at load.

    Attributes:
        key_id: The publisher key's id (16 hex digits).
        trusted: Whether the trust store in force holds that key.
    """

    key_id: str
    trusted: bool


def key_id_of(raw_public: bytes) -> str:
    """The id of a 32-byte raw Ed25519 public key: its SHA-256's first 16 hex digits."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


def secret_key_id(secret_key: Any) -> str:
    """The key id of an Ed25519 secret key (that of its public half)."""
    return key_id_of(_raw_public(secret_key.public_key()))


def signed_message(members: Mapping[str, bytes]) -> bytes:
    """The bytes a signature covers: every member but ``signature.json``, by name order.

    Args:
        members: Member name -> content (``manifest.json`` included).
    """
    lines = [
        f"{name}\n{len(data)}\n{hashlib.sha256(data).hexdigest()}\n".encode()
        for name, data in sorted(members.items())
        if name != SIGNATURE
    ]
    return _PREFIX + b"".join(lines)


def _ed25519() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def _raw_public(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def sign_members(members: Mapping[str, bytes], secret_key: Any) -> bytes:
    """The ``signature.json`` content signing ``members`` with an Ed25519 secret key."""
    raw = _raw_public(secret_key.public_key())
    signature = secret_key.sign(signed_message(members))
    body = {
        "format": SIGNATURE_FORMAT, "version": 1, "algorithm": "ed25519",
        "key_id": key_id_of(raw), "public_key": base64.b64encode(raw).decode(),
        "signature": base64.b64encode(signature).decode(),
    }  # fmt: skip
    return strict_json.dumps(body)


def verify_members(members: Mapping[str, bytes], origin: str) -> str:
    """Check ``members[SIGNATURE]`` against the other members; return the signer's key id.

    Raises:
        SigningError: For a malformed signature, or one that does not match the members.
    """
    try:
        body = strict_json.loads(members[SIGNATURE])
    except ValueError as exc:
        raise SigningError(f"{origin}: {SIGNATURE} is not valid JSON ({exc})") from None
    expected = {"format", "version", "algorithm", "key_id", "public_key", "signature"}
    if set(body) != expected or body["format"] != SIGNATURE_FORMAT or body["version"] != 1:
        raise SigningError(f"{origin}: {SIGNATURE} is not a version-1 factoryfloor signature")
    if body["algorithm"] != "ed25519":
        raise SigningError(f"{origin}: signature algorithm {body['algorithm']!r} is not ed25519")
    try:
        raw = base64.b64decode(str(body["public_key"]), validate=True)
        signature = base64.b64decode(str(body["signature"]), validate=True)
    except ValueError:
        raise SigningError(f"{origin}: {SIGNATURE}'s key or signature is not base64") from None
    if len(raw) != 32 or len(signature) != 64 or body["key_id"] != key_id_of(raw):
        raise SigningError(f"{origin}: {SIGNATURE} has a malformed key, key id or signature")
    from cryptography.exceptions import InvalidSignature

    try:
        _ed25519().Ed25519PublicKey.from_public_bytes(raw).verify(
            signature, signed_message(members)
        )
    except InvalidSignature:
        raise SigningError(
            f"{origin}: the signature does not match the bundle's contents (tampered or "
            "corrupted after signing); get the bundle again from its publisher"
        ) from None
    return str(body["key_id"])


@dataclass(frozen=True)
class TrustStore:
    """Publisher keys whose signatures are trusted.

    Attributes:
        keys: Key id -> raw 32-byte public key.
        required: Whether bundles must be signed by one of ``keys`` to load (a store the user
            named); the package's default store does not require it.
        origin: Where the keys came from (for messages).
    """

    keys: dict[str, bytes] = field(default_factory=dict)
    required: bool = False
    origin: str = "the package's trust store"

    @classmethod
    def from_dir(cls, folder: str | Path, required: bool = True) -> TrustStore:
        """The keys of every ``*.pub`` file in ``folder``.

        Raises:
            SigningError: For a missing folder, an unreadable key, or no key at all.
        """
        root = Path(folder)
        if not root.is_dir():
            raise SigningError(
                f"trust store {root} is not a folder; give a folder of publisher .pub files "
                "(factoryfloor bundle keygen makes them)"
            )
        keys = {}
        for path in sorted(root.glob("*.pub")):
            raw = _raw_public(load_public_key(path))
            keys[key_id_of(raw)] = raw
        if required and not keys:
            raise SigningError(f"trust store {root} holds no .pub file; copy the publisher's in")
        return cls(keys, required, f"trust store {root}")

    @classmethod
    def resolve(cls, trust: TrustStore | str | Path | None) -> TrustStore:
        """The store in force: ``trust``, else ``$FACTORYFLOOR_TRUST``, else the package's."""
        if isinstance(trust, TrustStore):
            return trust
        if trust is not None:
            return cls.from_dir(trust)
        env = os.environ.get(TRUST_ENV)
        if env:
            return cls.from_dir(env)
        return _package_store()

    def judge(self, key_id: str | None, origin: str) -> Signer | None:
        """The signer of a verified bundle (None: unsigned), refusing what this store must.

        Raises:
            SigningError: When the store is required and the bundle is unsigned or signed by
                a key it does not hold.
        """
        if key_id is None:
            if self.required:
                raise SigningError(
                    f"{origin} is not signed, and {self.origin} requires a signature; sign it "
                    "with `factoryfloor bundle sign BUNDLE --key KEY` (or export --sign KEY)"
                )
            return None
        trusted = key_id in self.keys
        if self.required and not trusted:
            raise SigningError(
                f"{origin} is signed by key {key_id}, which {self.origin} does not hold; add "
                "the publisher's .pub file to it if you trust them"
            )
        return Signer(key_id, trusted)


@cache
def _package_store() -> TrustStore:
    """The package's own store, read once per process (every load without a store uses it)."""
    return TrustStore.from_dir(DEFAULT_STORE, required=False)


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > _MAX_KEY_FILE_BYTES:
            raise SigningError(f"{path} is too large to be a {what}")
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_public_key(path: str | Path) -> Any:
    """The Ed25519 public key of a ``.pub`` PEM file."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        key = None
    if not isinstance(key, _ed25519().Ed25519PublicKey):
        raise SigningError(f"{path} is not an Ed25519 public key in PEM (bundle keygen's .pub)")
    return key


def load_secret_key(path: str | Path) -> Any:
    """The Ed25519 secret key of a ``.key`` PEM file that only its owner can read.

    Raises:
        SigningError: For a missing, unreadable, foreign or group/world-readable key file.
    """
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _read_key_file(path, "secret key")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningError(f"{path} is readable by others; run chmod 600 {path} (it signs robots)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 secret key in PEM (bundle keygen's .key)")
    return key


def keygen(folder: str | Path, name: str = "publisher") -> tuple[Path, Path, str]:
    """Make a publisher key pair ``folder/name.key`` (mode 0600) and ``folder/name.pub``.

    Returns:
        The secret key's path, the public key's path, and the key id.

    Raises:
        SigningError: When either file exists already (keys are never overwritten).
    """
    from cryptography.hazmat.primitives import serialization

    from factoryfloor.edge_runtime.atomic import atomic_write_bytes

    root = Path(folder)
    secret_path, public_path = root / f"{name}.key", root / f"{name}.pub"
    for path in (secret_path, public_path):
        if path.exists():
            raise SigningError(f"{path} exists; keys are never overwritten (choose --name)")
    root.mkdir(parents=True, exist_ok=True)
    secret = _ed25519().Ed25519PrivateKey.generate()
    secret_pem = secret.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    public_pem = secret.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write_bytes(secret_path, secret_pem, mode=0o600)
    atomic_write_bytes(public_path, public_pem, mode=0o644)
    return secret_path, public_path, key_id_of(_raw_public(secret.public_key()))
