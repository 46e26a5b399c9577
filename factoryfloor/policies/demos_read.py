"""Reading the episodes of a Minari dataset folder into checked NumPy arrays (``load_demos``).

``read_dataset`` validates the metadata (``demos_checks``), checks the sidecar's hashes when
there is one, then reads the episodes one by one: each episode folder must hold its
``metadata.json`` and one data file, whose Arrow schema and row count are checked and whose
arrays are fully validated by pyarrow before Minari's own reader decodes them. The decoded
arrays must then have the spaces' dtypes and shapes, finite floats, actions within the action
space's bounds, terminations/truncations set at the last step only, and lengths that match the
metadata. Whatever Minari, pyarrow or PIL raise on a damaged or hostile file becomes one
``DemosError`` line naming the file.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from factoryfloor.policies.demos_checks import (
    EPISODE_METADATA_FIELDS,
    METADATA,
    RECORD,
    DemosError,
    FileError,
    check_fields,
    data_files,
    read_json,
    read_metadata,
    read_sidecar,
    show,
    verify_files,
    what,
)

MAX_EPISODE_BYTES = 2**31
COLUMNS = {"observations", "actions", "rewards", "terminations", "truncations"}


def read_dataset(folder: Path) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """The index (below) and the checked episodes of the dataset folder ``folder``.

    The index: ``dataset_id``, ``verified`` (a factoryfloor sidecar whose hashes match),
    ``storage``, ``env_id`` and ``robot`` (None when the dataset does not say),
    ``observation_space``
    and ``action_space`` (``edge_runtime.spec.space_fields``), ``episodes`` (``{"id", "seed",
    "length", "success", "return"}``), ``total_transitions``, and for a verified dataset every
    field of its sidecar.
    """
    from minari.serialization import deserialize_space

    sidecar = read_sidecar(folder)
    if sidecar is not None:
        verify_files(folder, sidecar)  # before anything else of the folder is parsed
    metadata = read_metadata(folder)
    where = folder / METADATA
    try:
        obs_space = deserialize_space(metadata["observation_space"])
        act_space = deserialize_space(metadata["action_space"])
    except Exception as exc:  # whatever a hostile space makes Minari raise
        raise DemosError(f"{where}: its spaces {what(exc)}; {RECORD}") from None
    _check_spaces(where, obs_space, act_space)
    n = metadata["total_episodes"]
    _check_layout(folder, n)
    storage = _storage(folder, metadata, obs_space, act_space)
    episodes, entries = [], []
    for i in range(n):
        info = _episode_metadata(folder, i)
        episode = _read_episode(storage, folder, i, info["total_steps"], obs_space, act_space)
        episodes.append(episode)
        entries.append({
            "id": i, "seed": info.get("seed") if _is_seed(info.get("seed")) else None,
            "length": info["total_steps"], "success": bool(episode["is_success"][-1]),
            "return": float(episode["rewards"].sum(dtype=np.float64)),
        })  # fmt: skip
    total = sum(e["length"] for e in entries)
    if total != metadata["total_steps"]:
        raise DemosError(
            f"{where} is inconsistent: total_steps={metadata['total_steps']}, but the episodes "
            f"hold {total}; {RECORD}"
        )
    index = _index(metadata, entries, obs_space, act_space)
    if sidecar is not None:
        _match_sidecar(folder, sidecar, index)
        index.update(sidecar, verified=True, episodes=entries)
    return index, episodes


def _check_spaces(where: Path, obs_space: Any, act_space: Any) -> None:
    """A Dict of Box observation spaces (float or uint8) and a float Box action space."""
    subspaces = getattr(obs_space, "spaces", None)
    ok = isinstance(obs_space, gym.spaces.Dict) and bool(subspaces)
    ok = ok and all(
        isinstance(s, gym.spaces.Box) and s.dtype in (np.float32, np.float64, np.uint8)
        and 0 < len(s.shape) <= 4 and all(0 < n <= 2**20 for n in s.shape)
        for s in subspaces.values()
    )  # fmt: skip
    ok = (
        ok and isinstance(act_space, gym.spaces.Box) and act_space.dtype in (np.float32, np.float64)
    )
    ok = ok and len(act_space.shape) == 1 and bool(np.all(np.isfinite(act_space.low)))
    if not ok or not np.all(np.isfinite(act_space.high)):
        raise DemosError(
            f"{where}: spaces {show(obs_space)} / {show(act_space)} are not a Dict of Box "
            f"observations and a bounded float Box action space, as factoryfloor envs have; "
            f"{RECORD}"
        )


def _check_layout(folder: Path, n: int) -> None:
    """Episode folders ``0`` .. ``n - 1``, each with its metadata and one data file."""
    files = data_files(folder)
    want = {str(i) for i in range(n)}
    got = {rel.split("/")[0] for rel in files if "/" in rel}
    top = {rel for rel in files if "/" not in rel} - {METADATA}
    if got != want or top or any(rel.count("/") != 1 for rel in files if "/" in rel):
        missing = sorted(want - got, key=int)
        raise DemosError(
            f"{folder} does not hold episodes 0..{n - 1} as metadata.json says (missing "
            f"{show(missing)}, unexpected {show(sorted((got - want) | top))}); {RECORD}"
        )
    for i in range(n):
        inside = sorted(rel.split("/")[1] for rel in files if rel.startswith(f"{i}/"))
        if len(inside) != 2 or METADATA not in inside:
            raise DemosError(
                f"{folder / str(i)} holds {show(inside)}, not metadata.json and one data file; "
                f"{RECORD}"
            )


def _storage(folder: Path, metadata: dict[str, Any], obs: Any, act: Any) -> Any:
    from minari.dataset._storages import get_minari_storage

    jpeg = metadata.get("jpeg_encoding", True)
    if not isinstance(jpeg, bool):
        raise DemosError(f"{folder / METADATA}: jpeg_encoding={show(jpeg)} is not a bool; {RECORD}")
    return get_minari_storage(metadata["data_format"])(folder, obs, act, jpeg_encoding=jpeg)


def _episode_metadata(folder: Path, i: int) -> dict[str, Any]:
    path = folder / str(i) / METADATA
    try:
        info = read_json(path)
    except FileError as exc:
        raise DemosError(f"{path}: {exc}; {RECORD}") from None
    check_fields(str(path), info, EPISODE_METADATA_FIELDS, strict=False)
    if info["id"] != i:
        raise DemosError(f"{path}: id={info['id']} in the folder of episode {i}; {RECORD}")
    return info  # type: ignore[no-any-return]


def _is_seed(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _read_episode(
    storage: Any, folder: Path, i: int, length: int, obs_space: Any, act_space: Any
) -> dict[str, np.ndarray]:
    """Episode ``i``: its file checked by pyarrow, then decoded by Minari and checked here."""
    (path,) = (p for p in (folder / str(i)).iterdir() if p.name != METADATA)
    spaces = {f"obs/{k}": s for k, s in obs_space.spaces.items()}
    raw = (length + 1) * sum(math.prod(s.shape) * s.dtype.itemsize for s in spaces.values())
    try:
        if raw > MAX_EPISODE_BYTES:
            raise FileError(
                f"its observations would take {raw:,} bytes, over {MAX_EPISODE_BYTES:,}"
            )
        _check_file(path, storage.FORMAT, length + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PIL's decompression-bomb warning, among others
            got = list(storage.get_episodes([i]))
        if len(got) != 1:
            raise FileError(f"holds {len(got)} episodes, not 1")
        episode = _arrays(got[0], length, spaces, act_space)
    except FileError as exc:
        raise DemosError(f"episode file {path}: {exc}; {RECORD}") from None
    except Exception as exc:  # whatever damage makes minari/pyarrow/PIL raise
        raise DemosError(f"episode file {path}: {what(exc)}; {RECORD}") from None
    return episode


def _check_file(path: Path, storage: str, rows: int) -> None:
    """The file's schema has Minari's columns and ``rows`` rows; pyarrow validates it fully."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if storage == "parquet":
        table = pq.read_table(path)
    else:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    names = set(table.column_names)
    if not names >= COLUMNS or names - COLUMNS - {"infos"}:
        raise FileError(f"has columns {show(sorted(names))}, expected {sorted(COLUMNS)} (+ infos)")
    if table.num_rows != rows:
        raise FileError(f"has {table.num_rows} rows, expected {rows} (steps + 1, from {METADATA})")
    table.validate(full=True)


def _arrays(
    episode: dict[str, Any], length: int, spaces: dict[str, Any], act_space: Any
) -> dict[str, np.ndarray]:
    """The ``Demos`` arrays of one decoded Minari episode, every dtype, shape and value checked."""
    obs = episode["observations"]
    if not isinstance(obs, dict) or set(obs) != {k[4:] for k in spaces}:
        raise FileError(f"observations have keys {show(sorted(obs))}, not those of the space")
    out: dict[str, np.ndarray] = {}
    for key, space in spaces.items():
        out[key] = _array(key, obs[key[4:]], (length + 1, *space.shape), space.dtype)
    actions = _array("actions", episode["actions"], (length, *act_space.shape), act_space.dtype)
    rewards = np.asarray(episode["rewards"])
    if rewards.dtype.kind not in "fiu":
        raise FileError(f"rewards have dtype {rewards.dtype}, not a number")
    out["actions"] = _array("actions", actions.astype(np.float32), (length, *act_space.shape))
    out["rewards"] = _array("rewards", rewards.astype(np.float32), (length,))
    for key, name in (("terminated", "terminations"), ("truncated", "truncations")):
        out[key] = _array(name, episode[name], (length,), np.dtype(bool))
    infos = episode.get("infos") or {}
    if isinstance(infos, dict) and "is_success" in infos:  # Minari: the reset's info first
        out["is_success"] = _array("infos/is_success", infos["is_success"], (length + 1,), bool)[1:]
    else:  # a dataset without is_success: an episode succeeded where it terminated
        out["is_success"] = out["terminated"].copy()
    low, high = act_space.low.astype(np.float32), act_space.high.astype(np.float32)
    outside = int(np.count_nonzero((out["actions"] < low) | (out["actions"] > high)))
    done = out["terminated"] | out["truncated"]
    if outside:
        raise FileError(f"actions: {outside} values outside the action space's [low, high]")
    if done[:-1].any():
        raise FileError("terminations/truncations are set before the last step")
    return out


def _array(key: str, value: Any, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
    """``value`` as an array of exactly ``shape`` and ``dtype`` (default: its own), finite."""
    a = np.asarray(value)
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise FileError(f"{key} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if a.shape != tuple(shape):
        raise FileError(f"{key} has shape {a.shape}, expected {tuple(shape)} (from {METADATA})")
    if a.dtype.kind == "f":
        bad = a.size - int(np.count_nonzero(np.isfinite(a)))
        if bad:
            raise FileError(f"{key} holds {bad} non-finite (NaN or infinite) values of {a.size}")
    return a


def _index(
    metadata: dict[str, Any], entries: list[dict[str, Any]], obs_space: Any, act_space: Any
) -> dict[str, Any]:
    from factoryfloor.edge_runtime.spec import space_fields

    observation, (action,) = space_fields(obs_space, act_space)
    env_id = None
    spec = metadata.get("env_spec")
    if isinstance(spec, str):
        try:
            env_id = json.loads(spec).get("id")
        except (ValueError, AttributeError):
            env_id = None
    index: dict[str, Any] = {
        "dataset_id": metadata["dataset_id"], "verified": False, "storage": metadata["data_format"],
        "env_id": env_id if isinstance(env_id, str) else None, "robot": None,
        "observation_space": observation, "action_space": action, "episodes": entries,
        "total_transitions": sum(e["length"] for e in entries),
    }  # fmt: skip
    return index


def _match_sidecar(folder: Path, sidecar: dict[str, Any], index: dict[str, Any]) -> None:
    """The (hash-verified) data agrees with what the sidecar says about it."""
    ours = [{k: e[k] for k in ("id", "length", "success")} for e in index["episodes"]]
    theirs = [{k: e[k] for k in ("id", "length", "success")} for e in sidecar["episodes"]]
    returns = zip(index["episodes"], sidecar["episodes"], strict=False)
    for ok, text in (
        (ours == theirs, "its episodes' lengths or successes differ from the data"),
        (all(math.isclose(a["return"], b["return"], rel_tol=1e-4, abs_tol=1e-3)
             for a, b in returns), "its episodes' returns differ from the data's rewards"),
        ([e["seed"] for e in index["episodes"]] == [e["seed"] for e in sidecar["episodes"]],
         "its seeds differ from the episodes' metadata"),
        (sidecar["storage"] == index["storage"], "its storage differs from metadata.json"),
        (sidecar["observation_space"] == index["observation_space"]
         and sidecar["action_space"] == index["action_space"], "its spaces differ from the data's"),
        (sidecar["dataset_id"] == index["dataset_id"], "its dataset_id differs from metadata.json"),
    ):  # fmt: skip
        if not ok:
            raise DemosError(f"{folder} is inconsistent: factoryfloor.json: {text}; {RECORD}")
