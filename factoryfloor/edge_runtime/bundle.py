"""The one-file policy bundle (``.ffpolicy``): load and run a trained actor without torch.

File format (version 1)
-----------------------
A ``.ffpolicy`` file is a plain ZIP archive (read with :mod:`zipfile`; nothing is unpickled)
holding exactly these members:

``manifest.json``
    UTF-8 JSON object. Required fields (``REQUIRED_FIELDS``): ``format``
    (``"factoryfloor-policy"``), ``format_version`` (``1``), ``task_id``, ``robot``,
    ``control_rate_hz``, ``observation`` (``keys``: the Dict keys in the order they are
    concatenated; ``spaces``: per key ``shape``, ``dtype``, ``units``; ``flatten``: how),
    ``action`` (``shape``, ``dtype``, ``low``, ``high``, ``units``), ``normalization``
    (``null`` or the VecNormalize settings baked into the graph), ``actor`` (algorithm and
    network description), ``training`` (the run's TrainConfig), ``metrics``, ``command`` and
    ``files`` (per member: ``bytes`` and ``sha256``).
``actor.onnx``
    ONNX graph: one float32 input per observation key (named as the key, shape
    ``(batch, *shape)``), one output ``action`` of shape ``(batch, *action_shape)``. It contains
    the flattening, the observation normalisation and the action scaling, so it takes the raw
    env observation and returns the action to send to the env.
``actor.npz`` (MLP actors only)
    The same computation as arrays for the pure-NumPy backend (``np.load(allow_pickle=False)``):
    ``norm_mean``, ``norm_std``, ``norm_low``, ``norm_high`` (float64, per flattened element)
    and ``w0, b0, ..., wN, bN`` (float32 linear layers, ``y = x @ w + b``).

A bundle whose member is missing, whose hash does not match ``files``, whose manifest lacks a
field, or whose format version differs is refused with ``BundleError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BundleError",
    "BundlePolicy",
    "bundle_from_bytes",
    "load_bundle",
    "pack_bundle",
    "read_bundle",
    "sha256_hex",
]

FORMAT = "factoryfloor-policy"
FORMAT_VERSION = 1
SUFFIX = ".ffpolicy"
MANIFEST = "manifest.json"
ONNX = "actor.onnx"
NPZ = "actor.npz"
REQUIRED_FIELDS = (
    "format",
    "format_version",
    "task_id",
    "robot",
    "control_rate_hz",
    "observation",
    "action",
    "normalization",
    "actor",
    "training",
    "metrics",
    "command",
    "files",
)
_MAX_MEMBER_BYTES = 256 << 20
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, np.float32(0.0)),
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(np.float32),
}


class BundleError(ValueError):
    """A policy bundle that is malformed, tampered with or unsupported; the message says why."""


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def pack_bundle(manifest: Mapping[str, Any], members: Mapping[str, bytes]) -> bytes:
    """The bytes of a bundle: ``manifest`` (its ``files`` filled in here) and the members.

    Args:
        manifest: Every field of ``REQUIRED_FIELDS`` except ``files``.
        members: Member name (``actor.onnx``, ``actor.npz``) -> content.
    """
    files = {
        name: {"bytes": len(data), "sha256": sha256_hex(data)} for name, data in members.items()
    }
    full = {**manifest, "files": files}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(full, indent=2, sort_keys=False) + "\n")
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def read_bundle(data: bytes, origin: str = "bundle") -> tuple[dict[str, Any], dict[str, bytes]]:
    """Verify a bundle's bytes; return its manifest and members.

    Raises:
        BundleError: For anything but a complete, untampered bundle of ``FORMAT_VERSION``.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if MANIFEST not in names:
                raise BundleError(f"{origin} is not a policy bundle: it has no {MANIFEST}")
            manifest = json.loads(_read_member(zf, MANIFEST).decode("utf-8"))
            _check_manifest(manifest, origin)
            members = {}
            for name in manifest["files"]:
                if name not in names:
                    raise BundleError(f"{origin} is incomplete: {name} is missing")
                members[name] = _read_member(zf, name)
    except BundleError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise BundleError(
            f"{origin} is not a readable policy bundle (truncated or corrupted: {exc})"
        ) from exc
    for name, entry in manifest["files"].items():
        data_ = members[name]
        if len(data_) != entry.get("bytes") or sha256_hex(data_) != entry.get("sha256"):
            raise BundleError(
                f"{origin}: {name} does not match its SHA-256 in {MANIFEST} (tampered or "
                "corrupted); export the run again"
            )
    return manifest, members


def _read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    if zf.getinfo(name).file_size > _MAX_MEMBER_BYTES:
        raise BundleError(f"bundle member {name} is larger than {_MAX_MEMBER_BYTES} bytes")
    return zf.read(name)


def _check_manifest(manifest: Any, origin: str) -> None:
    if not isinstance(manifest, dict):
        raise BundleError(f"{origin}: {MANIFEST} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{origin}: format is {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{origin}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this factoryfloor reads {FORMAT_VERSION}); export the run again"
        )
    missing = [key for key in REQUIRED_FIELDS if key not in manifest]
    if missing:
        raise BundleError(f"{origin}: {MANIFEST} lacks the fields {missing}")
    if ONNX not in manifest["files"]:
        raise BundleError(f"{origin}: {MANIFEST} lists no {ONNX}")
    for key in ("keys", "spaces"):
        if key not in manifest["observation"]:
            raise BundleError(f"{origin}: {MANIFEST} observation lacks {key!r}")
    for key in ("shape", "low", "high"):
        if key not in manifest["action"]:
            raise BundleError(f"{origin}: {MANIFEST} action lacks {key!r}")


class _OnnxBackend:
    """Runs ``actor.onnx`` with onnxruntime (CPU)."""

    name = "onnxruntime"

    def __init__(self, manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # One observation per robot is a tiny graph: one thread, and no spin-waiting that would
        # take the CPU from the controller or simulator running beside the server.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                members[ONNX], options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{ONNX} is not a valid ONNX graph: {exc}") from exc
        self.keys = list(manifest["observation"]["keys"])

    def run(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Actions ``(batch, *action_shape)`` of float32 inputs, one per observation key."""
        out = self.session.run(["action"], dict(zip(self.keys, inputs, strict=True)))
        return np.asarray(out[0], dtype=np.float32)


class _NumpyBackend:
    """Runs the MLP actor of ``actor.npz`` with NumPy (normalise, layers, squash, scale)."""

    name = "numpy"

    def __init__(self, manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        actor = manifest["actor"]
        if NPZ not in members or actor.get("numpy") is not True:
            raise BundleError(
                "this bundle has no NumPy actor (only MLP actors have one); use "
                "backend='onnxruntime' (pip install onnxruntime)"
            )
        if actor.get("activation") not in ACTIVATIONS:
            raise BundleError(f"unknown activation {actor.get('activation')!r} in the manifest")
        try:
            with np.load(io.BytesIO(members[NPZ]), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            self.norm = [arrays[k] for k in ("norm_mean", "norm_std", "norm_low", "norm_high")]
            n = int(actor["layers"])
            self.layers = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(n)]
        except (KeyError, ValueError, OSError) as exc:
            raise BundleError(f"{NPZ} is malformed: {exc}") from exc
        self.activation = ACTIVATIONS[actor["activation"]]
        self.squash = actor.get("squash") == "tanh"
        self.clip_output = actor.get("output") == "clip"  # PPO: the mean clipped to the bounds
        self.low = np.asarray(manifest["action"]["low"], dtype=np.float32).reshape(-1)
        self.high = np.asarray(manifest["action"]["high"], dtype=np.float32).reshape(-1)

    def run(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Actions ``(batch, action_dim)`` of float32 inputs, one per observation key."""
        flat = np.concatenate([x.reshape(x.shape[0], -1) for x in inputs], axis=1)
        mean, std, low, high = self.norm
        x = np.clip((flat.astype(np.float64) - mean) / std, low, high).astype(np.float32)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = self.activation(x)
        if self.clip_output:
            clipped: np.ndarray = np.clip(x, self.low, self.high).astype(np.float32)
            return clipped
        if self.squash:
            x = np.tanh(x)
        action: np.ndarray = self.low + np.float32(0.5) * (x + np.float32(1.0)) * (
            self.high - self.low
        )
        return action.astype(np.float32)


BACKENDS: dict[str, Callable[[dict[str, Any], dict[str, bytes]], Any]] = {
    "onnxruntime": _OnnxBackend,
    "numpy": _NumpyBackend,
}


class BundlePolicy:
    """A loaded bundle: ``act(obs)`` for one raw env observation, ``act_batch`` for many.

    Attributes:
        manifest: The verified manifest.
        backend: ``"onnxruntime"`` or ``"numpy"``.
    """

    def __init__(self, manifest: dict[str, Any], members: dict[str, bytes], backend: str) -> None:
        self.manifest = manifest
        self._runner = BACKENDS[backend](manifest, members)
        self.backend = backend
        spaces = manifest["observation"]["spaces"]
        self.keys = list(manifest["observation"]["keys"])
        self._shapes = {k: tuple(spaces[k]["shape"]) for k in self.keys}
        self.action_shape = tuple(manifest["action"]["shape"])
        self._columns: list[tuple[slice, tuple[int, ...]]] = []  # each key's columns in act_flat
        start = 0
        for key in self.keys:
            size = int(np.prod(self._shapes[key]))
            self._columns.append((slice(start, start + size), self._shapes[key]))
            start += size
        self.obs_size = start

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
        """Actions ``(batch, *action_shape)`` for a Dict of arrays ``(batch, *shape)``."""
        inputs = []
        for key in self.keys:
            if key not in obs:
                raise ValueError(f"observation lacks the key {key!r} (expects {self.keys})")
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


def load_bundle(path: str | Path, backend: str = "auto") -> BundlePolicy:
    """Load and verify a ``.ffpolicy`` bundle.

    Args:
        path: The bundle file.
        backend: ``"onnxruntime"``, ``"numpy"`` (MLP actors only) or ``"auto"`` (onnxruntime
            when installed, else NumPy).

    Raises:
        BundleError: For a missing, malformed, tampered or unsupported bundle.
        ValueError: For an unknown backend.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no policy bundle at {path}")
    return bundle_from_bytes(path.read_bytes(), backend, origin=str(path))


def bundle_from_bytes(data: bytes, backend: str = "auto", origin: str = "bundle") -> BundlePolicy:
    """``load_bundle`` of bytes already in memory (see ``load_bundle``)."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    manifest, members = read_bundle(data, origin)
    if backend == "auto":
        import importlib.util

        backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "numpy"
    return BundlePolicy(manifest, members, backend)
