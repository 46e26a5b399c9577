"""Checkpoints of a training run: atomic files committed by a manifest of their SHA-256.

A checkpoint is a folder (``checkpoints/last``, ``checkpoints/best``) holding:

* data files with unique names (``model-step1500-3fa2c1d0.zip``, ``replay_buffer-...pkl``), each
  written to a temporary file, flushed and moved into place with ``os.replace``;
* ``checkpoint.json``, written the same way *after* them: the step counter, run metadata and
  the name, size and SHA-256 of every data file. Replacing it is the commit point, and files of
  earlier checkpoints are deleted only afterwards, so a kill at any moment leaves either the
  old checkpoint or the new one, complete. A file that does not match its hash is refused.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# re-exported: run folders and checkpoint files are written through them
from factoryfloor.policies.atomic import atomic_write as atomic_write
from factoryfloor.policies.atomic import atomic_write_text as atomic_write_text

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 1

Writer = Callable[[Path], object]  # writes one file at the given (temporary) path


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or corrupted; the message says what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: its manifest and the path of each data file by role."""

    folder: Path
    manifest: dict[str, Any]
    paths: dict[str, Path]

    @property
    def num_timesteps(self) -> int:
        """Env steps trained when the checkpoint was written."""
        return int(self.manifest["num_timesteps"])


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint(
    folder: Path, num_timesteps: int, writers: dict[str, tuple[str, Writer]], meta: dict[str, Any]
) -> None:
    """Write a complete checkpoint into ``folder`` (see the module doc).

    Args:
        folder: Checkpoint folder; created when missing.
        num_timesteps: Env steps trained so far (steps).
        writers: Role -> (file suffix such as ``".zip"``, function writing the file).
        meta: JSON-serialisable metadata stored in the manifest.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"step{num_timesteps}-{uuid.uuid4().hex[:8]}"
    files = {}
    for role, (suffix, write) in writers.items():
        path = folder / f"{role}-{tag}{suffix}"
        atomic_write(path, write)
        files[role] = {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_of(path)}
    manifest = {"format": FORMAT_VERSION, "num_timesteps": num_timesteps, **meta, "files": files}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    keep = {f["name"] for f in files.values()} | {MANIFEST}
    for stale in folder.iterdir():
        if stale.name not in keep and stale.is_file():
            stale.unlink(missing_ok=True)


def read_checkpoint(folder: Path) -> Checkpoint:
    """Read and verify a checkpoint written by ``write_checkpoint``.

    Raises:
        CheckpointError: When the folder holds no checkpoint, the manifest is unreadable, or a
            data file is missing or does not match its recorded size and SHA-256.
    """
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {folder} (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        int(manifest["num_timesteps"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is corrupted (not a checkpoint manifest: {exc})") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format {manifest.get('format')!r}, not {FORMAT_VERSION}")
    paths = {}
    for role, entry in files.items():
        data = folder / str(entry.get("name", ""))
        if not data.is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {data.name} is missing")
        if data.stat().st_size != entry.get("bytes") or sha256_of(data) != entry.get("sha256"):
            raise CheckpointError(
                f"checkpoint file {data} is corrupted (its SHA-256 does not match {MANIFEST}); "
                "restore it from a backup or start a new run"
            )
        paths[role] = data
    return Checkpoint(folder, manifest, paths)


def load_file(checkpoint: Checkpoint, role: str, load: Callable[[Path], Any]) -> Any:
    """``load(path)`` of a data file, with any failure turned into a ``CheckpointError``."""
    if role not in checkpoint.paths:
        raise CheckpointError(f"checkpoint {checkpoint.folder} has no {role!r} file")
    path = checkpoint.paths[role]
    try:
        return load(path)
    except Exception as exc:  # any loader failure is a bad file; say which one
        raise CheckpointError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc


def global_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's and torch's global random generators."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``global_rng_state`` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def pickle_writer(obj: Any) -> Writer:
    """A ``Writer`` that pickles ``obj`` (local checkpoints only; never network input)."""

    def write(path: Path) -> None:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)

    return write


def unpickle(path: Path) -> Any:
    """Load a pickle written by ``pickle_writer`` (a file of this run's own checkpoint)."""
    with open(path, "rb") as f:
        return pickle.load(f)
