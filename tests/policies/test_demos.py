"""Demonstrations: `factoryfloor demos record`, the pickle-free format, and `train --demos`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies import run_files
from factoryfloor.policies.demos import DemosError, index_digest, load_demos, record_demos
from factoryfloor.policies.train import train
from factoryfloor.policies.train_config import ConfigError, TrainConfig, load_config

REACH = "factoryfloor/Reach-v0"
TINY = {
    "learning_starts": 100,
    "buffer_size": 20_000,
    "batch_size": 64,
    "eval_every_steps": 1_000,
    "eval_episodes": 2,
    "checkpoint_every_steps": 0,
    "progress_bar": False,
    "tensorboard": False,
}


def buffer_size_of(run: Path) -> int:
    """Transitions in the run's saved replay buffer (``size()`` rows of ``n_envs``)."""
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    buffer = run_files.read_replay_buffer(last.paths["replay_buffer"])
    return int(buffer.size() * buffer.n_envs)


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demos") / "reach"
    record_demos(REACH, 3, out, seed=0, command="test")
    return out


def test_record_writes_the_documented_files(reach_demos):
    index = json.loads((reach_demos / "demos.json").read_text())
    assert index["format"] == "factoryfloor-demos" and index["format_version"] == 2
    assert index["env_id"] == REACH and index["robot"] == "panda" and index["command"] == "test"
    assert sorted(p.name for p in reach_demos.iterdir()) == [
        "demos.json", "episode_00000.npz", "episode_00001.npz", "episode_00002.npz",
    ]  # fmt: skip
    assert len(index["episodes"]) == 3 and all(e["success"] for e in index["episodes"])
    assert index["total_transitions"] == sum(e["length"] for e in index["episodes"])
    act_dim = index["action_space"]["shape"][0]
    for entry in index["episodes"]:
        with np.load(reach_demos / entry["file"], allow_pickle=False) as data:
            t = entry["length"]
            for field in index["observation_space"]:
                assert data[f"obs/{field['name']}"].shape == (t + 1, *field["shape"])
            assert data["actions"].shape == (t, act_dim) and data["actions"].dtype == np.float32
            for key in ("rewards", "terminated", "truncated", "is_success"):
                assert data[key].shape == (t,)
            assert data["is_success"][-1] and np.all(np.abs(data["actions"]) <= 1)
    demos = load_demos(reach_demos, env_id=REACH)
    assert demos.total_transitions == index["total_transitions"]


def test_wrong_env_incomplete_and_corrupt_demos_are_refused(reach_demos, tmp_path):
    with pytest.raises(DemosError, match="recorded on 'factoryfloor/Reach-v0'"):
        load_demos(reach_demos, env_id="factoryfloor/PickPlace-v0")
    with pytest.raises(DemosError, match=r"no demos\.json"):
        load_demos(tmp_path)
    with pytest.raises(DemosError, match="already holds demonstrations"):
        record_demos(REACH, 1, reach_demos)
    bad = tmp_path / "bad"
    bad.mkdir()
    index = json.loads((reach_demos / "demos.json").read_text())
    for entry in index["episodes"]:
        (bad / entry["file"]).write_bytes((reach_demos / entry["file"]).read_bytes())
    (bad / "demos.json").write_text(json.dumps({**index, "format_version": 99}))
    with pytest.raises(DemosError, match="format version 99"):
        load_demos(bad)
    index["episodes"][0]["length"] += 1
    (bad / "demos.json").write_text(json.dumps(index))
    with pytest.raises(DemosError, match=r"damaged: its contents do not match its index_sha256"):
        load_demos(bad)
    index["total_transitions"] += 1  # a consistent index (re-signed) over the same files
    index["index_sha256"] = index_digest(index)
    (bad / "demos.json").write_text(json.dumps(index))
    with pytest.raises(DemosError, match=r"has shape .*expected"):
        load_demos(bad)


def test_train_with_demos_for_another_env_is_refused(tmp_path, reach_demos):
    fields = {**TINY, "learning_starts": 600, "timesteps": 1, "out": str(tmp_path / "run"),
              "demos": str(reach_demos), "net_arch": [8], "batch_size": 8}  # fmt: skip
    with pytest.raises(DemosError, match="recorded on"):  # refused before any env is built
        load_config("factoryfloor/PickPlace-v0", "sac", None, fields)
    cfg = TrainConfig(task="factoryfloor/PickPlace-v0", algo="sac", **fields)
    with pytest.raises(DemosError, match="recorded on"):  # and by train itself
        train(cfg)
    with pytest.raises(ConfigError, match="demos"):
        TrainConfig(task=REACH, algo="ppo", demos=str(reach_demos))


@pytest.mark.parametrize("n_envs", [1, 2])
def test_train_with_demos_seeds_the_replay_buffer(tmp_path, reach_demos, n_envs, monkeypatch):
    from factoryfloor.policies import train as training

    seen = {}
    real = training._add_demos

    def spy(cfg, model, env, run_dir):
        real(cfg, model, env, run_dir)
        seen["size"] = int(model.replay_buffer.size() * model.replay_buffer.n_envs)
        seen["episodes"] = int((model.replay_buffer.ep_length > 0).any(axis=1).sum())

    monkeypatch.setattr(training, "_add_demos", spy)
    run = tmp_path / "run"
    cfg = load_config(
        REACH, "sac", None,
        {**TINY, "timesteps": n_envs, "n_envs": n_envs, "out": str(run), "demos": str(reach_demos)},
    )  # fmt: skip
    train(cfg)
    total = load_demos(reach_demos).total_transitions
    assert seen["size"] == total * n_envs  # each stream holds every demonstration transition
    assert seen["episodes"] == total  # HER knows each transition's (finished) episode
    assert yaml.safe_load((run / "config.yaml").read_text())["demos"] == str(reach_demos)
    # the saved buffer: the demonstrations plus the one vectorised env step taken
    assert buffer_size_of(run) == (total + 1) * n_envs
    # resume does not add the demonstrations again
    resumed = TrainConfig.from_yaml(run / "config.yaml", timesteps=2 * n_envs)
    seen.clear()
    train(resumed, resume=True)
    assert not seen and buffer_size_of(run) == (total + 2) * n_envs


def test_cli_demos_record_smoke(tmp_path):
    out = tmp_path / "demos"
    proc = subprocess.run(
        [sys.executable, "-m", "factoryfloor.cli", "demos", "record", REACH,
         "--episodes", "2", "--out", str(out), "--seed", "5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 2 episodes" in proc.stdout
    index = load_demos(out, env_id=REACH).index
    assert [e["seed"] for e in index["episodes"]] == [5, 6] and "demos record" in index["command"]
    again = subprocess.run(
        [sys.executable, "-m", "factoryfloor.cli", "demos", "record", REACH,
         "--episodes", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2 and "already holds demonstrations" in again.stderr
