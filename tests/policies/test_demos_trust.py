"""Minari demonstration datasets are validated where they enter: any damage is one DemosError.

The attacker is an outsider who hands over a dataset folder: bit flips and truncations of any
file, garbage or truncated parquet files, edited Minari metadata, arrays rewritten with NaN or
wrong dtypes and the hashes recomputed consistently ("re-signed", as a deliberate edit would),
missing episodes, and foreign Minari datasets with other spaces. Every case must raise
``DemosError`` (never another exception, never silently different data) with a one-line message
naming the folder and how to fix it; ``factoryfloor train --demos`` prints it as one line and
exits 2.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factoryfloor.cli import main
from factoryfloor.policies.demos import (
    DemosError,
    check_compatible,
    dataset_folder,
    digest,
    load_demos,
    record_demos,
)
from factoryfloor.policies.demos_checks import file_sha256

REACH = "factoryfloor/Reach-v0"
REACH_ID = "factoryfloor/reach-panda-state-v0"
SEED = 20240607
Damage = Callable[[Path], None]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trust")
    record_demos(REACH, 2, root, seed=0, command="test", progress=False)
    return dataset_folder(REACH_ID, root)


def resign(folder: Path) -> None:
    """Recompute the sidecar's file hashes and digest, as an attacker who edits files would."""
    path = folder / "factoryfloor.json"
    sidecar = json.loads(path.read_text())
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != path)
    sidecar["files"] = {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}
    sidecar["sidecar_sha256"] = digest(sidecar)
    path.write_text(json.dumps(sidecar))


class Cases:
    """Copies of the pristine dataset, each damaged, and what loading each of them gave."""

    def __init__(self, pristine: Path, tmp_path: Path) -> None:
        self.pristine, self.tmp_path, self.count = pristine, tmp_path, 0
        self.refused: dict[str, str] = {}
        self.loaded: dict[str, Any] = {}
        self.wrong: list[str] = []  # cases that raised anything but DemosError

    def run(self, label: str, damage: Damage, resigned: bool = False) -> None:
        self.count += 1
        folder = self.tmp_path / f"case{self.count}" / "data"
        shutil.copytree(self.pristine, folder)
        damage(folder)
        if resigned:
            resign(folder)
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


def files_of(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def flip(rel: str, offset: float) -> Damage:
    def damage(folder: Path) -> None:
        data = bytearray((folder / rel).read_bytes())
        data[int(offset * (len(data) - 1))] ^= 0x40
        (folder / rel).write_bytes(bytes(data))

    return damage


def cut(rel: str, keep: float) -> Damage:
    def damage(folder: Path) -> None:
        data = (folder / rel).read_bytes()
        (folder / rel).write_bytes(data[: int(keep * len(data))])

    return damage


def test_bit_flips_and_truncations_anywhere_are_refused(pristine, cases):
    rng = random.Random(SEED)
    for rel in files_of(pristine):
        for _ in range(3):
            offset = rng.random()
            cases.run(f"flip {rel} at {offset:.3f}", flip(rel, offset))
        cases.run(f"cut {rel}", cut(rel, rng.random()))
    assert not cases.wrong and not cases.loaded, cases.wrong
    digests = [m for m in cases.refused.values() if "SHA-256 differs" in m or "sidecar_sha256" in m]
    assert len(digests) >= cases.count - 8  # the sidecar itself fails in other ways (JSON)


def test_re_signed_bit_flips_are_refused_or_still_valid(pristine, cases):
    """Behind the hashes the structural checks hold: never a traceback, never NaN data."""
    rng = random.Random(SEED + 1)
    parquet = [rel for rel in files_of(pristine) if rel.endswith(".parquet")]
    for i in range(40):
        rel = rng.choice(parquet)
        cases.run(f"re-signed flip {i} {rel}", flip(rel, rng.random()), resigned=True)
    for rel in files_of(pristine):
        if rel != "factoryfloor.json":
            cases.run(f"re-signed cut {rel}", cut(rel, 0.5), resigned=True)
    assert not cases.wrong, cases.wrong
    for demos in cases.loaded.values():
        for ep in demos.episodes:
            assert all(np.isfinite(v).all() for k, v in ep.items() if v.dtype.kind == "f")


def edit_table(episode: int, edit: Callable[[pa.Table], pa.Table]) -> Damage:
    """Rewrite an episode's parquet file consistently (a valid file with other contents)."""

    def damage(folder: Path) -> None:
        path = folder / str(episode) / "part-0.parquet"
        pq.write_table(edit(pq.read_table(path)), path)

    return damage


def replace(name: str, make: Callable[[pa.Table], pa.Array]) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.set_column(t.column_names.index(name), name, make(t))


def floats(name: str, change: Callable[[np.ndarray], None], dtype: Any = np.float32) -> Any:
    """Replace a fixed-size-list float column (``actions``) by an edited copy."""

    def make(t: pa.Table) -> pa.Array:
        column = t[name].combine_chunks()
        values = column.flatten().to_numpy().astype(dtype).copy()
        change(values)
        return pa.FixedSizeListArray.from_arrays(pa.array(values), column.type.list_size)

    return replace(name, make)


def observation(key: str, value: float) -> Any:
    """Set one value of an observation key (a field of the ``observations`` struct)."""

    def make(t: pa.Table) -> pa.Array:
        struct = t["observations"].combine_chunks()
        fields = [struct.field(i) for i in range(struct.type.num_fields)]
        names = [struct.type.field(i).name for i in range(struct.type.num_fields)]
        i = names.index(key)
        values = fields[i].flatten().to_numpy().copy()
        values[0] = value
        fields[i] = pa.FixedSizeListArray.from_arrays(pa.array(values), fields[i].type.list_size)
        return pa.StructArray.from_arrays(fields, names=names)

    return replace("observations", make)


def test_consistently_rewritten_arrays_are_refused_naming_the_problem(cases):
    def set_first(v: float) -> Callable[[np.ndarray], None]:
        return lambda a: a.__setitem__(0, v)

    edits = {
        "actions NaN": floats("actions", set_first(np.nan)),
        "actions inf": floats("actions", set_first(np.inf)),
        "actions 1.5": floats("actions", set_first(1.5)),
        "actions float64": floats("actions", lambda a: None, np.float64),
        "rewards NaN": replace("rewards", lambda t: pa.array([np.nan] * t.num_rows, pa.float32())),
        "rewards text": replace("rewards", lambda t: pa.array(["x"] * t.num_rows)),
        "observation NaN": observation("observation", np.nan),
        "goal inf": observation("desired_goal", -np.inf),
        "done early": replace("terminations", lambda t: pa.array([True] * t.num_rows)),
        "terminations ints": replace("terminations", lambda t: pa.array([0] * t.num_rows)),
        "row dropped": lambda t: t.slice(0, t.num_rows - 1),
        "column dropped": lambda t: t.drop_columns(["truncations"]),
        "column added": lambda t: t.append_column("extra", pa.array([1] * t.num_rows)),
        "infos dropped": lambda t: t.drop_columns(["infos"]),
    }
    for label, edit in edits.items():
        cases.run(label, edit_table(1, edit), resigned=True)
    assert not cases.wrong, cases.wrong
    # without is_success a dataset is foreign-like: success from terminations, which agree here
    assert set(cases.loaded) <= {"infos dropped"}, sorted(cases.loaded)
    refused = cases.refused
    for key in ("actions NaN", "actions inf"):
        assert "actions holds 1 non-finite (NaN or infinite) values" in refused[key], refused[key]
    assert "outside the action space" in refused["actions 1.5"]
    assert "dtype float64, expected float32" in refused["actions float64"]
    assert "rewards holds" in refused["rewards NaN"] and "non-finite" in refused["rewards NaN"]
    assert "obs/observation holds 1 non-finite" in refused["observation NaN"]
    assert "before the last step" in refused["done early"]
    assert "rows, expected" in refused["row dropped"]
    assert "columns" in refused["column dropped"] and "columns" in refused["column added"]


def garbage(rel: str, data: bytes) -> Damage:
    return lambda folder: (folder / rel).write_bytes(data)


def test_garbage_empty_missing_and_extra_files_are_refused(cases):
    part = "1/part-0.parquet"
    for resigned in (False, True):
        tag = " re-signed" if resigned else ""
        cases.run(f"garbage{tag}", garbage(part, b"PAR1 not really parquet PAR1"), resigned)
        cases.run(f"empty{tag}", garbage(part, b""), resigned)
        cases.run(f"json garbage{tag}", garbage("metadata.json", b"{not json"), resigned)
        cases.run(f"episode missing{tag}", lambda f: shutil.rmtree(f / "1"), resigned)
        cases.run(f"part missing{tag}", lambda f: (f / part).unlink(), resigned)
        cases.run(f"extra file{tag}", garbage("1/part-1.parquet", b"x"), resigned)
        cases.run(f"extra top file{tag}", garbage("notes.txt", b"x"), resigned)
        cases.run(
            f"linked{tag}",
            lambda f: ((f / part).unlink(), (f / part).symlink_to(f / "0" / "part-0.parquet")),
            resigned,
        )
    cases.run("sidecar garbage", garbage("factoryfloor.json", b"\xff\xfe"))
    cases.run("sidecar NaN", garbage("factoryfloor.json", b'{"format": NaN}'))
    assert not cases.wrong and not cases.loaded, (cases.wrong, sorted(cases.loaded))
    assert "does not hold episodes 0..1" in cases.refused["episode missing re-signed"]


def edit_json(rel: str, edit: Callable[[dict[str, Any]], Any]) -> Damage:
    def damage(folder: Path) -> None:
        data = json.loads((folder / rel).read_text())
        edit(data)
        (folder / rel).write_text(json.dumps(data))

    return damage


def space(shape: list[int]) -> str:
    box = {"type": "Box", "dtype": "float32", "shape": shape, "low": [-1.0] * shape[0],
           "high": [1.0] * shape[0]}  # fmt: skip
    return json.dumps({"type": "Dict", "subspaces": {"observation": box}})


METADATA: dict[str, Callable[[dict[str, Any]], Any]] = {
    "total_steps +1": lambda m: m.update(total_steps=m["total_steps"] + 1),
    "total_steps text": lambda m: m.update(total_steps="7"),
    "total_episodes 3": lambda m: m.update(total_episodes=3),
    "total_episodes 1": lambda m: m.update(total_episodes=1),
    "total_episodes 0": lambda m: m.update(total_episodes=0),
    "observation_space other": lambda m: m.update(observation_space=space([5])),
    "observation_space garbage": lambda m: m.update(observation_space="{nope"),
    "observation_space missing": lambda m: m.pop("observation_space"),
    "action_space discrete": lambda m: m.update(action_space='{"type": "Discrete", "n": 3}'),
    "data_format hdf5": lambda m: m.update(data_format="hdf5"),
    "jpeg_encoding text": lambda m: m.update(jpeg_encoding="no"),
    "dataset_id other": lambda m: m.update(dataset_id="factoryfloor/other-v0"),
    "dataset_id path": lambda m: m.update(dataset_id="../../etc-v0"),
}
EPISODE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "episode total_steps +1": lambda m: m.update(total_steps=m["total_steps"] + 1),
    "episode id other": lambda m: m.update(id=0),
    "episode seed other": lambda m: m.update(seed=99),
    "episode total_steps 0": lambda m: m.update(total_steps=0),
}
SIDECAR: dict[str, Callable[[dict[str, Any]], Any]] = {
    "length +1": lambda s: s["episodes"][0].update(length=s["episodes"][0]["length"] + 1),
    "success false": lambda s: s["episodes"][0].update(success=False),
    "return other": lambda s: s["episodes"][0].update({"return": 3.0}),
    "env_id number": lambda s: s.update(env_id=5),
    "env_id other": lambda s: s.update(env_id="factoryfloor/PickPlace-v0"),
    "format_version 2": lambda s: s.update(format_version=2),
    "format_version 3": lambda s: (s.update(format_version=3), s.pop("action_noise")),
    "action_noise NaN": lambda s: s.update(action_noise=float("nan")),
    "action_noise 2": lambda s: s.update(action_noise=2.0),
    "action_noise text": lambda s: s.update(action_noise="0.1"),
    "unexpected field": lambda s: s.update(extra=1),
    "storage other": lambda s: s.update(storage="arrow"),
    "action high": lambda s: s["action_space"].update(high=[2.0] * 4),
    "episodes empty": lambda s: s.update(episodes=[], total_transitions=0),
}


def test_edited_metadata_is_refused_even_when_re_signed(cases, monkeypatch):
    def no_make(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("gym.make called on a dataset's env spec")

    monkeypatch.setattr(gym, "make", no_make)
    for label, edit in METADATA.items():
        cases.run(label, edit_json("metadata.json", edit))
        cases.run(f"{label} re-signed", edit_json("metadata.json", edit), resigned=True)
    for label, edit in EPISODE.items():
        cases.run(f"{label} re-signed", edit_json("1/metadata.json", edit), resigned=True)
    for label, edit in SIDECAR.items():
        cases.run(label, edit_json("factoryfloor.json", edit))
        cases.run(f"{label} re-signed", edit_json("factoryfloor.json", edit), resigned=True)
    assert not cases.wrong and not cases.loaded, (cases.wrong, sorted(cases.loaded))
    assert "gym.make" in cases.refused["observation_space missing re-signed"]
    assert "not read by factoryfloor" in cases.refused["data_format hdf5 re-signed"]
    assert "recorded on" in cases.refused["env_id other re-signed"]


def test_nothing_is_unpickled(pristine, monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    assert load_demos(pristine, env_id=REACH).index["verified"]


def foreign(
    root: Path, dataset_id: str, env: gym.Env[Any, Any], episodes: int, infos: bool
) -> Path:
    """A Minari dataset written by Minari's own writer (random actions, no factoryfloor sidecar)."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = []
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        steps: dict[str, list[Any]] = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
        successes = [bool(info.get("is_success", False))]
        done = False
        while not done:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            for key, value in zip(steps, (obs, action, reward, terminated, truncated), strict=True):
                steps[key].append(value)
            successes.append(bool(info.get("is_success", False)))
            done = terminated or truncated
        stacked = steps["obs"][0]
        if isinstance(stacked, dict):
            stacked = {k: np.stack([o[k] for o in steps["obs"]]) for k in stacked}
        else:
            stacked = np.stack(steps["obs"])
        buffers.append(EpisodeBuffer(
            seed=seed, observations=stacked, actions=np.stack(steps["act"]),
            rewards=np.asarray(steps["rew"], np.float64), terminations=np.asarray(steps["term"]),
            truncations=np.asarray(steps["trunc"]),
            infos={"is_success": successes} if infos else None,
        ))  # fmt: skip
    minari.create_dataset_from_buffers(
        dataset_id, buffers, env=env, algorithm_name="random", author="test",
        author_email="t@example.com", code_permalink="x", description="foreign",
        data_format="arrow", eval_env=env.spec,
    )  # fmt: skip
    return dataset_folder(dataset_id, root)


def test_foreign_minari_datasets_load_unverified_and_other_spaces_are_refused(
    tmp_path, monkeypatch
):
    import factoryfloor  # noqa: F401  (registers the envs)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = gym.make(REACH, max_episode_steps=5)
    folder = foreign(tmp_path, "others/reach-random-v0", env, 2, infos=False)
    demos = load_demos("others/reach-random-v0", env_id=REACH)
    assert not demos.index["verified"] and demos.index["robot"] is None
    assert demos.total_transitions == 10 and [e["seed"] for e in demos.index["episodes"]] == [0, 1]
    for ep in demos.episodes:
        np.testing.assert_array_equal(ep["is_success"], ep["terminated"])
    check_compatible(demos, env, "panda")  # the spaces match
    env.close()

    other = gym.make("factoryfloor/PickPlace-v0", obs_mode="camera", max_episode_steps=3)
    foreign(tmp_path, "others/pick-camera-v0", other, 1, infos=True)
    reach = gym.make(REACH)
    camera = load_demos("others/pick-camera-v0")
    assert camera.episodes[0]["obs/image"].dtype == np.uint8
    with pytest.raises(DemosError, match=r"have observation keys .* but the training env has"):
        check_compatible(camera, reach, "panda")
    other.close()

    cartpole = gym.make("CartPole-v1", max_episode_steps=3)
    foreign(tmp_path, "others/cartpole-v0", cartpole, 1, infos=False)
    with pytest.raises(DemosError, match="not a Dict of Box observations"):
        load_demos("others/cartpole-v0")
    cartpole.close()
    shapes = load_demos(folder)
    shapes.index["observation_space"][0]["shape"] = [9]
    with pytest.raises(DemosError, match=r"observation 'achieved_goal' of shape \(9,\)"):
        check_compatible(shapes, reach, "panda")
    shapes.index["observation_space"][0]["shape"] = [3]
    shapes.index["action_space"]["shape"] = [6]
    with pytest.raises(DemosError, match=r"action shape \[6\]"):
        check_compatible(shapes, reach, "panda")
    reach.close()


@pytest.mark.parametrize("damage", ["flip", "missing episode"])
def test_cli_train_refuses_damaged_demos_in_one_line(pristine, tmp_path, damage, capsys):
    folder = tmp_path / "demos" / "data"
    shutil.copytree(pristine, folder)
    if damage == "flip":
        flip("0/part-0.parquet", 0.5)(folder)
    else:
        shutil.rmtree(folder / "1")
        resign(folder)
    run = tmp_path / "run"
    args = ["train", REACH, "--demos", str(folder), "--timesteps", "1", "--out", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(folder) in err, err
    assert "Traceback" not in err and not (run / "checkpoints").exists()
