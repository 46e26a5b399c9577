"""Checkpoints of a training run: atomic files committed by a manifest of their SHA-256.

A checkpoint is a folder (``checkpoints/last``, ``checkpoints/best``) holding:

* data files with unique names (``model-step1500-3fa2c1d0.zip``, ``replay_buffer-...npz``), each
  written to a temporary file, flushed and moved into place with ``os.replace``;
* ``checkpoint.json``, written the same way *after* them: the step counter, run metadata and
  the name, size and SHA-256 of every data file. Replacing it is the commit point, and files of
  earlier checkpoints are deleted only afterwards, so a kill at any moment leaves either the
  old checkpoint or the new one, complete. A file that does not match its hash is refused.

No data file is a pickle (format 2; see ``factoryfloor.policies.run_files``), and every field of
``checkpoint.json`` is type-checked when it is read, so a run folder received from someone else
can be evaluated, exported or resumed without running code from it.

``evaluations.jsonl`` of the run folder is read here too (``read_evaluations``): one JSON object
per line. It is appended to after each evaluation, so a kill while writing can leave its last
line incomplete (no newline at its end): such a line is ignored with a note, and removed when
the run is resumed (kept in ``evaluations.superseded.jsonl``). Any other bad line is refused
with its line number. Evaluations later than a resumed checkpoint are moved to that file too,
never deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# re-exported: run folders and checkpoint files are written through them
from factoryfloor.policies.atomic import atomic_write as atomic_write
from factoryfloor.policies.atomic import atomic_write_text as atomic_write_text

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 2  # 1: pickled VecNormalize, replay buffer and random states (not loaded)
EVALUATIONS = "evaluations.jsonl"
SUPERSEDED = "evaluations.superseded.jsonl"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_]*$")
_STEP_TAG = re.compile(r"^[a-z][a-z0-9_]*-step(\d+)-[0-9a-f]{8}\.")  # write_checkpoint's names
# optional manifest fields -> (accepted types, description)
_NUMBER = (int, float)
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "task": ((str,), "a string"),
    "algo": ((str,), "a string"),
    "saved_at": ((str,), "a string"),
    "complete": ((bool,), "true or false"),
    "interrupted_by": ((str, type(None)), "a string or null"),
    "stopped_because": ((str, type(None)), "a string or null"),
    "wall_time_s": (_NUMBER, "a number"),
    "eval_wall_time_s": (_NUMBER, "a number"),
    "best_success_rate": (_NUMBER, "a number"),
    "best_mean_return": ((*_NUMBER, type(None)), "a number or null"),
    "last_eval_step": ((int,), "an integer"),
    "evaluation": ((dict,), "an object"),
}

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

    @property
    def manifest_path(self) -> Path:
        """The checkpoint's ``checkpoint.json``."""
        return self.folder / MANIFEST


def notice(text: str) -> None:
    """One line on stderr about a run folder that is used anyway (not an error)."""
    print(f"factoryfloor: note: {text}", file=sys.stderr)


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

    Every field of the manifest is checked: ``format`` is ``FORMAT_VERSION``,
    ``num_timesteps`` an integer >= 0, ``files`` an object of role -> ``{"name": file name in
    the folder, "bytes": integer >= 0, "sha256": 64 hex digits}``, the optional metadata fields
    of the types ``RunCallback`` writes, ``last_eval_step`` (the last evaluation this checkpoint
    knows of) at most ``num_timesteps`` and a best checkpoint's ``evaluation`` at its step.

    Raises:
        CheckpointError: When the folder holds no checkpoint, the manifest is unreadable or
            inconsistent, or a data file is missing or does not match its size and SHA-256.
    """
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {folder} (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise _corrupted(path, f"not JSON: {exc}") from exc
    files = _check_manifest(path, manifest)
    paths = {}
    for role, entry in files.items():
        data = folder / entry["name"]
        if not data.is_file():
            raise CheckpointError(
                f"checkpoint {folder} is incomplete: {data.name} (listed in {MANIFEST}) is "
                "missing; restore the run folder from a backup or start a new run"
            )
        if data.stat().st_size != entry["bytes"] or sha256_of(data) != entry["sha256"]:
            raise CheckpointError(
                f"checkpoint file {data} is corrupted (its SHA-256 does not match {MANIFEST}); "
                "restore it from a backup or start a new run"
            )
        paths[role] = data
    return Checkpoint(folder, manifest, paths)


def _corrupted(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is corrupted ({what}); restore the run folder from a backup or start a new run"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_manifest(path: Path, manifest: Any) -> dict[str, dict[str, Any]]:
    """The ``files`` of a manifest whose every field has been checked (see ``read_checkpoint``)."""
    if not isinstance(manifest, dict):
        raise _corrupted(path, f"a JSON object expected, not {type(manifest).__name__}")
    version = manifest.get("format")
    if version != FORMAT_VERSION or not _is_int(version):
        old = " (pickled files of an older factoryfloor, not loaded: train the run again)"
        raise CheckpointError(
            f"{path} has format {version!r}, not {FORMAT_VERSION}"
            + (old if version == 1 else "; use the factoryfloor version that wrote it")
        )
    steps: Any = manifest.get("num_timesteps")
    if not _is_int(steps) or steps < 0:
        raise _corrupted(path, f"num_timesteps must be an integer >= 0, not {steps!r}")
    for name, (types, description) in _FIELDS.items():
        value = manifest.get(name)
        if name in manifest and (not isinstance(value, types) or _is_bool_number(value, types)):
            raise _corrupted(path, f"{name} must be {description}, not {value!r}")
    last_eval = manifest.get("last_eval_step", -1)
    if last_eval < -1:
        raise _corrupted(path, f"last_eval_step must be >= -1, not {last_eval}")
    if last_eval > steps:
        raise _corrupted(
            path, f"num_timesteps {steps} is below the last evaluation it records "
            f"(last_eval_step {last_eval}); the counter was edited",
        )  # fmt: skip
    evaluation = manifest.get("evaluation", {"num_timesteps": steps})
    if evaluation.get("num_timesteps") != steps:
        raise _corrupted(
            path, f"num_timesteps {steps} differs from the step of its evaluation "
            f"({evaluation.get('num_timesteps')!r}); the counter was edited",
        )  # fmt: skip
    for key in ("success_rate", "mean_return", "wall_time_s", "eval_wall_time_s"):
        value = evaluation.get(key, 0.0)
        if not isinstance(value, _NUMBER) or isinstance(value, bool):
            raise _corrupted(path, f"evaluation.{key} must be a number, not {value!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise _corrupted(
            path, f"files must be a non-empty object of role -> {{name, bytes, sha256}}, "
            f"not {type(files).__name__} {files!r:.60}",
        )  # fmt: skip
    for role, entry in files.items():
        problem = _file_entry_problem(role, entry)
        if problem:
            raise _corrupted(path, f"files[{role!r}]: {problem}")
    tags = {m.group(1) for e in files.values() if (m := _STEP_TAG.match(e["name"]))}
    if tags and tags != {str(steps)}:
        raise _corrupted(
            path, f"num_timesteps {steps} differs from the step in its file names "
            f"({', '.join(sorted(tags))}); the counter was edited: set it back to that step",
        )  # fmt: skip
    return files


def _is_bool_number(value: Any, types: tuple[type, ...]) -> bool:
    """True for a JSON true/false where a number is expected (bool is an int in Python)."""
    return isinstance(value, bool) and bool not in types


def _file_entry_problem(role: str, entry: Any) -> str | None:
    if not _ROLE.match(role):
        return "the role must be a lowercase name"
    if not isinstance(entry, dict):
        return f"an object {{name, bytes, sha256}} expected, not {entry!r:.60}"
    name = entry.get("name")
    if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
        return f"name must be a file name in the checkpoint folder, not {name!r}"
    if name == MANIFEST:
        return f"name cannot be {MANIFEST}"
    if not _is_int(entry.get("bytes")) or entry["bytes"] < 0:
        return f"bytes must be an integer >= 0, not {entry.get('bytes')!r}"
    if not isinstance(entry.get("sha256"), str) or not _SHA256.match(entry["sha256"]):
        return f"sha256 must be 64 lowercase hex digits, not {entry.get('sha256')!r:.80}"
    return None


def load_file(checkpoint: Checkpoint, role: str, load: Callable[[Path], Any]) -> Any:
    """``load(path)`` of a data file, with any failure turned into a ``CheckpointError``."""
    if role not in checkpoint.paths:
        raise CheckpointError(
            f"checkpoint {checkpoint.folder} has no {role!r} file ({MANIFEST} lists "
            f"{sorted(checkpoint.paths)}); restore the run folder from a backup or start a new run"
        )
    path = checkpoint.paths[role]
    try:
        return load(path)
    except CheckpointError:
        raise
    except Exception as exc:  # any loader failure is a bad file; say which one
        named = f"{exc}" if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"
        detail = " ".join(named.split())
        raise CheckpointError(
            f"cannot load {path}: {detail[:400]}; it is not a {role} file that factoryfloor "
            "train writes: restore the run folder from a backup or start a new run"
        ) from exc


def read_evaluations(run_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The records of ``run_dir/evaluations.jsonl`` (none when it is missing), checked.

    Each line must be a JSON object with an integer ``num_timesteps`` >= 0, in non-decreasing
    order. An incomplete last line (no newline at its end: a kill while it was written) is
    left out, with a note on stderr.

    Returns:
        The records, and the text of the incomplete last line (None when there is none).

    Raises:
        CheckpointError: Naming the file and line, for any other line that is not a record.
    """
    path = run_dir / EVALUATIONS
    if not path.is_file():
        return [], None
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            steps: Any = record["num_timesteps"] if isinstance(record, dict) else None
            if not _is_int(steps) or steps < 0:
                raise ValueError(f"num_timesteps must be an integer >= 0, not {steps!r}")
            if records and steps < records[-1]["num_timesteps"]:
                raise ValueError(f"num_timesteps {steps} is below that of the line before")
        except (ValueError, KeyError) as exc:
            if number == len(lines):  # no newline after it: cut short while being written
                notice(
                    f"{path}, line {number}: ignoring an incomplete last record (the training "
                    f"was stopped while writing it): {line[:60]!r}"
                )
                return records, line
            raise CheckpointError(
                f"{path}, line {number} is not an evaluation record ({exc}); fix or delete that "
                "line (each line is one JSON object with num_timesteps) and run again"
            ) from exc
        records.append(record)
    return records, None


def supersede_evaluations_after(run_dir: Path, num_timesteps: int) -> list[dict[str, Any]]:
    """Keep the evaluations up to a resumed checkpoint's step in ``evaluations.jsonl``.

    Later ones (all of them for ``num_timesteps=-1``: a run started over) and an incomplete
    last line are about to be redone: they are appended to ``evaluations.superseded.jsonl``,
    never deleted, and a note says so.

    Returns:
        The evaluations kept.
    """
    records, partial = read_evaluations(run_dir)
    kept = [r for r in records if r["num_timesteps"] <= num_timesteps]
    later = [json.dumps(r) for r in records if r["num_timesteps"] > num_timesteps]
    if partial is not None:
        later.append(partial)
    if not later:
        return kept
    aside = run_dir / SUPERSEDED
    previous = aside.read_text(encoding="utf-8") if aside.is_file() else ""
    atomic_write_text(aside, previous + "".join(f"{line}\n" for line in later))
    atomic_write_text(run_dir / EVALUATIONS, "".join(f"{json.dumps(r)}\n" for r in kept))
    since = "the run starts over" if num_timesteps < 0 else f"after step {num_timesteps}"
    notice(
        f"{len(later)} record(s) of {run_dir / EVALUATIONS} moved to {aside.name} ({since}, "
        "where training resumes: it redoes them)"
    )
    return kept
