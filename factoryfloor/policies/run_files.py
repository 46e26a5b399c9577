"""Pickle-free data files of a checkpoint: VecNormalize statistics, replay buffer, random states.

Nothing here unpickles, so loading a run folder received from someone else cannot run code:

* ``vecnormalize-*.json``: ``{"format": "factoryfloor-vecnormalize", "version": 1, "training",
  "norm_obs", "norm_reward", "norm_obs_keys", "clip_obs", "clip_reward", "gamma", "epsilon",
  "obs_rms", "ret_rms"}``; a running mean/std is ``{"shape", "mean", "var", "count"}`` (float64
  written with ``repr`` precision, so it reads back exactly), ``obs_rms`` one per key for Dict
  observations. Restored onto a fresh ``VecNormalize(venv, ...)``.
* ``replay_buffer-*.npz`` (read with ``np.load(..., allow_pickle=False)``): every NumPy array
  attribute of the SB3 buffer (``observations/<key>``, ``actions``, ``rewards``, ``dones``,
  ``timeouts``, ..., and for ``HerReplayBuffer`` its episode bookkeeping ``ep_start``,
  ``ep_length``, ``_current_ep_start``), the per-transition ones cut to the rows filled, and
  ``__meta__``: a JSON string with the class, capacity, ``n_envs``, ``pos`` and ``full``.
  Restored into the buffer that the freshly loaded model already has, after checking every
  name, shape and dtype. ``HerReplayBuffer.infos`` (dicts, kept only with ``copy_info_dict``,
  which factoryfloor does not use) is not saved.
* ``rng-*.json``: Python's ``random`` state, NumPy's global (legacy MT19937) state, torch's CPU
  (and CUDA) generator bytes as hex, and the ``bit_generator.state`` of the action space's and
  each env's ``np.random.Generator``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from factoryfloor.policies.checkpoint import Writer

VECNORMALIZE = "factoryfloor-vecnormalize"
REPLAY_BUFFER = "factoryfloor-replay-buffer"
RNG = "factoryfloor-rng"
META = "__meta__"
BIT_GENERATORS = {g.__name__: g for g in (np.random.PCG64, np.random.MT19937, np.random.Philox)}


def _check(ok: bool, what: str) -> None:
    """Raise ``ValueError(what)`` unless ``ok`` (``load_file`` names the file)."""
    if not ok:
        raise ValueError(what)


def _number(data: dict[str, Any], key: str) -> float:
    value: Any = data.get(key)
    _check(isinstance(value, int | float) and not isinstance(value, bool), f"{key} not a number")
    _check(np.isfinite(value), f"{key} is not finite")
    return float(value)


def _words(value: Any, n: int) -> bool:
    """True for a list of ``n`` integers in [0, 2**32) (a Mersenne Twister state)."""
    ok = isinstance(value, list) and len(value) == n
    return ok and all(type(v) is int and 0 <= v < 2**32 for v in value)


def _flag(data: dict[str, Any], key: str) -> bool:
    _check(isinstance(data.get(key), bool), f"{key} must be true or false")
    return bool(data[key])


def _not_a_pickle(head: bytes) -> None:
    """Refuse, by its first bytes, a file that is a pickle (say so rather than a parse error)."""
    _check(not head.startswith(b"\x80"), "it is a pickle, which factoryfloor never loads")


def _json_object(path: Path, kind: str) -> dict[str, Any]:
    raw = path.read_bytes()
    _not_a_pickle(raw[:1])
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not a JSON file ({exc})") from exc
    _check(isinstance(data, dict) and data.get("format") == kind, f"not a {kind} file")
    _check(data.get("version") == 1, f"{kind} version {data.get('version')!r} is not 1")
    return data  # type: ignore[no-any-return]


def _write_json(data: dict[str, Any]) -> Writer:
    return lambda path: path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


# --- VecNormalize -------------------------------------------------------------------------
def _rms_json(rms: RunningMeanStd) -> dict[str, Any]:
    mean = np.asarray(rms.mean, np.float64)
    var = np.asarray(rms.var, np.float64)
    count = float(rms.count)
    return {"shape": list(mean.shape), "mean": mean.tolist(), "var": var.tolist(), "count": count}


def _rms(data: Any, name: str) -> RunningMeanStd:
    _check(isinstance(data, dict), f"{name} must be an object")
    shape = data.get("shape")
    sizes = isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
    _check(sizes, f"{name}.shape must be a list of sizes")
    rms = RunningMeanStd(shape=tuple(shape))
    for field in ("mean", "var"):
        value = np.asarray(data.get(field), dtype=np.float64)
        _check(value.shape == tuple(shape), f"{name}.{field} has shape {value.shape}, not {shape}")
        _check(bool(np.isfinite(value).all()), f"{name}.{field} has non-finite values")
        setattr(rms, field, value)
    _check(bool(np.all(rms.var >= 0)), f"{name}.var has negative values")
    rms.count = _number(data, "count")
    _check(rms.count > 0, f"{name}.count must be > 0")
    return rms


def vecnormalize_writer(vecnorm: VecNormalize) -> Writer:
    """A ``Writer`` of ``vecnorm``'s statistics and settings as JSON (see the module doc)."""
    obs_rms: dict[str, Any] | None = None
    if vecnorm.norm_obs:
        rms: Any = vecnorm.obs_rms
        dict_obs = isinstance(rms, dict)
        obs_rms = {k: _rms_json(r) for k, r in rms.items()} if dict_obs else _rms_json(rms)
    keys = vecnorm.norm_obs_keys
    data = {"format": VECNORMALIZE, "version": 1, "norm_obs_keys": keys and list(keys)}
    data |= {k: bool(getattr(vecnorm, k)) for k in ("training", "norm_obs", "norm_reward")}
    data |= {k: float(getattr(vecnorm, k)) for k in ("clip_obs", "clip_reward", "gamma", "epsilon")}
    return _write_json({**data, "obs_rms": obs_rms, "ret_rms": _rms_json(vecnorm.ret_rms)})


@dataclass
class VecNormalizeStats:
    """What a ``vecnormalize-*.json`` file holds, checked.

    Attributes:
        settings: ``VecNormalize`` constructor arguments (training, norm_obs, ..., epsilon).
        obs_rms: Per-key running statistics (Dict observations), one (Box), or None.
        ret_rms: Running statistics of the discounted return.
    """

    settings: dict[str, Any]
    obs_rms: dict[str, RunningMeanStd] | RunningMeanStd | None
    ret_rms: RunningMeanStd


def read_vecnormalize(path: Path) -> VecNormalizeStats:
    """Read and check a file of ``vecnormalize_writer``.

    Raises:
        ValueError: Saying what is wrong with it.
    """
    data = _json_object(path, VECNORMALIZE)
    keys = data.get("norm_obs_keys")
    names = isinstance(keys, list) and all(isinstance(k, str) for k in keys)
    _check(keys is None or names, "norm_obs_keys must be null or a list of names")
    settings: dict[str, Any] = {k: _flag(data, k) for k in ("training", "norm_obs", "norm_reward")}
    settings |= {k: _number(data, k) for k in ("clip_obs", "clip_reward", "gamma", "epsilon")}
    settings["norm_obs_keys"] = keys
    raw: Any = data.get("obs_rms")
    obs_rms: dict[str, RunningMeanStd] | RunningMeanStd | None = None
    if settings["norm_obs"] and keys is not None:
        per_key = isinstance(raw, dict) and sorted(raw) == sorted(keys)
        _check(per_key, f"obs_rms must hold one entry per norm_obs_keys {keys}")
        obs_rms = {k: _rms(raw[k], f"obs_rms[{k!r}]") for k in keys}
    elif settings["norm_obs"]:
        obs_rms = _rms(raw, "obs_rms")
    return VecNormalizeStats(settings, obs_rms, _rms(data.get("ret_rms"), "ret_rms"))


def load_vecnormalize(path: Path, venv: VecEnv) -> VecNormalize:
    """A fresh ``VecNormalize(venv, ...)`` with the settings and statistics of ``path``.

    Raises:
        ValueError: When the file is not one of ``vecnormalize_writer`` or does not fit
            ``venv``'s observation space.
    """
    stats = read_vecnormalize(path)
    vecnorm = VecNormalize(venv, **stats.settings)
    fresh: Any = vecnorm.obs_rms if stats.obs_rms is not None else None
    if isinstance(stats.obs_rms, dict):
        for key, rms in stats.obs_rms.items():
            shape = fresh[key].mean.shape
            _check(rms.mean.shape == shape, f"obs_rms[{key!r}] is not of the env's shape {shape}")
    elif stats.obs_rms is not None:
        shape = fresh.mean.shape
        _check(stats.obs_rms.mean.shape == shape, f"obs_rms is not of the env's shape {shape}")
    if stats.obs_rms is not None:
        vecnorm.obs_rms = stats.obs_rms  # type: ignore[assignment]
    vecnorm.ret_rms = stats.ret_rms
    return vecnorm


# --- replay buffer ------------------------------------------------------------------------
def _slots(buffer: ReplayBuffer) -> Iterator[tuple[str, np.ndarray, bool]]:
    """(name in the file, the buffer's array, one row per transition) of every array."""
    for name, value in vars(buffer).items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for key, array in items:
            if not isinstance(array, np.ndarray):
                continue
            if array.dtype == object:
                empty = name == "infos" and not getattr(buffer, "copy_info_dict", False)
                _check(empty, f"cannot save the replay buffer's {name} (Python objects)")
                continue  # HerReplayBuffer.infos: dicts never written without copy_info_dict
            per_row = array.ndim >= 2 and array.shape[:2] == (buffer.buffer_size, buffer.n_envs)
            yield (name if key is None else f"{name}/{key}"), array, per_row


def replay_buffer_writer(buffer: ReplayBuffer) -> Writer:
    """A ``Writer`` of ``buffer`` as an ``.npz`` file (see the module doc)."""

    def write(path: Path) -> None:
        rows = buffer.buffer_size if buffer.full else buffer.pos
        arrays = {name: a[:rows] if per_row else a for name, a, per_row in _slots(buffer)}
        meta = {"format": REPLAY_BUFFER, "version": 1, "class": type(buffer).__name__}
        meta |= {k: int(getattr(buffer, k)) for k in ("buffer_size", "n_envs", "pos")}
        meta["full"] = bool(buffer.full)
        with open(path, "wb") as f:  # a file object: np.savez adds no ".npz" to the name
            np.savez(f, **{META: np.array(json.dumps(meta))}, **arrays)  # type: ignore[arg-type]

    return write


@dataclass
class ReplayBufferFile:
    """The arrays of a ``replay_buffer-*.npz`` and its ``__meta__`` (``size()`` as SB3's)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def n_envs(self) -> int:
        """Parallel envs: each row holds ``n_envs`` transitions."""
        return int(self.meta["n_envs"])

    def size(self) -> int:
        """Rows filled (``buffer_size`` when full, else ``pos``)."""
        return int(self.meta["buffer_size"] if self.meta["full"] else self.meta["pos"])


def read_replay_buffer(path: Path) -> ReplayBufferFile:
    """Read a file of ``replay_buffer_writer`` (``allow_pickle=False``), meta checked.

    Raises:
        ValueError: When it is not such a file (or holds pickled object arrays).
    """
    with open(path, "rb") as f:
        head = f.read(4)
    _not_a_pickle(head)
    _check(head == b"PK\x03\x04", "not an .npz file")
    with np.load(path, allow_pickle=False) as npz:
        _check(META in npz.files, f"not a {REPLAY_BUFFER} file (no {META})")
        meta = json.loads(str(npz[META][()]))
        arrays = {name: npz[name] for name in npz.files if name != META}
    ours = isinstance(meta, dict) and meta.get("format") == REPLAY_BUFFER
    _check(ours and meta.get("version") == 1, f"{META} is not that of a {REPLAY_BUFFER} file")
    for key in ("buffer_size", "n_envs", "pos"):
        _check(type(meta.get(key)) is int and meta[key] >= 0, f"{META}.{key} not an integer >= 0")
    _check(isinstance(meta.get("full"), bool), f"{META}.full must be true or false")
    _check(meta["pos"] < max(meta["buffer_size"], 1), f"{META}.pos out of range")
    return ReplayBufferFile(arrays, meta)


def restore_replay_buffer(path: Path, buffer: ReplayBuffer) -> None:
    """Copy the contents of a ``replay_buffer_writer`` file into ``buffer`` (same class).

    Every array of ``buffer`` must be in the file with its dtype and shape (the per-transition
    ones cut to the rows filled), and no other; nothing is changed unless all of them fit.

    Raises:
        ValueError: Naming the first mismatch.
    """
    saved = read_replay_buffer(path)
    meta, arrays = saved.meta, saved.arrays
    kind = type(buffer).__name__
    _check(meta["class"] == kind, f"holds a {meta['class']}, but the model has a {kind}")
    for key in ("buffer_size", "n_envs"):
        value = getattr(buffer, key)
        _check(meta[key] == value, f"{key} is {meta[key]}, but the model's buffer has {value}")
    rows = saved.size()
    slots = {name: (array, per_row) for name, array, per_row in _slots(buffer)}
    missing, extra = sorted(set(slots) - set(arrays)), sorted(set(arrays) - set(slots))
    _check(not missing and not extra, f"arrays missing {missing}, unexpected {extra}")
    for name, (array, per_row) in slots.items():
        shape = (rows, *array.shape[1:]) if per_row else array.shape
        got = arrays[name]
        fits = got.dtype == array.dtype and got.shape == shape
        _check(fits, f"{name} is {got.dtype}{list(got.shape)}, not {array.dtype}{list(shape)}")
    for name in ("ep_start", "ep_length", "_current_ep_start"):  # HER's indices into the rows
        if name in arrays:
            values, size = arrays[name], buffer.buffer_size
            inside = bool(np.all((values >= 0) & (values <= size)))
            _check(inside, f"{name} holds indices outside [0, {size}]")
    for name, (array, per_row) in slots.items():
        (array[:rows] if per_row else array)[...] = arrays[name]  # in place
    buffer.pos, buffer.full = meta["pos"], meta["full"]


# --- random states ------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """``bit_generator.state`` (NumPy arrays and integers inside) as JSON values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def rng_writer(action_space_rng: np.random.Generator, env_rngs: list[Any]) -> Writer:
    """A ``Writer`` of every random state a resumed run needs (see the module doc).

    Args:
        action_space_rng: The model's ``action_space.np_random``.
        env_rngs: Each training env's ``np_random`` (``VecEnv.get_attr("np_random")``).
    """
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(key, np.ndarray)
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    numpy_state = {"bit_generator": name, "key": key.tolist(), "pos": int(pos)}
    numpy_state |= {"has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
    data = {
        "format": RNG,
        "version": 1,
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": numpy_state,
        "torch": _hex(torch.get_rng_state()),
        "torch_cuda": None if cuda is None else [_hex(s) for s in cuda],
        "action_space": _plain(action_space_rng.bit_generator.state),
        "envs": [_plain(g.bit_generator.state) for g in env_rngs],
    }
    return _write_json(data)


def _hex(state: torch.Tensor) -> str:
    return bytes(state.numpy()).hex()


@dataclass
class RandomStates:
    """A checked ``rng-*.json``: global states (for ``set_global_rng_state``), generators."""

    global_states: dict[str, Any]
    action_space: np.random.Generator
    envs: list[np.random.Generator]


def generator(state: Any) -> np.random.Generator:
    """A ``np.random.Generator`` in a saved ``bit_generator.state`` (known generators only)."""
    known = isinstance(state, dict) and state.get("bit_generator") in BIT_GENERATORS
    _check(known, f"a generator state must name one of {sorted(BIT_GENERATORS)}")
    bit_generator = BIT_GENERATORS[state["bit_generator"]]()
    inner = state.get("state")
    if state["bit_generator"] == "MT19937" and isinstance(inner, dict):
        state = {**state, "state": {**inner, "key": np.asarray(inner.get("key"), np.uint32)}}
    bit_generator.state = state  # NumPy checks the fields
    return np.random.Generator(bit_generator)


def read_rng(path: Path) -> RandomStates:
    """Read and check a file of ``rng_writer``.

    Raises:
        ValueError: Saying what is wrong with it.
    """
    data = _json_object(path, RNG)
    py: Any = data.get("python")
    npy: Any = data.get("numpy")
    _check(isinstance(py, dict) and isinstance(npy, dict), "python and numpy states missing")
    gauss_next = py.get("gauss_next")
    ok = py.get("version") == 3 and _words(py.get("state"), 625)
    _check(ok and (gauss_next is None or isinstance(gauss_next, float)), "python: bad state")
    ok = npy.get("bit_generator") == "MT19937" and _words(npy.get("key"), 624)
    ok = ok and all(type(npy.get(k)) is int for k in ("pos", "has_gauss"))
    _check(ok and isinstance(npy.get("cached_gaussian"), float), "numpy: not a MT19937 state")
    hexes = [data.get("torch"), *(data.get("torch_cuda") or [])]
    _check(all(isinstance(h, str) for h in hexes), "torch states must be hex strings")
    _check(len(hexes[0]) == 2 * torch.get_rng_state().numel(), "torch: not a CPU generator state")
    tensors = [torch.tensor(list(bytes.fromhex(h)), dtype=torch.uint8) for h in hexes]
    envs: Any = data.get("envs")
    _check(isinstance(envs, list), "envs must be a list of generator states")
    key = np.array(npy["key"], np.uint32)
    state = {
        "python": (3, tuple(py["state"]), gauss_next),
        "numpy": ("MT19937", key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]),
        "torch": tensors[0],
        "torch_cuda": tensors[1:] if data.get("torch_cuda") is not None else None,
    }
    return RandomStates(state, generator(data.get("action_space")), [generator(s) for s in envs])


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore Python's, NumPy's and torch's global generators (``RandomStates.global_states``)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("torch_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
