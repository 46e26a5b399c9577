"""`train --obs camera` end to end: record with images, clone, pre-train the critic, export."""

from __future__ import annotations

import json
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import yaml
from stable_baselines3 import TD3

from factoryfloor.cli import main
from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.policies.evaluate import evaluate, policy_env_kwargs
from factoryfloor.policies.export import load_run_model
from factoryfloor.policies.model_files import policy_class
from factoryfloor.policies.train_config import ConfigError, load_config
from factoryfloor.stack.demo_media import BAND_PX

PICK = "factoryfloor/PickPlace-v0"
TINY = {
    "timesteps": 24,
    "demo_episodes": 2,
    "bc_epochs": 1,
    "bc_batch_size": 16,
    "critic_pretrain_steps": 3,
    "batch_size": 16,
    "buffer_size": 400,
    "eval_every_steps": 1_000,
    "eval_episodes": 1,
    "progress_bar": False,
    "tensorboard": False,
    "env_kwargs": {"image_size": 40},
}


def test_obs_camera_takes_the_shipped_camera_config():
    cfg = load_config(PICK, obs="camera")
    assert cfg.env_kwargs["obs_mode"] == "camera" and cfg.algo == "sac"
    assert cfg.demo_episodes > 0 and cfg.bc_epochs > 0 and cfg.critic_pretrain_steps > 0
    assert cfg.bc_alpha > 0  # RL fine-tuning holds the actor to the demonstrations
    with pytest.raises(ConfigError, match="asymmetric SAC"):
        policy_class(TD3, replace(cfg, algo="td3", bc_alpha=0.0), None)  # type: ignore[arg-type]


def test_no_shipped_camera_config_is_one_clear_error():
    with pytest.raises(ConfigError, match="no shipped camera config"):
        load_config("factoryfloor/Reach-v0", obs="camera")


def test_eval_of_a_camera_run_folder_makes_the_camera_env(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(PICK, obs="camera")
    env_kwargs = {**cfg.env_kwargs, "image_size": 40, "randomize": True}
    (run / "config.yaml").write_text(replace(cfg, env_kwargs=env_kwargs).to_yaml())
    # the spaces' arguments come from the run; dynamics (randomize) stay the evaluator's choice
    assert policy_env_kwargs(str(run)) == {"obs_mode": "camera", "image_size": 40}
    assert policy_env_kwargs(str(tmp_path)) == {}  # a folder without config.yaml

    for text, says in ((f"task: {PICK}\ntimesteps: [1, 2]\n", "timesteps"), ("seed: 3\n", "task")):
        (run / "config.yaml").write_text(text)  # a hand-edited run config: one line, exit 2
        assert main(["eval", PICK, "--policy", str(run), "--episodes", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "config.yaml" in err and says in err, err


@pytest.mark.slow
def test_camera_run_exports_an_actor_that_reads_no_privileged_key(tmp_path):
    run, config, bundle = tmp_path / "run", tmp_path / "tiny.yaml", tmp_path / "cam.ffpolicy"
    config.write_text(yaml.safe_dump(TINY))
    args = ["train", PICK, "--obs", "camera", "--out", str(run), "--config", str(config),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    bc = json.loads((run / "bc.json").read_text())
    assert bc["epochs"] == 1 and bc["critic_pretrain"]["steps"] == 3
    assert np.isfinite(bc["critic_pretrain"]["last_loss"])
    assert main(["export", str(run), "--out", str(bundle), "--checkpoint", "last"]) == 0

    policy = load_bundle(bundle)
    manifest = policy.manifest
    assert manifest is not None
    keys = manifest["observation"]["keys"]
    assert "privileged" not in keys and "achieved_goal" not in keys
    assert set(keys) == {"observation", "desired_goal", "image", "wrist_image"}
    for key in ("image", "wrist_image"):
        entry = manifest["observation"]["spaces"][key]
        assert entry["dtype"] == "uint8" and entry["shape"] == [40, 40, 3]
        assert entry["channel_order"] == "HWC" and entry["camera"]["width"] == 40
    assert manifest["export_check"]["max_abs_diff"]["onnxruntime"] <= 1e-5

    # The bundle acts like the trained actor on a fresh env observation, images as uint8.
    model, vecnorm, _, _ = load_run_model(run, "last")
    env = gym.make(PICK, obs_mode="camera", image_size=40)
    obs, _ = env.reset(seed=11)
    batch = {k: v[None] for k, v in obs.items()}
    expected, _ = model.predict(vecnorm.normalize_obs(batch), deterministic=True)
    got = policy.act_batch({k: batch[k] for k in keys})
    assert np.max(np.abs(got - expected)) <= 1e-5
    env.close()

    # `factoryfloor eval TASK --policy CAMERA.ffpolicy` makes the camera env the bundle needs.
    assert policy_env_kwargs(str(bundle)) == {"obs_mode": "camera", "image_size": 40}
    assert policy_env_kwargs("expert") == {}
    result = evaluate(PICK, str(bundle), episodes=1, seed=5)
    assert result.episodes == 1 and result.mean_episode_length >= 1
    # ... and so does `eval TASK --policy RUN_FOLDER` (a state env is refused: other shapes)
    assert evaluate(PICK, str(run), episodes=1, seed=5).episodes == 1

    # The simulated cell feeds the served bundle its camera frames over the edge protocol: the
    # commands it applied are the bundle's actions on the observations it rendered and sent.
    _cell_drives_the_served_camera_bundle(policy)

    # The demo runs the whole stack with the camera bundle; its video shows the policy's view.
    out = tmp_path / "demo"
    args = ["demo", "--policy", str(bundle), "--episodes", "1", "--video-episodes", "1",
            "--min-success", "0", "--hold-window-ms", "200", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    import av

    with av.open(str(out / "demo.mp4")) as video:
        frame = next(video.decode(video=0))
    assert (frame.width, frame.height) == (480 + 180, 360 + BAND_PX)


def _cell_drives_the_served_camera_bundle(policy) -> None:
    import threading

    from factoryfloor.edge_runtime.client import EdgeClient
    from factoryfloor.edge_runtime.controller import ControllerRuntime
    from factoryfloor.edge_runtime.served import BundleServedPolicy
    from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig
    from factoryfloor.stack.sim_cell import SimController, cell_kwargs

    kwargs = cell_kwargs(policy.manifest)
    assert kwargs == {"obs_mode": "camera", "image_size": 40}
    controller = SimController(PICK, episodes=1, seed=23, env_kwargs=kwargs)
    fields = controller.description.observation
    assert [f["name"] for f in fields] == policy.manifest["observation"]["keys"]
    assert {f["name"]: f["dtype"] for f in fields}["image"] == "uint8"
    server = PolicyServer(
        BundleServedPolicy(policy), ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        runtime = ControllerRuntime(
            controller, EdgeClient(server.endpoint), hold_window_s=0.2, max_change=np.full(4, 2.0)
        )
        runtime.rearm()
        report = runtime.run(max_cycles=400)
    finally:
        server.stop_event.set()
        thread.join(5)
        server.close()
        controller.close()
    # (a generous hold window: other tests load the machine beside it in CI)
    assert report.state == "RUNNING" and len(controller.results) == 1, report.reason
    commands = controller.results[0]["commands"]
    env = gym.make(PICK, **kwargs)
    obs, _ = env.reset(seed=23)
    matched = 0
    for command in commands:
        expected = policy.act_batch(
            {k: obs[k][None] for k in policy.manifest["observation"]["keys"]}
        )
        matched += bool(np.max(np.abs(expected[0] - command)) <= 1e-5)
        obs, *_ = env.step(command)
    env.close()
    # every answered cycle applies the bundle's action; a held cycle (a late answer on a
    # loaded machine) repeats the last one, and those are counted by the safety layer
    assert matched >= len(commands) - report.safety["held"] and matched > len(commands) // 2
