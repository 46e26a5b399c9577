"""The two ways a bundle's actor runs: onnxruntime on ``actor.onnx``, NumPy on ``actor.npz``.

Each backend checks its member when it is built: the graph's inputs and outputs against the
manifest, and the arrays' shapes, dtypes and finiteness (``np.load(allow_pickle=False)``).
Failures are ``BundleError`` without the file name (``BundlePolicy`` adds it).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from factoryfloor.edge_runtime.bundle_archive import BundleError

ONNX = "actor.onnx"
NPZ = "actor.npz"
ONNX_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}  # manifest dtype -> graph's
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, np.float32(0.0)),
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(np.float32),
}


class OnnxBackend:
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
            raise BundleError(f"{ONNX} is not a valid ONNX graph: {str(exc)[:160]}") from None
        self.keys = list(manifest["observation"]["keys"])
        _check_graph_io(self.session, manifest)

    def run(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Actions ``(batch, *action_shape)`` of float32 inputs, one per observation key."""
        out = self.session.run(["action"], dict(zip(self.keys, inputs, strict=True)))
        return np.asarray(out[0], dtype=np.float32)


class NumpyBackend:
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
        except (KeyError, ValueError, OSError, EOFError) as exc:
            raise BundleError(f"{NPZ} is malformed: {str(exc)[:160]}") from None
        _check_arrays(self.norm, self.layers, manifest)
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


def _check_graph_io(session: Any, manifest: dict[str, Any]) -> None:
    """The graph takes one float32 input per observation key and returns ``action``."""
    spaces = manifest["observation"]["spaces"]
    inputs = {i.name: i for i in session.get_inputs()}
    if set(inputs) != set(spaces):
        raise BundleError(f"{ONNX} takes inputs {sorted(inputs)}, the manifest {sorted(spaces)}")
    for name, info in inputs.items():
        dtype = spaces[name]["dtype"]
        if info.type != ONNX_TYPES[dtype] or list(info.shape[1:]) != list(spaces[name]["shape"]):
            raise BundleError(
                f"{ONNX} input {name} is {info.type} {info.shape}; the manifest says {dtype} "
                f"(batch, {spaces[name]['shape']})"
            )
    outputs = [o.name for o in session.get_outputs()]
    if outputs != ["action"]:
        raise BundleError(f"{ONNX} returns {outputs}; a bundle's graph returns ['action']")


def _check_arrays(
    norm: list[np.ndarray], layers: list[tuple[np.ndarray, np.ndarray]], manifest: dict[str, Any]
) -> None:
    """``actor.npz``'s arrays chain from the observation width to the action width, finite."""
    spaces = manifest["observation"]["spaces"]
    width = sum(int(np.prod(spaces[k]["shape"])) for k in manifest["observation"]["keys"])
    for name, array in zip(("norm_mean", "norm_std", "norm_low", "norm_high"), norm, strict=True):
        if array.shape != (width,) or array.dtype.kind != "f":
            raise BundleError(f"{NPZ} {name} is {array.dtype} {array.shape}; expected ({width},)")
    if not (norm[1] > 0).all():
        raise BundleError(f"{NPZ} norm_std has entries <= 0 or NaN")
    for i, (w, b) in enumerate(layers):
        if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
            raise BundleError(f"{NPZ} layer {i}: w {w.shape}, b {b.shape} after width {width}")
        if w.dtype != np.float32 or b.dtype != np.float32:
            raise BundleError(f"{NPZ} layer {i} is {w.dtype}/{b.dtype}, not float32")
        width = w.shape[1]
    if width != int(np.prod(manifest["action"]["shape"])):
        raise BundleError(f"{NPZ}'s last layer gives {width} values, the action has another size")
    mean, std, low, high = norm
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and not np.isnan(low).any()):
        raise BundleError(f"{NPZ} normalisation holds non-finite values")
    if np.isnan(high).any() or not (low < high).all():
        raise BundleError(f"{NPZ} normalisation clip bounds are not low < high")
    for i, (w, b) in enumerate(layers):
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise BundleError(f"{NPZ} layer {i} holds non-finite weights")


BACKENDS: dict[str, Callable[[dict[str, Any], dict[str, bytes]], Any]] = {
    "onnxruntime": OnnxBackend,
    "numpy": NumpyBackend,
}
