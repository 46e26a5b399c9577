"""Behaviour cloning of the actor from demonstrations, alone and inside ``train``."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from factoryfloor.policies.bc import behaviour_clone, demo_pairs
from factoryfloor.policies.demos import load_demos, record_demos, seed_replay_buffer
from factoryfloor.policies.train import train
from factoryfloor.policies.train_config import ConfigError, load_config

REACH = "factoryfloor/Reach-v0"


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bc") / "reach"
    record_demos(REACH, 20, out, seed=0, command="test")
    return out


def make_model(cls: type, seed: int = 0) -> object:
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(REACH)]), norm_reward=False)
    kwargs = {"buffer_size": 5_000, "learning_starts": 0} if cls is not PPO else {}
    return cls("MultiInputPolicy", venv, seed=seed, device="cpu", **kwargs)


def action_error(model: object, demos) -> float:
    """Mean squared error of the model's deterministic actions on the demonstrations."""
    obs, actions = demo_pairs(demos)
    vecnorm = model.get_vec_normalize_env()
    predicted, _ = model.predict(vecnorm.normalize_obs(obs), deterministic=True)
    return float(np.mean((predicted - actions) ** 2))


@pytest.mark.parametrize("cls", [SAC, TD3])
def test_cloning_fits_the_expert_actions(reach_demos, cls):
    demos = load_demos(reach_demos)
    model = make_model(cls)
    seed_replay_buffer(model, demos)  # also sets the normalisation statistics
    before = action_error(model, demos)
    result = behaviour_clone(model, demos, epochs=30, batch_size=64, learning_rate=3e-3)
    after = action_error(model, demos)
    assert result.transitions == demos.total_transitions
    assert result.final_loss < result.first_loss / 5
    assert after < before / 10 and after < 0.02, (before, after)
    if cls is TD3:  # the target actor starts from the cloned one
        for p, q in zip(model.actor.parameters(), model.actor_target.parameters(), strict=True):
            assert torch.equal(p, q)


def test_cloning_is_reproducible_and_the_seed_matters(reach_demos):
    demos = load_demos(reach_demos)
    weights = []
    for bc_seed in (0, 0, 1):
        model = make_model(SAC)
        seed_replay_buffer(model, demos)
        behaviour_clone(model, demos, epochs=2, batch_size=64, seed=bc_seed)
        weights.append(torch.cat([p.flatten() for p in model.actor.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_cloning_refuses_models_without_an_actor_and_bad_epochs(reach_demos):
    demos = load_demos(reach_demos)
    with pytest.raises(ValueError, match="off-policy actor"):
        behaviour_clone(make_model(PPO), demos, epochs=1)
    with pytest.raises(ValueError, match="epochs >= 1"):
        behaviour_clone(make_model(SAC), demos, epochs=0)


def test_bc_config_needs_demonstrations():
    with pytest.raises(ConfigError, match="set demos or demo_episodes"):
        load_config(REACH, "sac", None, {"bc_epochs": 5})
    with pytest.raises(ConfigError, match="demo_episodes"):
        load_config(REACH, "ppo", None, {"demo_episodes": 5})


def test_train_records_demos_clones_and_evaluates_at_step_zero(tmp_path):
    run = tmp_path / "run"
    overrides = {
        "timesteps": 10, "demo_episodes": 100, "bc_epochs": 200, "bc_learning_rate": 3e-3,
        "bc_batch_size": 64, "learning_starts": 1_000, "buffer_size": 5_000, "batch_size": 64,
        "eval_every_steps": 1_000, "eval_episodes": 20, "checkpoint_every_steps": 0,
        "progress_bar": False, "tensorboard": False, "out": str(run),
    }  # fmt: skip
    train(load_config(REACH, "sac", None, overrides))
    index = load_demos(run / "demos").index
    assert len(index["episodes"]) == 100 and index["episodes"][0]["seed"] == 0
    bc = json.loads((run / "bc.json").read_text())
    assert bc["epochs"] == 200 and bc["transitions"] == index["total_transitions"]
    assert bc["final_loss"] < bc["first_loss"]
    evaluations = [json.loads(ln) for ln in (run / "evaluations.jsonl").read_text().splitlines()]
    assert evaluations[0]["num_timesteps"] == 0
    # 100 demonstrations (~300 steps) are enough to clone Reach: the cloned actor alone succeeds
    assert evaluations[0]["success_rate"] >= 0.8, evaluations[0]
    config = (run / "config.yaml").read_text()
    assert f"demos: {run / 'demos'}" in config


def test_training_stops_at_the_target_success_rate(tmp_path):
    """A cloned Reach actor that already meets the target stops the run at step 0."""
    run = tmp_path / "run"
    overrides = {
        "timesteps": 5_000, "demo_episodes": 100, "bc_epochs": 200, "bc_learning_rate": 3e-3,
        "bc_batch_size": 64, "buffer_size": 10_000, "batch_size": 64, "eval_episodes": 10,
        "target_success": 0.8, "progress_bar": False, "tensorboard": False, "out": str(run),
    }  # fmt: skip
    train(load_config(REACH, "sac", None, overrides))
    manifest = json.loads((run / "checkpoints" / "last" / "checkpoint.json").read_text())
    assert manifest["num_timesteps"] == 0
    assert manifest["stopped_because"] == "target success rate 0.8 reached"
    lines = (run / "evaluations.jsonl").read_text().splitlines()
    assert len(lines) == 1  # not evaluated again at the end


def test_training_stops_when_the_wall_time_budget_is_spent(tmp_path):
    run = tmp_path / "run"
    overrides = {
        "timesteps": 1_000_000, "max_wall_time_s": 3.0, "learning_starts": 100,
        "buffer_size": 10_000, "batch_size": 64, "eval_every_steps": 100_000, "eval_episodes": 2,
        "progress_bar": False, "tensorboard": False, "out": str(run),
    }  # fmt: skip
    train(load_config(REACH, "sac", None, overrides))
    manifest = json.loads((run / "checkpoints" / "last" / "checkpoint.json").read_text())
    assert manifest["stopped_because"] == "wall-time budget of 3.0 s spent"
    assert 0 < manifest["num_timesteps"] < 100_000
    assert 3.0 <= manifest["wall_time_s"] < 60
    evaluations = [json.loads(ln) for ln in (run / "evaluations.jsonl").read_text().splitlines()]
    assert evaluations[-1]["num_timesteps"] == manifest["num_timesteps"]  # final evaluation


def test_normalisation_stays_that_of_the_demonstrations_after_cloning(tmp_path):
    from factoryfloor.policies import checkpoint as ckpt
    from factoryfloor.policies import run_files

    run = tmp_path / "run"
    overrides = {
        "timesteps": 300, "demo_episodes": 5, "bc_epochs": 2, "learning_starts": 100,
        "buffer_size": 5_000, "batch_size": 32, "eval_every_steps": 10_000, "eval_episodes": 1,
        "checkpoint_every_steps": 0, "progress_bar": False, "tensorboard": False, "out": str(run),
    }  # fmt: skip
    train(load_config(REACH, "sac", None, overrides))
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    vecnorm = run_files.read_vecnormalize(last.paths["vecnormalize"])
    demos = load_demos(run / "demos")
    steps = sum(len(ep["obs/observation"]) for ep in demos.episodes)
    # statistics from the demonstrations' observations only, not the 300 steps trained
    assert vecnorm.obs_rms["observation"].count == pytest.approx(steps + 1e-4)
