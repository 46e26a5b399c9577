"""The one-file policy bundle (``.ffpolicy``): load and run a trained actor without torch.

File format (version 1)
-----------------------
A ``.ffpolicy`` file is a plain ZIP archive (read with :mod:`zipfile`; nothing is unpickled)
holding exactly these members:

``manifest.json``
    UTF-8 JSON object (``schemas/bundle_manifest.schema.json``). Fields: ``format``
    (``"factoryfloor-policy"``), ``format_version`` (``1``), ``task_id``, ``robot``,
    ``control_rate_hz``, ``observation`` (``keys``: the Dict keys in the order they are
    concatenated; ``spaces``: per key ``shape``, ``dtype``, ``units``; ``flatten``: how),
    ``action`` (``shape``, ``dtype``, ``low``, ``high``, ``units``), ``normalization``
    (``null`` or the VecNormalize settings baked into the graph), ``actor`` (algorithm and
    network description), ``training`` (the run's TrainConfig), ``metrics``, ``command`` and
    ``files`` (per member: ``bytes`` and ``sha256``).
``actor.onnx``
    ONNX graph: one input per observation key (named as the key, float32, or uint8 for camera
    images whose space states ``channel_order`` and the ``camera`` they came from; shape
    ``(batch, *shape)``), one output ``action`` of shape ``(batch, *action_shape)``. It contains
    the flattening, the observation normalisation and the action scaling, so it takes the raw
    env observation and returns the action to send to the env.
``actor.npz`` (MLP actors only)
    The same computation as arrays for the pure-NumPy backend (``np.load(allow_pickle=False)``):
    ``norm_mean``, ``norm_std``, ``norm_low``, ``norm_high`` (float64, per flattened element)
    and ``w0, b0, ..., wN, bN`` (float32 linear layers, ``y = x @ w + b``).

``signature.json`` (signed bundles only)
    The publisher's Ed25519 signature over every other member (``signing.py``).

Loading (``read_bundle``) goes: ZIP hygiene (``bundle_archive``), the manifest's schema and
cross-checks (``bundle_manifest``), every file's size and SHA-256, the signature if there is
one (any change to any byte of any member breaks it), then the trust store's judgement
(``signing.TrustStore``), and the backend's own checks (graph inputs and outputs, NumPy arrays'
shapes and finiteness) and one probe action that must be finite and within the bounds. Anything
else is refused with ``BundleError``, one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from factoryfloor.edge_runtime import signing
from factoryfloor.edge_runtime.bundle_archive import (
    MANIFEST,
    MAX_BUNDLE_BYTES,
    BundleError,
    pack_members,
    unpack,
)
from factoryfloor.edge_runtime.bundle_backends import BACKENDS, NPZ, ONNX, NumpyBackend
from factoryfloor.edge_runtime.bundle_manifest import (
    FORMAT,
    FORMAT_VERSION,
    check_files,
    parse_manifest,
)
from factoryfloor.edge_runtime.signing import SIGNATURE, Signer, SigningError, TrustStore

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "BundleError",
    "BundlePolicy",
    "Signer",
    "TrustStore",
    "bundle_from_bytes",
    "load_bundle",
    "pack_bundle",
    "read_bundle",
    "sha256_hex",
    "sign_bundle",
]

SUFFIX = ".ffpolicy"
Trust = TrustStore | str | Path | None
PROBES = 8  # probe observations run at load
PROBE_TOLERANCE = 1e-4  # |onnxruntime - NumPy| allowed on them (export checks 1e-5)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


def pack_bundle(
    manifest: Mapping[str, Any], members: Mapping[str, bytes], secret_key: Any = None
) -> bytes:
    """The bytes of a bundle: ``manifest`` (its ``files`` filled in here) and the members.

    Args:
        manifest: Every field the manifest schema requires except ``files``.
        members: Member name (``actor.onnx``, ``actor.npz``) -> content.
        secret_key: An Ed25519 secret key (``signing.load_secret_key``) to sign with, or None
            for an unsigned bundle.
    """
    files = {
        name: {"bytes": len(data), "sha256": sha256_hex(data)} for name, data in members.items()
    }
    full = {MANIFEST: _manifest_bytes({**manifest, "files": files}), **members}
    if secret_key is not None:
        full[SIGNATURE] = signing.sign_members(full, secret_key)
    return pack_members(full)


def sign_bundle(data: bytes, secret_key: Any, origin: str = "bundle") -> bytes:
    """``data`` (a valid bundle, signed or not) signed with ``secret_key``; members unchanged."""
    members = _verified_members(data, origin)[1]
    members.pop(SIGNATURE, None)
    members[SIGNATURE] = signing.sign_members(members, secret_key)
    return pack_members(members)


def _verified_members(data: bytes, origin: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    members = unpack(data, origin)
    manifest = parse_manifest(members[MANIFEST], origin)
    check_files(manifest, members, origin)
    return manifest, members


def read_bundle(
    data: bytes, origin: str = "bundle", trust: Trust = None
) -> tuple[dict[str, Any], dict[str, bytes], Signer | None]:
    """Verify a bundle's bytes; return its manifest, members and signer (None: unsigned).

    Args:
        data: The bundle file's bytes.
        origin: Its name, for messages.
        trust: The trust store (``TrustStore.resolve``: a folder, ``$FACTORYFLOOR_TRUST``, or
            the package's own store, which does not require signatures).

    Raises:
        BundleError: For anything but a complete, untampered bundle of ``FORMAT_VERSION`` that
            the trust store accepts.
    """
    manifest, members = _verified_members(data, origin)
    try:
        store = TrustStore.resolve(trust)
        key_id = signing.verify_members(members, origin) if SIGNATURE in members else None
        signer = store.judge(key_id, origin)
    except SigningError as exc:
        raise BundleError(str(exc)) from None
    return manifest, members, signer


class BundlePolicy:
    """A loaded bundle: ``act(obs)`` for one raw env observation, ``act_batch`` for many.

    Attributes:
        manifest: The verified manifest.
        backend: ``"onnxruntime"`` or ``"numpy"``.
        signer: Who signed it (key id, and whether the trust store in force holds the key), or
            None for an unsigned bundle.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        members: dict[str, bytes],
        backend: str,
        signer: Signer | None = None,
        origin: str = "bundle",
    ) -> None:
        self.manifest = manifest
        try:
            self._runner = BACKENDS[backend](manifest, members)
        except BundleError as exc:
            raise BundleError(f"{origin}: {exc}") from None
        self.backend, self.signer = backend, signer
        spaces = manifest["observation"]["spaces"]
        self.keys = list(manifest["observation"]["keys"])
        self._shapes = {k: tuple(spaces[k]["shape"]) for k in self.keys}
        self.dtypes = {k: np.dtype(spaces[k]["dtype"]) for k in self.keys}
        self.has_images = any(dtype == np.uint8 for dtype in self.dtypes.values())
        self.action_shape = tuple(manifest["action"]["shape"])
        self._columns: list[tuple[slice, tuple[int, ...]]] = []  # each key's columns in act_flat
        start = 0
        for key in self.keys:
            size = int(np.prod(self._shapes[key]))
            self._columns.append((slice(start, start + size), self._shapes[key]))
            start += size
        self.obs_size = start
        try:
            self._probe(origin, members)
        except BundleError as exc:
            raise BundleError(
                str(exc) if str(exc).startswith(origin) else f"{origin}: {exc}"
            ) from None

    def _probe(self, origin: str, members: dict[str, bytes]) -> None:
        """Probe actions must be finite, within the bounds, and the same from both members.

        The probes are an all-zero observation and 7 seeded normal ones. Where the bundle has
        ``actor.npz`` (MLP actors), its NumPy actor runs on them too and must agree with the
        serving backend within ``PROBE_TOLERANCE`` (export guarantees 1e-5): an edited graph or
        weight array no longer agrees with its twin, even when onnxruntime's ReLU turns a NaN
        weight into a finite action.
        """
        rng = np.random.default_rng(0)
        probes = {}
        for key in self.keys:
            shape, dtype = (PROBES, *self._shapes[key]), self.dtypes[key]
            values = rng.normal(size=shape) if dtype != np.uint8 else rng.integers(0, 256, shape)
            values[0] = 0
            probes[key] = values.astype(dtype)
        action = self.act_batch(probes).reshape(PROBES, -1)
        low = np.asarray(self.manifest["action"]["low"], np.float32)
        high = np.asarray(self.manifest["action"]["high"], np.float32)
        slack = 1e-4 * (high - low)
        if (
            not np.isfinite(action).all()
            or (action < low - slack).any()
            or (action > high + slack).any()
        ):
            raise BundleError(
                f"{origin}: its actor's probe actions are not finite within the action bounds "
                f"(e.g. {action[0, :4]}; corrupted weights); export the run again"
            )
        if NPZ not in members or self.backend == "numpy":
            return
        twin = NumpyBackend(self.manifest, members).run([probes[k] for k in self.keys])
        worst = float(np.max(np.abs(twin.reshape(action.shape) - action)))
        if not worst <= PROBE_TOLERANCE:
            raise BundleError(
                f"{origin}: {ONNX} and {NPZ} disagree by {worst:.3g} on probe observations "
                f"(over {PROBE_TOLERANCE:g}: one of them was edited or corrupted); export the "
                "run again"
            )

    @property
    def onnx_session(self) -> Any:
        """The onnxruntime ``InferenceSession`` (None with the NumPy backend)."""
        return getattr(self._runner, "session", None)

    @property
    def columns(self) -> list[tuple[slice, tuple[int, ...]]]:
        """Each observation key's columns in a flat row and its shape, in key order."""
        return list(self._columns)

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The action for one raw env observation (Dict of arrays) -> ``action_shape``."""
        batch = {k: np.asarray(obs[k])[None] for k in self.keys}
        action: np.ndarray = self.act_batch(batch)[0]
        return action

    def act_batch(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Actions ``(batch, *action_shape)`` for a Dict of arrays ``(batch, *shape)``.

        Float keys are taken as float32; image keys (``uint8`` in the manifest) must be uint8
        arrays as the camera gave them (the graph converts them), never floats.
        """
        inputs = []
        for key in self.keys:
            if key not in obs:
                raise ValueError(f"observation lacks the key {key!r} (expects {self.keys})")
            if self.dtypes[key] == np.uint8:
                x = np.asarray(obs[key])
                if x.dtype != np.uint8:
                    raise ValueError(
                        f"observation[{key!r}] is {x.dtype}; this bundle takes it as uint8 "
                        "(0-255, as the camera gives it)"
                    )
            else:
                x = np.asarray(obs[key], dtype=np.float32)
            if x.shape[1:] != self._shapes[key]:
                raise ValueError(
                    f"observation[{key!r}] has shape {x.shape}; expected (batch, "
                    f"{', '.join(map(str, self._shapes[key]))})"
                )
            inputs.append(np.ascontiguousarray(x))
        actions: np.ndarray = self._runner.run(inputs).reshape(-1, *self.action_shape)
        return actions

    def act_flat(self, flat: np.ndarray) -> np.ndarray:
        """Actions ``(batch, action_dim)`` for flat float32 observations ``(batch, obs_size)``.

        The columns are the observation keys' values in the bundle's key order (the edge wire
        order); the runtime's hot path, with no per-key checks beyond the total width.
        """
        if self.has_images:
            raise ValueError("this bundle takes uint8 images: give act_batch a dict of arrays")
        if flat.ndim != 2 or flat.shape[1] != self.obs_size:
            raise ValueError(f"flat observations {flat.shape}; expected (batch, {self.obs_size})")
        if flat.dtype != np.float32:
            flat = flat.astype(np.float32)
        batch = len(flat)
        # column slices go in as they are (both backends take strided arrays); only keys with
        # more than one axis need a reshape
        inputs = [
            flat[:, cols] if len(shape) == 1 else flat[:, cols].reshape(batch, *shape)
            for cols, shape in self._columns
        ]
        actions: np.ndarray = self._runner.run(inputs).reshape(batch, -1)
        return actions

    def reset(self) -> None:
        """Start of an episode (the actor is stateless)."""


def load_bundle(path: str | Path, backend: str = "auto", trust: Trust = None) -> BundlePolicy:
    """Load and verify a ``.ffpolicy`` bundle.

    Args:
        path: The bundle file.
        backend: ``"onnxruntime"``, ``"numpy"`` (MLP actors only) or ``"auto"`` (onnxruntime
            when installed, else NumPy).
        trust: A trust store folder (or ``TrustStore``); None: ``$FACTORYFLOOR_TRUST`` if set,
            else the package's store. A folder given either way requires a signature by one
            of its keys; the package's store only marks the signer trusted or not.

    Raises:
        BundleError: For a missing, malformed, tampered, unsupported or untrusted bundle.
        ValueError: For an unknown backend.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no policy bundle at {path}")
    size = path.stat().st_size
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path} is {size} bytes; a bundle is at most {MAX_BUNDLE_BYTES}")
    return bundle_from_bytes(path.read_bytes(), backend, origin=str(path), trust=trust)


def bundle_from_bytes(
    data: bytes, backend: str = "auto", origin: str = "bundle", trust: Trust = None
) -> BundlePolicy:
    """``load_bundle`` of bytes already in memory (see ``load_bundle``)."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    manifest, members, signer = read_bundle(data, origin, trust)
    if backend == "auto":
        import importlib.util

        backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "numpy"
    return BundlePolicy(manifest, members, backend, signer, origin)
