"""Demonstrations: `factoryfloor demos record` as Minari datasets, and `train --demos`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from factoryfloor.cli import main
from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies import run_files
from factoryfloor.policies.demos import (
    DemosError,
    dataset_folder,
    default_dataset_id,
    load_demos,
    record_demos,
)
from factoryfloor.policies.train import train
from factoryfloor.policies.train_config import ConfigError, TrainConfig, load_config

REACH = "factoryfloor/Reach-v0"
REACH_ID = "factoryfloor/reach-panda-state-v0"
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
    root = tmp_path_factory.mktemp("demos")
    record_demos(REACH, 3, root, seed=0, command="test", progress=False)
    return dataset_folder(REACH_ID, root)


def test_dataset_ids_name_task_robot_and_obs_mode():
    assert (
        default_dataset_id("factoryfloor/PickPlace-v0") == "factoryfloor/pick-place-panda-state-v0"
    )
    assert default_dataset_id(REACH, "xarm6", "camera") == "factoryfloor/reach-xarm6-camera-v0"


def test_record_writes_a_minari_dataset_with_hashes(reach_demos):
    import minari

    sidecar = json.loads((reach_demos / "factoryfloor.json").read_text())
    assert sidecar["format"] == "factoryfloor-minari-demos" and sidecar["format_version"] == 4
    assert (
        sidecar["env_id"] == REACH and sidecar["robot"] == "panda" and sidecar["command"] == "test"
    )
    assert sidecar["storage"] == "parquet" and sidecar["jpeg_encoding"] is False
    assert sorted(sidecar["files"]) == sorted(
        [f"{i}/{name}" for i in range(3) for name in ("metadata.json", "part-0.parquet")]
        + ["metadata.json"]
    )
    assert [e["seed"] for e in sidecar["episodes"]] == [0, 1, 2]
    dataset = minari.MinariDataset(reach_demos)
    assert dataset.total_episodes == 3 and dataset.spec.dataset_id == REACH_ID
    assert dataset.total_steps == sidecar["total_transitions"]
    seeds = [m["seed"] for m in dataset.storage.get_episode_metadata(range(3))]
    assert seeds == [0, 1, 2]
    demos = load_demos(reach_demos, env_id=REACH)
    assert demos.index["verified"] and demos.total_transitions == sidecar["total_transitions"]
    for ep, theirs in zip(demos.episodes, dataset.iterate_episodes(), strict=True):
        t = len(theirs.actions)
        assert ep["actions"].shape == (t, 4) and ep["actions"].dtype == np.float32
        np.testing.assert_array_equal(ep["actions"], theirs.actions)
        for key, value in theirs.observations.items():
            assert ep[f"obs/{key}"].shape == value.shape == (t + 1, *value.shape[1:])
        for key in ("rewards", "terminated", "truncated", "is_success"):
            assert ep[key].shape == (t,)
        assert ep["is_success"][-1] and np.all(np.abs(ep["actions"]) <= 1)
        np.testing.assert_array_equal(ep["is_success"], theirs.infos["is_success"][1:])


def test_camera_datasets_keep_uint8_images(tmp_path):
    pick = "factoryfloor/PickPlace-v0"
    index = record_demos(pick, 1, tmp_path, obs_mode="camera", command="t", progress=False)
    assert index["dataset_id"] == "factoryfloor/pick-place-panda-camera-v0"
    demos = load_demos(dataset_folder(index["dataset_id"], tmp_path), env_id=pick)
    ep = demos.episodes[0]
    keys = {"observation", "privileged", "achieved_goal", "desired_goal", "image", "wrist_image"}
    assert {k[4:] for k in ep if k.startswith("obs/")} == keys
    t = len(ep["actions"])
    for key in ("image", "wrist_image"):
        assert ep[f"obs/{key}"].dtype == np.uint8 and ep[f"obs/{key}"].shape == (t + 1, 84, 84, 3)
    assert ep["is_success"][-1]


def test_ids_paths_roots_and_refusals(reach_demos, tmp_path, monkeypatch):
    root = reach_demos.parent.parent.parent
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    for given in (REACH_ID, reach_demos, reach_demos.parent, root):  # id, folders, a root of one
        assert load_demos(given).folder == reach_demos
    with pytest.raises(DemosError, match="recorded on 'factoryfloor/Reach-v0'"):
        load_demos(reach_demos, env_id="factoryfloor/PickPlace-v0")
    with pytest.raises(DemosError, match="holds no Minari dataset"):
        load_demos(tmp_path)
    with pytest.raises(DemosError, match="no Minari dataset 'factoryfloor/nope-v0' under"):
        load_demos("factoryfloor/nope-v0")
    with pytest.raises(DemosError, match="neither a dataset folder nor a Minari dataset id"):
        load_demos("demos/pp")
    with pytest.raises(DemosError, match="already exists"):
        record_demos(REACH, 1, root, progress=False)
    with pytest.raises(DemosError, match="not a Minari id"):
        record_demos(REACH, 1, tmp_path, dataset_id="../escape", progress=False)
    assert not list(root.rglob("*.partial-*"))  # nothing half-written is left behind


def test_a_crash_while_recording_leaves_no_dataset(tmp_path, monkeypatch):
    from factoryfloor.policies import demos_write

    def crash(self, episode):
        raise KeyboardInterrupt

    monkeypatch.setattr(demos_write.DatasetWriter, "add", crash)
    with pytest.raises(KeyboardInterrupt):
        record_demos(REACH, 2, tmp_path, progress=False)
    assert not (tmp_path / REACH_ID).exists() and not list(tmp_path.rglob("*.partial-*"))


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
    from factoryfloor.policies import train_demos

    seen = {}
    real = train_demos.add_demos

    def spy(cfg, model, env, run_dir):
        real(cfg, model, env, run_dir)
        seen["size"] = int(model.replay_buffer.size() * model.replay_buffer.n_envs)
        seen["episodes"] = int((model.replay_buffer.ep_length > 0).any(axis=1).sum())

    monkeypatch.setattr(train_demos, "add_demos", spy)
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


def test_minari_round_trip(tmp_path, monkeypatch):
    """Record with factoryfloor, read with Minari, train from the id, export, load the bundle."""
    import minari

    from factoryfloor.edge_runtime.bundle import load_bundle

    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    index = record_demos(REACH, 3, seed=0, command="test", progress=False)  # Minari's root
    assert index["dataset_id"] == REACH_ID
    dataset = minari.load_dataset(REACH_ID)
    assert dataset.total_episodes == 3 and dataset.total_steps == index["total_transitions"]
    episodes = list(dataset.iterate_episodes())
    assert all(ep.infos["is_success"][-1] and ep.terminations[-1] for ep in episodes)
    assert set(episodes[0].observations) == {"observation", "achieved_goal", "desired_goal"}

    run, config = tmp_path / "run", tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "bc_epochs": 1, "bc_batch_size": 8}))
    args = ["train", REACH, "--demos", REACH_ID, "--timesteps", "2", "--out", str(run),
            "--config", str(config), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    bc = json.loads((run / "bc.json").read_text())
    assert bc["epochs"] == 1 and bc["transitions"] == index["total_transitions"]
    assert bc["demos"] == REACH_ID
    bundle = tmp_path / "reach.ffpolicy"
    assert main(["export", str(run), "--out", str(bundle), "--checkpoint", "last"]) == 0
    policy = load_bundle(bundle, backend="numpy")
    assert policy.manifest is not None


def test_cli_demos_record_smoke(tmp_path):
    root = tmp_path / "root"
    proc = subprocess.run(
        [sys.executable, "-m", "factoryfloor.cli", "demos", "record", REACH,
         "--episodes", "2", "--out", str(root), "--seed", "5", "--dataset-id", "me/reach-v3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 2 episodes" in proc.stdout and "me/reach-v3" in proc.stdout
    index = load_demos(root / "me" / "reach-v3", env_id=REACH).index
    assert [e["seed"] for e in index["episodes"]] == [5, 6] and "demos record" in index["command"]
    again = subprocess.run(
        [sys.executable, "-m", "factoryfloor.cli", "demos", "record", REACH,
         "--episodes", "2", "--out", str(root), "--dataset-id", "me/reach-v3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr


def test_action_noise_moves_the_motion_commands_only_and_keeps_the_mean():
    from factoryfloor.policies.rollout import with_action_noise

    def clean(obs):
        return np.array([0.2, -0.3, 0.0, 1.0], dtype=np.float32)

    assert with_action_noise(clean, 0.0, np.random.default_rng(0)) is clean
    noisy = with_action_noise(clean, 0.1, np.random.default_rng(0))
    actions = np.array([noisy({}) for _ in range(4000)])
    assert actions.dtype == np.float32 and np.all(np.abs(actions) <= 1)
    assert np.all(actions[:, 3] == 1.0)  # the gripper command is left alone
    np.testing.assert_allclose(actions[:, :3].mean(0), [0.2, -0.3, 0.0], atol=0.01)
    np.testing.assert_allclose(actions[:, :3].std(0), 0.1, rtol=0.1)
    edge = with_action_noise(lambda obs: np.ones(4, np.float32), 0.5, np.random.default_rng(1))
    assert np.all(np.array([edge({}) for _ in range(100)]) <= 1.0)  # clipped to the box


def test_noisy_recording_stores_what_ran_and_repeats_with_its_seed(tmp_path):
    from factoryfloor.policies.scripted import make_expert

    sidecars, demos = [], []
    for i, noise in enumerate((0.3, 0.3, 0.0)):
        root = tmp_path / str(i)
        sidecars.append(
            record_demos(REACH, 2, root, seed=7, progress=False, action_noise=noise, command="t")
        )
        demos.append(load_demos(dataset_folder(REACH_ID, root), env_id=REACH))
    assert [s["action_noise"] for s in sidecars] == [0.3, 0.3, 0.0]
    for a, b in zip(demos[0].episodes, demos[1].episodes, strict=True):  # same seed: same run
        np.testing.assert_array_equal(a["actions"], b["actions"])
    noisy, clean = demos[0].episodes[0], demos[2].episodes[0]
    assert not np.array_equal(noisy["actions"][:5], clean["actions"][:5])
    # The stored actions are the ones that ran: replaying them gives the stored observations.
    import gymnasium as gym

    env = gym.make(REACH)
    obs, _ = env.reset(seed=sidecars[0]["episodes"][0]["seed"])
    for t, action in enumerate(noisy["actions"]):
        np.testing.assert_allclose(obs["observation"], noisy["obs/observation"][t], atol=1e-6)
        obs, *_ = env.step(action)
    expert = make_expert(env)  # and they differ from the expert's own commands
    obs, _ = env.reset(seed=sidecars[0]["episodes"][0]["seed"])
    assert not np.allclose(expert.act(obs)[:3], noisy["actions"][0][:3])
    env.close()


def test_cli_refuses_a_bad_noise_in_one_line(tmp_path, capsys):
    for bad in ("nan", "2", "-0.1", "much"):
        args = ["demos", "record", REACH, "--episodes", "1", "--out", str(tmp_path),
                "--action-noise", bad]  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "is not a noise std in [0, 1]" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_recording_noise_without_a_recording_is_refused(reach_demos):
    with pytest.raises(ConfigError, match="demo_action_noise"):
        load_config(REACH, None, None, {"demos": str(reach_demos), "demo_action_noise": 0.2})
    cfg = load_config(REACH, None, None, {"demo_episodes": 3, "demo_action_noise": 0.2})
    assert cfg.demo_action_noise == 0.2


def test_train_records_its_demos_with_the_configured_noise(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(
        REACH, "sac", None,
        {**TINY, "timesteps": 1, "out": str(run), "demo_episodes": 2, "demo_action_noise": 0.1,
         "bc_epochs": 1},
    )  # fmt: skip
    train(cfg)
    folder = dataset_folder(REACH_ID, run / "demos")
    sidecar = json.loads((folder / "factoryfloor.json").read_text())
    assert sidecar["action_noise"] == 0.1 and len(sidecar["episodes"]) == 2
    assert (run / "bc.json").is_file()
