"""A seeded corpus of corrupted run folders: loading one raises the module's own error, naming a
file of the run, and never anything else (no traceback, nothing unpickled).

Kinds, on the files of a fresh 120-step HER SAC run (``checkpoints/best`` and ``last``: model
zip, VecNormalize JSON, replay buffer npz, random states JSON, ``checkpoint.json``; the run's
``config.yaml`` and ``evaluations.jsonl``): bit flips and truncation, with and without the
checkpoint's SHA-256 recomputed; replaced files; a member of the model zip duplicated or its
weights edited (re-hashed); mistyped fields of ``checkpoint.json`` and ``config.yaml``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from test_run_folder_trust import pristine  # noqa: F401 (the module's run fixture)

from factoryfloor.cli import main
from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies.export import load_run_model

CASES = 150
MUTATED: list[Any] = [None, "x", -5, 0, 1.5, 2**60, [], {}, True, "../../etc", [1, "a"]]


def _data_files(run: Path) -> list[Path]:
    files = [run / "config.yaml", run / "evaluations.jsonl"]
    for which in ("best", "last"):
        folder = run / "checkpoints" / which
        files += sorted(p for p in folder.iterdir() if p.is_file())
    return files


def _rehash(path: Path) -> None:
    """Recompute the size and SHA-256 of ``path`` in its checkpoint's manifest."""
    manifest_path = path.parent / ckpt.MANIFEST
    if not manifest_path.is_file() or path == manifest_path:
        return
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest.get("files", {}).values():
        if isinstance(entry, dict) and entry.get("name") == path.name:
            entry["bytes"] = path.stat().st_size
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def _flip(path: Path, rng: np.random.Generator) -> None:
    data = bytearray(path.read_bytes())
    for _ in range(int(rng.integers(1, 4))):
        data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))


def _truncate(path: Path, rng: np.random.Generator) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(rng.integers(0, max(1, len(data))))])


def _replace(path: Path, rng: np.random.Generator) -> None:
    path.write_bytes(rng.bytes(int(rng.integers(0, 4000))))


def _rezip(path: Path, change: Callable[[dict[str, bytes]], list[tuple[str, bytes]]]) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")  # a duplicate name is the point
        for name, data in change(members):
            zf.writestr(name, data)


def _model_zip(run: Path, rng: np.random.Generator) -> Path:
    which = ["best", "last"][int(rng.integers(2))]
    return next((run / "checkpoints" / which).glob("model-*.zip"))


def _set_random_field(obj: Any, rng: np.random.Generator) -> None:
    paths: list[tuple[Any, ...]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(obj, ())]
    while stack:
        node, path = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node[:4])
        for key, value in items:
            paths.append((*path, key))
            if isinstance(value, dict | list):
                stack.append((value, (*path, key)))
    path = paths[int(rng.integers(len(paths)))]
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = MUTATED[int(rng.integers(len(MUTATED)))]


def corrupt(run: Path, rng: np.random.Generator) -> str:
    """Corrupt one file of ``run`` in place; the kind of corruption."""
    kind = [
        "bit flip", "bit flip, re-hashed", "truncation", "truncation, re-hashed",
        "replaced, re-hashed", "model zip member duplicated", "model weights edited",
        "checkpoint.json mistyped", "config.yaml mistyped",
    ][int(rng.integers(9))]  # fmt: skip
    files = _data_files(run)
    target = files[int(rng.integers(len(files)))]
    if kind.startswith(("bit flip", "truncation", "replaced")):
        {"bit": _flip, "tru": _truncate, "rep": _replace}[kind[:3]](target, rng)
        if kind.endswith("re-hashed"):
            _rehash(target)
    elif kind == "model zip member duplicated":
        target = _model_zip(run, rng)
        _rezip(target, lambda m: [*m.items(), ("data", b'{"policy_class": 1}')])
        _rehash(target)
    elif kind == "model weights edited":
        target = _model_zip(run, rng)
        pth = bytearray()

        def edit(members: dict[str, bytes]) -> list[tuple[str, bytes]]:
            pth.extend(members["policy.pth"])
            pth[int(rng.integers(len(pth) // 2, len(pth)))] ^= 0x10
            return [*{**members, "policy.pth": bytes(pth)}.items()]

        _rezip(target, edit)
        _rehash(target)
    elif kind == "checkpoint.json mistyped":
        which = ["best", "last"][int(rng.integers(2))]
        target = run / "checkpoints" / which / ckpt.MANIFEST
        manifest = json.loads(target.read_text())
        _set_random_field(manifest, rng)
        target.write_text(json.dumps(manifest))
    else:
        target = run / "config.yaml"
        config = yaml.safe_load(target.read_text())
        _set_random_field(config, rng)
        target.write_text(yaml.safe_dump(config))
    return f"{kind}: {target.relative_to(run)}"


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any general unpickler call fails the test (torch's weights-only loader is not one)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run folder file was unpickled")

    import cloudpickle

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(cloudpickle, "loads", refuse)


def test_corrupted_run_folders_raise_only_their_loaders_errors(pristine, tmp_path, no_unpickling):  # noqa: F811
    rng = np.random.default_rng(14)
    outcomes: Counter = Counter()
    for i in range(CASES):
        run = Path(shutil.copytree(pristine, tmp_path / f"run{i}"))
        what = corrupt(run, rng)
        for which in ("best", "last"):
            try:
                load_run_model(run, which)
            except ValueError as exc:  # CheckpointError, ConfigError, ExportError
                text = str(exc)
                assert "\n" not in text.strip() and str(run) in text, (what, text)
                outcomes[(what.split(":")[0], "refused")] += 1
            else:
                outcomes[(what.split(":")[0], "loaded")] += 1
        shutil.rmtree(run)
    refused = sum(v for (_, o), v in outcomes.items() if o == "refused")
    assert refused >= CASES // 2, outcomes  # most corruptions touch what a load reads
    assert len({kind for kind, _ in outcomes}) == 9, outcomes


def test_corrupted_run_folders_give_one_line_and_exit_2_in_the_cli(pristine, tmp_path, capsys):  # noqa: F811
    rng = np.random.default_rng(41)
    refused = 0
    for i in range(12):
        run = Path(shutil.copytree(pristine, tmp_path / f"run{i}"))
        what = corrupt(run, rng)
        command = [
            ["eval", "factoryfloor/Reach-v0", "--policy", str(run), "--episodes", "1"],
            ["export", str(run), "--out", str(tmp_path / f"b{i}.ffpolicy")],
            ["train", "factoryfloor/Reach-v0", "--out", str(run), "--resume", "--timesteps", "130"],
        ][i % 3]
        code = main(command)
        err = capsys.readouterr().err
        assert code in (0, 2), (what, command, err)
        assert "Traceback" not in err, (what, err)
        if code == 2:
            refused += 1
            assert err.count("\n") == 1 and "error:" in err, (what, err)
    assert refused >= 3  # the others corrupted a file the command does not read
