"""Demonstration folders are validated where they enter: any damage is one DemosError.

A seeded corruption generator damages a freshly recorded demonstration folder in hundreds of
ways (bit flips, truncations, empty files, replaced or duplicated ``.npz`` members, NaN/Inf
values, negative counts, mistyped metadata). Every case must raise ``DemosError`` (never
another exception, never silently different data) with a one-line message naming the file and
how to fix it; ``factoryfloor train --demos`` prints it as one line and exits 2.

Most structural cases are also "re-signed" (their SHA-256s recomputed, as a deliberate edit
would), so that the checks behind the hashes are exercised, not only the hashes.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from factoryfloor.cli import main
from factoryfloor.policies.demos import DemosError, index_digest, load_demos, record_demos

REACH = "factoryfloor/Reach-v0"
SEED = 20240607
Damage = Callable[[Path], None]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "reach"
    record_demos(REACH, 2, out, seed=0, command="test", progress=False)
    return out


@pytest.fixture(scope="module")
def original(pristine: Path) -> dict[str, Any]:
    demos = load_demos(pristine, env_id=REACH)
    return {"index": demos.index, "episodes": demos.episodes}


class Cases:
    """Copies of the pristine folder, each damaged, and what loading each of them gave."""

    def __init__(self, pristine: Path, tmp_path: Path) -> None:
        self.pristine, self.tmp_path, self.count = pristine, tmp_path, 0
        self.refused: dict[str, str] = {}
        self.loaded: dict[str, Any] = {}
        self.wrong: list[str] = []  # cases that raised anything but DemosError

    def run(self, label: str, damage: Damage, resign: bool = False) -> None:
        self.count += 1
        folder = self.tmp_path / f"case{self.count}"
        shutil.copytree(self.pristine, folder)
        damage(folder)
        if resign:
            resign_folder(folder)
        try:
            self.loaded[label] = load_demos(folder, env_id=REACH)
        except DemosError as exc:
            message = str(exc)
            if str(folder) not in message or "\n" in message or "record" not in message:
                self.wrong.append(f"{label}: unclear message {message!r}")
            self.refused[label] = message
        except Exception as exc:  # the point: nothing else may escape
            self.wrong.append(f"{label}: {type(exc).__name__}: {exc}")


@pytest.fixture
def cases(pristine: Path, tmp_path: Path) -> Cases:
    return Cases(pristine, tmp_path)


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def resign_folder(folder: Path) -> None:
    """Recompute every episode's sha256 and the index's digest (a deliberate, consistent edit)."""
    path = folder / "demos.json"
    try:
        index = json.loads(path.read_text())
        for entry in index["episodes"]:
            entry["sha256"] = hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
        index["index_sha256"] = index_digest(index)
    except (ValueError, KeyError, TypeError, OSError):
        return  # an index this broken stays as it is
    path.write_text(json.dumps(index, indent=1))


def flip(path: Path, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def edit_index(edit: Callable[[dict[str, Any]], Any]) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / "demos.json"
        index = json.loads(path.read_text())
        edit(index)
        path.write_text(json.dumps(index))

    return damage


def members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def write_members(path: Path, items: list[tuple[str, bytes]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in items:
                zf.writestr(name, data)


def npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)
    return buffer.getvalue()


def edit_arrays(edit: Callable[[dict[str, np.ndarray]], Any], episode: int = 0) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / f"episode_{episode:05d}.npz"
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k].copy() for k in data.files}
        edit(arrays)
        np.savez_compressed(path, **arrays)

    return damage


def edit_members(edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / "episode_00001.npz"
        write_members(path, edit(members(path)))

    return damage


def truncate(name: str, cut: int) -> Damage:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:cut])


def drop(name: str) -> Damage:
    return edit_members(lambda items: [m for m in items if m[0] != name])


def duplicate(name: str) -> Damage:
    return edit_members(lambda items: [*items, next(m for m in items if m[0] == name)])


def replace(name: str, data: bytes) -> Damage:
    return edit_members(lambda items: [(k, data if k == name else v) for k, v in items])


def test_bit_flips_and_truncations_anywhere_are_refused(pristine, cases):
    rng = random.Random(SEED)
    for path in files_of(pristine):
        bits = path.stat().st_size * 8
        for bit in rng.sample(range(bits), 80):
            cases.run(f"flip {path.name} bit {bit}", lambda f, n=path.name, b=bit: flip(f / n, b))
        size = path.stat().st_size
        offsets = [0, 1, size // 2, size - 2, *rng.sample(range(size - 1), 25)]
        for cut in sorted(set(offsets)):
            cases.run(f"truncate {path.name} at {cut}", truncate(path.name, cut))
    assert not cases.wrong, cases.wrong[:5]
    assert not cases.loaded, sorted(cases.loaded)[:5]
    assert cases.count > 300
    hashed = [m for label, m in cases.refused.items() if label.startswith("flip episode")]
    assert all("SHA-256 differs" in m for m in hashed)  # the recorded hashes catch them all


def test_re_signed_bit_flips_are_caught_by_the_format_checks_or_change_nothing(
    pristine, original, cases
):
    rng = random.Random(SEED + 1)
    episode = pristine / "episode_00000.npz"
    for bit in rng.sample(range(episode.stat().st_size * 8), 150):
        cases.run(f"flip bit {bit}", lambda f, b=bit: flip(f / episode.name, b), resign=True)
    assert not cases.wrong, cases.wrong[:5]
    for label, demos in cases.loaded.items():  # zip metadata the reader does not use (dates)
        for key, array in original["episodes"][0].items():
            np.testing.assert_array_equal(demos.episodes[0][key], array, err_msg=label)
    assert len(cases.refused) > 0.7 * (len(cases.refused) + len(cases.loaded))
    index_text = (pristine / "demos.json").read_text()
    for bit in rng.sample(range(len(index_text) * 8), 150):
        cases.run(f"index bit {bit}", lambda f, b=bit: flip(f / "demos.json", b))
    changed = [k for k in cases.loaded if k.startswith("index")]
    for label in changed:  # allowed only when the index still parses to the same content
        bit = int(label.split()[-1])
        data = bytearray(index_text.encode())
        data[bit // 8] ^= 1 << (bit % 8)
        assert json.loads(bytes(data)) == original["index"], label
    assert not cases.wrong, cases.wrong[:5]


def test_empty_missing_and_misplaced_files_are_refused(cases):
    for name in ("demos.json", "episode_00000.npz", "episode_00001.npz"):
        cases.run(f"empty {name}", lambda f, n=name: (f / n).write_bytes(b""))
        cases.run(f"empty {name} re-signed", lambda f, n=name: (f / n).write_bytes(b""), True)
        cases.run(f"{name} is a folder", lambda f, n=name: ((f / n).unlink(), (f / n).mkdir()))
    cases.run("episode missing", lambda f: (f / "episode_00001.npz").unlink(), True)
    cases.run("garbage episode", lambda f: (f / "episode_00000.npz").write_bytes(b"PK\x03\x04"))
    cases.run("index is a list", lambda f: (f / "demos.json").write_text("[]"))
    cases.run("index is deep", lambda f: (f / "demos.json").write_text("[" * 100_000))
    cases.run("index huge int", lambda f: (f / "demos.json").write_text("1" * 5000))
    cases.run("index not UTF-8", lambda f: (f / "demos.json").write_bytes(b'{"\xff": 1}'))
    cases.run("index NaN", edit_index(lambda i: i["episodes"][0].update({"return": float("nan")})))
    assert not cases.wrong and not cases.loaded and cases.count == 16, cases.wrong
    assert "is empty" in cases.refused["empty demos.json"]
    assert "is empty" in cases.refused["empty episode_00000.npz re-signed"]


def test_replaced_and_duplicated_members_are_refused(original, cases):
    arrays = original["episodes"][1]
    names = [f"{k}.npy" for k in arrays]
    for name in names:
        cases.run(f"drop {name}", drop(name), resign=True)
        cases.run(f"duplicate {name}", duplicate(name), resign=True)
        cases.run(f"{name} is garbage", replace(name, b"garbage"), resign=True)
        array = arrays[name[:-4]]
        for what, other in (
            ("float64", array.astype(np.float64)),
            ("int32", array.astype(np.int32)),
            ("a row short", array[:-1]),
            ("objects", np.array([object()] * len(array), dtype=object)),
        ):
            cases.run(f"{name} as {what}", replace(name, npy(other)), resign=True)
    extra = edit_members(lambda items: [*items, ("extra.npy", npy(np.zeros(3)))])
    cases.run("extra member", extra, resign=True)
    v3 = replace("rewards.npy", npy(arrays["rewards"], (3, 0)))
    cases.run("npy version 3", v3, resign=True)
    assert not cases.wrong and not cases.loaded and cases.count == 8 * 7 + 2, cases.wrong
    assert "dtype object" in cases.refused["actions.npy as objects"]
    assert "has shape" in cases.refused["rewards.npy as a row short"]


def test_object_arrays_are_refused_without_unpickling(original, cases, monkeypatch):
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader unpickled something")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    objects = np.array([{"evil": 1}] * 3, dtype=object)
    cases.run("pickled rewards", replace("rewards.npy", npy(objects)), resign=True)
    assert not cases.wrong and "dtype object" in cases.refused["pickled rewards"]


def test_non_finite_and_out_of_bounds_values_are_refused_naming_the_array(original, cases):
    floats = [k for k, v in original["episodes"][0].items() if v.dtype.kind == "f"]
    assert len(original["episodes"][0]["rewards"]) >= 2  # "done early" needs a step before the end
    for key in floats:
        for bad in (np.nan, np.inf, -np.inf):
            for episode in (0, 1):

                def put(arrays: dict[str, np.ndarray], k: str = key, v: float = bad) -> None:
                    arrays[k].reshape(-1)[[0, -1]] = v

                cases.run(f"{key} {bad} ep{episode}", edit_arrays(put, episode), resign=True)
    cases.run("action 1.5", edit_arrays(lambda a: a["actions"].__setitem__((0, 0), 1.5)), True)
    cases.run("reward changed", edit_arrays(lambda a: a["rewards"].__setitem__(0, 5.0)), True)
    cases.run("done early", edit_arrays(lambda a: a["terminated"].__setitem__(0, True)), True)
    cases.run("not done", edit_arrays(lambda a: a["terminated"].fill(False)), True)
    assert not cases.wrong and not cases.loaded, cases.wrong
    assert cases.count == len(floats) * 6 + 4 >= 34
    for label, message in cases.refused.items():
        key = label.split()[0]
        if key in floats:
            assert f"{key} holds 2 non-finite (NaN or infinite) values" in message, message
    assert "outside the action space" in cases.refused["action 1.5"]
    assert "rewards add up to" in cases.refused["reward changed"]


METADATA: dict[str, Callable[[dict[str, Any]], Any]] = {
    "total_transitions -1": lambda i: i.update(total_transitions=-1),
    "total_transitions off by one": lambda i: i.update(
        total_transitions=i["total_transitions"] + 1
    ),
    "total_transitions text": lambda i: i.update(total_transitions="6"),
    "total_transitions float": lambda i: i.update(total_transitions=6.0),
    "total_transitions bool": lambda i: i.update(total_transitions=True),
    "attempts -1": lambda i: i.update(attempts=-1),
    "attempts below episodes": lambda i: i.update(attempts=1),
    "length -1": lambda i: i["episodes"][0].update(length=-1),
    "length 0": lambda i: i["episodes"][0].update(length=0),
    "length 2.5": lambda i: i["episodes"][0].update(length=2.5),
    "length text": lambda i: i["episodes"][0].update(length="3"),
    "length huge": lambda i: i["episodes"][0].update(length=10**12),
    "seed -1": lambda i: i["episodes"][0].update(seed=-1),
    "success text": lambda i: i["episodes"][0].update(success="yes"),
    "success false": lambda i: i["episodes"][0].update(success=False),
    "return text": lambda i: i["episodes"][0].update({"return": "high"}),
    "file outside": lambda i: i["episodes"][0].update(file="../../etc/passwd"),
    "file absolute": lambda i: i["episodes"][0].update(file="/etc/passwd"),
    "file twice": lambda i: i["episodes"][1].update(file=i["episodes"][0]["file"]),
    "sha256 short": lambda i: i["episodes"][0].update(sha256="abc"),
    "episodes empty": lambda i: i.update(episodes=[], total_transitions=0),
    "episodes a dict": lambda i: i.update(episodes={}),
    "episode a list": lambda i: i["episodes"].__setitem__(0, []),
    "format_version text": lambda i: i.update(format_version="2"),
    "format_version float": lambda i: i.update(format_version=2.0),
    "format_version 1": lambda i: i.update(format_version=1),
    "format other": lambda i: i.update(format="something-else"),
    "env_id number": lambda i: i.update(env_id=5),
    "robot missing": lambda i: i.pop("robot"),
    "unknown field": lambda i: i.update(extra=1),
    "observation_space empty": lambda i: i.update(observation_space=[]),
    "observation shape -1": lambda i: i["observation_space"][0].update(shape=[-1]),
    "observation shape text": lambda i: i["observation_space"][0].update(shape="7"),
    "observation shape bigger": lambda i: i["observation_space"][0]["shape"].__setitem__(0, 99),
    "observation dtype object": lambda i: i["observation_space"][0].update(dtype="object"),
    "observation dtype float16": lambda i: i["observation_space"][0].update(dtype="float16"),
    "observation dtype float64": lambda i: i["observation_space"][0].update(dtype="float64"),
    "observation names twice": lambda i: i["observation_space"][1].update(
        name=i["observation_space"][0]["name"]
    ),
    "action shape other": lambda i: i["action_space"].update(shape=[5]),
    "action low short": lambda i: i["action_space"].update(low=[-1.0]),
    "action low above high": lambda i: i["action_space"].update(low=[2.0] * 4),
    "action high text": lambda i: i["action_space"].update(high="1"),
    "only_successful with a failure": lambda i: i["episodes"][0].update(success=False),
    "index_sha256 text": lambda i: i.update(index_sha256="not a hash"),
}


@pytest.mark.parametrize("resign", [False, True], ids=["as edited", "re-signed"])
def test_negative_counts_and_mistyped_metadata_are_refused(cases, resign):
    for label, edit in METADATA.items():  # (re-signing would repair a damaged hash)
        cases.run(label, edit_index(edit), resign=resign and "sha256" not in label)
    for key in json.loads((cases.pristine / "demos.json").read_text()):
        if key != "index_sha256":
            cases.run(f"no {key}", edit_index(lambda i, k=key: i.pop(k)), resign=resign)
    assert cases.count == len(METADATA) + 13
    assert not cases.wrong and not cases.loaded, (cases.wrong[:5], sorted(cases.loaded)[:5])
    if resign:  # the schema, not the digest, refused these
        message = cases.refused["total_transitions -1"]
        assert "total_transitions=-1 is not valid: give an integer >= 0" in message
        assert "lengths add up to" in cases.refused["total_transitions off by one"]
        assert "dtype float32, expected float64" in cases.refused["observation dtype float64"]
    else:
        assert "index_sha256" in cases.refused["seed -1"]


def test_cli_train_refuses_damaged_demos_in_one_line_before_building_anything(
    pristine, tmp_path, capsys
):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"buffer_size": 5000, "batch_size": 32, "net_arch": [8]}))
    damages: dict[str, tuple[Damage, bool, str]] = {
        "bit flip": (lambda f: flip(f / "episode_00000.npz", 777), False, "SHA-256 differs"),
        "truncated": (
            lambda f: (f / "episode_00001.npz").write_bytes(b"PK\x03\x04\x14"),
            True,
            "BadZipFile",
        ),
        "empty index": (lambda f: (f / "demos.json").write_bytes(b""), False, "is empty"),
        "NaN": (edit_arrays(lambda a: a["rewards"].fill(np.nan)), True, "non-finite"),
        "negative total": (edit_index(lambda i: i.update(total_transitions=-1)), True, ">= 0"),
        "duplicated member": (
            edit_members(lambda items: [*items, items[0]]),
            True,
            "holds members",
        ),
    }
    for n, (label, (damage, resign, part)) in enumerate(damages.items()):
        folder, run = tmp_path / f"demos{n}", tmp_path / f"run{n}"
        shutil.copytree(pristine, folder)
        damage(folder)
        if resign:
            resign_folder(folder)
        args = ["train", REACH, "--demos", str(folder), "--out", str(run), "--config", str(config)]
        assert main(args) == 2, label
        out, err = capsys.readouterr()
        assert err.startswith("factoryfloor train: error: ") and part in err, (label, err)
        assert str(folder) in err and "record them again" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not out
        assert not run.exists(), label  # refused before any run folder, env or model
