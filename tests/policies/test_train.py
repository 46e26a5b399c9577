"""`factoryfloor train`: run folder, resume after a kill, checkpoints, determinism, config errors.

Every run here is tiny (a few hundred env steps) so the file stays fast on 2 CPU cores.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3.common.save_util import load_from_zip_file

from factoryfloor.cli import main
from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies import run_files
from factoryfloor.policies.train import algorithm_class, resolve_device, train
from factoryfloor.policies.train_config import (
    ConfigError,
    TrainConfig,
    load_config,
    read_yaml,
    shipped_config,
    task_name,
)
from factoryfloor.sim.registry import BY_ENV_ID

REACH = "factoryfloor/Reach-v0"
CONFIGS = Path(__file__).resolve().parents[2] / "factoryfloor" / "policies" / "configs"
# Small enough to run in seconds, big enough that gradient steps and evaluations happen.
TINY = {
    "learning_starts": 100,
    "buffer_size": 20_000,
    "batch_size": 64,
    "eval_every_steps": 150,
    "eval_episodes": 3,
    "checkpoint_every_steps": 0,
    "progress_bar": False,
}


def tiny_config(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **fields}))
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "factoryfloor.cli", "train", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def evaluations(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "evaluations.jsonl").read_text().splitlines()]


def replay_buffer(run: Path) -> run_files.ReplayBufferFile:
    path = ckpt.read_checkpoint(run / "checkpoints" / "last").paths["replay_buffer"]
    return run_files.read_replay_buffer(path)


def buffer_size_of(run: Path) -> int:
    """Transitions stored (SB3 keeps ``size()`` rows of ``n_envs`` transitions)."""
    buffer = replay_buffer(run)
    return int(buffer.size() * buffer.n_envs)


def model_params(run: Path) -> dict:
    path = ckpt.read_checkpoint(run / "checkpoints" / "last").paths["model"]
    return load_from_zip_file(path, device="cpu")[1]


def test_cli_smoke_writes_the_run_folder(tmp_path):
    run, config = tmp_path / "run", tiny_config(tmp_path)
    out = cli(
        REACH, "--timesteps", "300", "--seed", "1", "--out", str(run), "--config", str(config)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "300 env steps" in out.stdout

    saved = TrainConfig.from_yaml(run / "config.yaml")  # round-trips into the dataclass
    expected = load_config(REACH, None, config, {"timesteps": 300, "seed": 1, "out": str(run)})
    assert saved == expected and saved.algo == "sac" and saved.her

    env = json.loads((run / "environment.json").read_text())
    for key in ("python", "torch", "stable_baselines3", "gymnasium", "pybullet", "git_commit"):
        assert key in env, key
    assert env["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert env["stable_baselines3"] and env["pybullet"] and env["torch_threads"] == 1

    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    assert last.num_timesteps == 300 and last.manifest["complete"]
    assert set(last.paths) == {"model", "replay_buffer", "vecnormalize", "rng"}
    best = ckpt.read_checkpoint(run / "checkpoints" / "best")
    assert set(best.paths) == {"model", "vecnormalize"}

    evals = evaluations(run)
    assert [e["num_timesteps"] for e in evals] == [150, 300]
    assert all(isinstance(e["success_rate"], float) and 0 <= e["success_rate"] <= 1 for e in evals)
    assert all(e["episodes"] == 3 for e in evals)
    if (run / "TENSORBOARD_SKIPPED.txt").exists():
        pytest.skip("tensorboard is not installed")
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))


def test_sigterm_saves_a_checkpoint_and_resume_continues_counter_buffer_optimiser(tmp_path):
    run, config = tmp_path / "run", tiny_config(tmp_path, eval_every_steps=200)
    args = [REACH, "--timesteps", "100000", "--out", str(run), "--config", str(config)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "factoryfloor.cli", "train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: (run / "evaluations.jsonl").is_file(), proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "--resume" in err
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    saved = last.num_timesteps
    assert last.manifest["interrupted_by"] == "SIGTERM" and saved >= 200
    assert buffer_size_of(run) == saved

    out = cli(REACH, "--out", str(run), "--resume", "--timesteps", str(saved + 150))
    assert out.returncode == 0, out.stderr[-3000:]
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    assert last.num_timesteps == saved + 150 and last.manifest["interrupted_by"] is None
    assert buffer_size_of(run) == saved + 150  # the saved transitions carried over
    adam_steps = int(model_params(run)["actor.optimizer"]["state"][0]["step"])
    assert adam_steps >= saved + 150 - TINY["learning_starts"] - 2  # optimiser state continued
    steps = [e["num_timesteps"] for e in evaluations(run)]
    assert steps == sorted(set(steps)) and steps[-1] == saved + 150
    env = json.loads((run / "environment.json").read_text())
    assert len(env["previous_sessions"]) == 1


def test_sigint_to_the_process_group_with_subprocess_envs_saves_and_stops(tmp_path):
    run = tmp_path / "run"
    config = tiny_config(tmp_path, learning_starts=100, eval_every_steps=100, eval_episodes=1)
    args = [REACH, "--timesteps", "100000", "--n-envs", "2", "--out", str(run)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "factoryfloor.cli", "train", *args, "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: (run / "evaluations.jsonl").is_file(), proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "Traceback" not in err
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    assert last.manifest["interrupted_by"] == "SIGINT" and last.num_timesteps >= 100
    assert buffer_size_of(run) == last.num_timesteps


def _wait_for(condition, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "training did not reach its first evaluation"
        time.sleep(0.1)


@pytest.fixture
def small_run(tmp_path) -> Path:
    cfg = load_config(REACH, None, tiny_config(tmp_path, eval_every_steps=1000), {})
    return train(TrainConfig(**{**cfg.to_dict(), "timesteps": 120, "out": str(tmp_path / "r")}))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_model(run: Path) -> None:
    _flip_a_byte(ckpt.read_checkpoint(run / "checkpoints" / "last").paths["model"])


def _corrupt_manifest(run: Path) -> None:
    (run / "checkpoints" / "last" / ckpt.MANIFEST).write_text('{"format": 1, "num_ti')


def _garbage_with_matching_hash(run: Path) -> None:
    folder = run / "checkpoints" / "last"
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    model = folder / manifest["files"]["model"]["name"]
    model.write_bytes(b"not a zip file")
    manifest["files"]["model"].update(bytes=model.stat().st_size, sha256=ckpt.sha256_of(model))
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_corrupt_model, "is corrupted"),
        (_corrupt_manifest, "is corrupted"),
        (_garbage_with_matching_hash, "cannot load"),
    ],
)
def test_corrupted_checkpoint_gives_a_clear_error(small_run, damage, message, capsys):
    damage(small_run)
    assert main(["train", REACH, "--out", str(small_run), "--resume", "--timesteps", "200"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("factoryfloor train: error: cannot resume") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _short_run(tmp_path: Path, name: str, seed: int) -> Path:
    cfg = load_config(REACH, None, tiny_config(tmp_path, eval_every_steps=1000, eval_episodes=1))
    fields = {
        **cfg.to_dict(),
        "timesteps": 200,
        "seed": seed,
        "device": "cpu",
        "tensorboard": False,
    }
    return train(TrainConfig(**{**fields, "out": str(tmp_path / name)}))


def test_same_seed_gives_identical_weights_and_actions(tmp_path):
    runs = [_short_run(tmp_path, name, seed) for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    weights = [model_params(run)["policy"] for run in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    actions = []  # every action taken in training, random ones first, then the policy's
    for run in runs:
        buffer = replay_buffer(run)
        actions.append(buffer.arrays["actions"][: buffer.size()])
    assert len(actions[0]) == 200
    np.testing.assert_array_equal(actions[0], actions[1])
    assert not np.array_equal(actions[0], actions[2])  # and the seed matters
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"timesteps": 0}, "timesteps=0 is not valid"),
        ({"algo": "a2c"}, "choose one of ['ppo', 'sac', 'td3', 'tqc']"),
        ({"gamma": 1.5}, "discount in (0, 1]"),
        ({"algo": "ppo", "her": True}, "set her: false"),
        ({"learning_starts": 10}, "set learning_starts >= 50"),
        ({"n_envs": 2, "learning_starts": 60}, "set learning_starts >= 100"),
        ({"buffer_size": "1e5"}, "write 100000"),
        ({"device": "gpu"}, "use auto, cpu, cuda"),
        ({"net_arch": []}, "net_arch=[] is not valid"),
        ({"normalize": "yes"}, "normalize must be bool"),
        ({"task": "factoryfloor/Nope-v0"}, "not a registered env id"),
    ],
)
def test_bad_config_values_are_refused_with_a_fix(fields, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{"task": REACH, **fields})
    assert message in str(info.value)


def test_unknown_yaml_key_suggests_the_field(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("learnig_rate: 0.001\n")
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(REACH, config_file=path)


def test_unknown_algo_kwargs_are_refused_before_training(tmp_path):
    cfg = load_config(REACH, None, tiny_config(tmp_path, algo_kwargs={"n_epochs": 3}))
    with pytest.raises(ConfigError, match=r"\['n_epochs'\] are not arguments of SAC"):
        train(TrainConfig(**{**cfg.to_dict(), "out": str(tmp_path / "r")}))


def test_cli_refuses_to_overwrite_or_resume_the_wrong_run(small_run, tmp_path, capsys):
    assert main(["train", REACH, "--out", str(small_run), "--timesteps", "200"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["train", REACH, "--out", str(small_run), "--resume", "--seed", "9"]) == 2
    assert "cannot change ['seed'] when resuming" in capsys.readouterr().err
    assert main(["train", REACH, "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no run" in capsys.readouterr().err


@pytest.mark.parametrize("algo", ["td3", "tqc", "ppo"])
def test_other_algorithms_train_and_checkpoint(algo, tmp_path):
    if algo == "tqc":
        pytest.importorskip("sb3_contrib")
    extra = {"algo_kwargs": {"n_steps": 64}, "batch_size": 32} if algo == "ppo" else {}
    cfg = load_config(REACH, algo, tiny_config(tmp_path, **extra), {"n_envs": 1})
    run = train(TrainConfig(**{**cfg.to_dict(), "timesteps": 128, "out": str(tmp_path / "r")}))
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    assert last.num_timesteps == 128 and last.manifest["algo"] == algo
    assert ("replay_buffer" in last.paths) == (algo != "ppo")
    assert evaluations(run)[-1]["num_timesteps"] == 128


def test_missing_sb3_contrib_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # makes the import fail
    with pytest.raises(ConfigError, match="pip install sb3-contrib"):
        algorithm_class("tqc")


def test_device_auto_picks_cuda_when_torch_sees_it(monkeypatch):
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_shipped_configs_are_valid_named_and_packaged(repo_root):
    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) == 14  # 3 tasks x 4 algorithms, and the camera configs of the pick tasks
    for path in files:
        cfg = TrainConfig(**read_yaml(path))
        entry = BY_ENV_ID[cfg.task]
        obs = str(cfg.env_kwargs.get("obs_mode", "state"))
        suffix = "" if obs == "state" else f"_{obs}"
        assert path.name == f"{task_name(cfg.task)}_{cfg.algo}{suffix}.yaml"
        assert shipped_config(entry, cfg.algo, obs) == path
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    data = tomllib.loads((repo_root / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["factoryfloor.policies"]
    assert all(any(fnmatch.fnmatch(f"configs/{p.name}", g) for g in patterns) for p in files)
    assert load_config(REACH).algo == "sac"  # `factoryfloor train factoryfloor/Reach-v0`


def test_her_reaches_compute_reward_through_gymnasium_wrappers():
    # SB3's HerReplayBuffer calls env_method("compute_reward") on the VecEnv, which resolves
    # it with get_wrapper_attr through gymnasium.make's wrappers: no extra wrapper is needed.
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(REACH, n_envs=1, seed=0)
    try:
        achieved = np.array([[0.4, 0.0, 0.1], [0.4, 0.0, 0.1]])
        desired = np.array([[0.4, 0.0, 0.12], [0.6, 0.0, 0.1]])
        (reward,) = venv.env_method("compute_reward", achieved, desired, [{}, {}], indices=[0])
        np.testing.assert_array_equal(reward, [0.0, -1.0])
    finally:
        venv.close()


@pytest.mark.slow
def test_default_reach_config_reaches_95_percent(tmp_path):
    # The Must-show's success half; its wall time is measured by benchmarks/train_reach_check.py.
    run = train(load_config(REACH, overrides={"out": str(tmp_path / "r"), "progress_bar": False}))
    best = max(e["success_rate"] for e in evaluations(run))
    assert best >= 0.95, evaluations(run)
