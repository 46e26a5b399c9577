"""RayVecEnv on a local Ray with 2 CPUs: SubprocVecEnv parity, HER training, actor restarts."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import SubprocVecEnv  # noqa: E402

from factoryfloor.policies import train as training  # noqa: E402
from factoryfloor.policies.ray_vec_env import RayVecEnv  # noqa: E402

REACH = "factoryfloor/Reach-v0"


@pytest.fixture
def local_ray():
    """A local Ray with 2 CPUs (started once per worker process, or again after the cluster
    test shut its own down; Ray stops with the process)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def rollout(venv, seed: int, steps: int) -> list:
    venv.seed(seed)
    rng = np.random.default_rng(0)
    records = [venv.reset()]
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (venv.num_envs, 4)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        terminal = [i.get("terminal_observation") for i in infos]
        records.append((obs, rewards, dones, terminal))
    return records


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif a is None:
        assert b is None
    else:
        np.testing.assert_array_equal(a, b)


def test_same_observations_rewards_and_dones_as_subproc(local_ray):
    ray_env = RayVecEnv(REACH, n_envs=4, envs_per_actor=2)
    # what `train` builds without Ray (its env factory imports factoryfloor in each worker)
    sub_env = make_vec_env(partial(training._make_env, REACH, True), 4, vec_env_cls=SubprocVecEnv)
    try:
        assert ray_env.n_actors == 2
        steps = 120  # Reach episodes end (success or 50 steps): auto-resets are compared too
        ours, theirs = rollout(ray_env, 7, steps), rollout(sub_env, 7, steps)
        assert_same(ours, theirs)
        assert any(r[2].any() for r in ours[1:])
        # HER and evaluation callbacks reach the envs the same way
        assert ray_env.get_attr("spec")[0].id == REACH
        goal = np.zeros((2, 3), np.float32)
        assert np.array_equal(
            ray_env.env_method("compute_reward", goal, goal, {}, indices=[0])[0],
            sub_env.env_method("compute_reward", goal, goal, {}, indices=[0])[0],
        )
    finally:
        ray_env.close()
        sub_env.close()


def test_a_dead_actor_is_restarted_counted_and_the_run_goes_on(local_ray):
    venv = RayVecEnv(REACH, n_envs=4, envs_per_actor=2)
    try:
        venv.seed(0)
        venv.reset()
        actions = np.zeros((4, 4), np.float32)
        venv.step(actions)
        ray.kill(venv.actors[1])  # envs 2 and 3 die with it
        _, _, dones, infos = venv.step(actions)
        assert venv.restarts == 1
        assert dones.tolist() == [False, False, True, True]
        assert infos[2]["actor_restarted"] and infos[2]["TimeLimit.truncated"]
        assert infos[2]["terminal_observation"]["observation"].shape == (7,)
        for _ in range(10):  # the run goes on
            obs, *_ = venv.step(actions)
        assert obs["observation"].shape == (4, 7) and venv.restarts == 1
    finally:
        venv.close()


def test_her_training_runs_on_ray(local_ray, tmp_path):
    from factoryfloor.policies.train import train
    from factoryfloor.policies.train_config import load_config

    overrides = {
        "timesteps": 400, "n_envs": 4, "ray": True, "envs_per_actor": 2,
        "learning_starts": 200, "buffer_size": 5_000, "batch_size": 64, "eval_every_steps": 400,
        "eval_episodes": 2, "checkpoint_every_steps": 0, "progress_bar": False,
        "tensorboard": False, "out": str(tmp_path / "run"),
    }  # fmt: skip
    run = train(load_config(REACH, "sac", None, overrides))
    import json

    manifest = json.loads((run / "checkpoints" / "last" / "checkpoint.json").read_text())
    assert manifest["num_timesteps"] == 400
    assert (run / "evaluations.jsonl").read_text().strip()


def test_actors_spread_over_a_two_node_cluster():
    """A head and a worker node made on this machine with Ray's own test cluster utilities."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        venv = RayVecEnv(REACH, n_envs=2, envs_per_actor=1)  # one CPU per actor: one per node
        try:
            venv.seed(0)
            obs = venv.reset()
            assert obs["observation"].shape == (2, 7)
            nodes = venv.node_ids()
            assert len(set(nodes)) == 2, nodes
            venv.step(np.zeros((2, 4), np.float32))
        finally:
            venv.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_eval_on_ray_matches_in_process_evaluation(local_ray):
    from importlib.resources import files

    from factoryfloor.policies.evaluate import evaluate
    from factoryfloor.policies.ray_eval import evaluate_on_ray

    bundle = str(files("factoryfloor.policies") / "pretrained" / "reach_panda.ffpolicy")
    for policy in ("expert", bundle):
        spread = evaluate_on_ray(REACH, policy, episodes=7, seed=100, workers=2)
        local = evaluate(REACH, policy, episodes=7, seed=100)
        assert spread.successes == local.successes
        assert spread.episode_lengths == local.episode_lengths
        assert spread.mean_return == pytest.approx(local.mean_return)
        assert spread.episodes == 7 and spread.seed == 100


def test_sweep_two_configs_two_seeds_writes_the_summary(local_ray, tmp_path, capsys):
    import json

    from factoryfloor.cli import main

    grid = tmp_path / "grid.yaml"
    grid.write_text("learning_rate: [0.001, 0.0003]\n")
    out = tmp_path / "sweep"
    code = main(["sweep", REACH, "--algo", "sac", "--seeds", "0-1", "--grid", str(grid),
                 "--out", str(out), "--timesteps", "200", "--no-early-stop"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 4 and len(summary["configs"]) == 2
    for row in summary["configs"].values():
        assert set(row["seeds"]) == {"0", "1"}
        assert 0.0 <= row["mean"] <= 1.0 and row["std"] >= 0.0
        for trial in row["seeds"].values():
            assert (Path(trial["run"]) / "evaluations.jsonl").is_file()  # a normal run folder
    assert summary["best"]["name"] in summary["configs"]
    assert "best:" in capsys.readouterr().out


def test_sweep_stops_hopeless_trials_early(local_ray, tmp_path):
    """One config clones the expert (target met at its first evaluation, step 0), the other
    learns from scratch and cannot succeed in 800 steps: ASHA stops all its trials before the
    end, because the cloned trials hold their result at the milestones they never trained to."""
    from factoryfloor.policies.sweep import run_sweep

    grid = {"bc_epochs": [200, 0]}
    fixed = {
        "timesteps": 800, "demo_episodes": 100, "bc_batch_size": 64, "bc_learning_rate": 3e-3,
        "learning_starts": 100, "buffer_size": 5_000, "batch_size": 32, "eval_every_steps": 100,
        "eval_episodes": 5, "checkpoint_every_steps": 0,
    }  # fmt: skip
    summary = run_sweep(REACH, "sac", [0, 1], grid, tmp_path / "sweep", fixed)
    configs = summary["configs"]
    cloned = next(r for r in configs.values() if r["config"]["bc_epochs"] == 200)
    hopeless = next(r for r in configs.values() if r["config"]["bc_epochs"] == 0)
    assert cloned["mean"] >= 0.8 and summary["best"]["config"]["bc_epochs"] == 200
    for trial in cloned["seeds"].values():
        assert trial["reached_target"] and not trial["stopped_early"], cloned
        assert trial["num_timesteps"] < 800  # steps trained, not the held milestones
    for trial in hopeless["seeds"].values():
        assert trial["stopped_early"] and not trial["reached_target"], hopeless
        assert trial["num_timesteps"] < 800


@pytest.mark.parametrize(
    ("target", "last", "expected"),
    [
        (0.95, {"success_rate": 1.0, "num_timesteps": 0}, [100, 200, 300, 400]),
        (0.95, {"success_rate": 1.0, "num_timesteps": 250}, [300, 400]),
        (0.95, {"success_rate": 1.0, "num_timesteps": 400}, []),  # the budget was spent
        (0.95, {"success_rate": 0.9, "num_timesteps": 0}, []),  # below the target
        (0.0, {"success_rate": 1.0, "num_timesteps": 0}, []),  # no target: never stops on it
        (0.95, {}, []),  # no evaluation at all
    ],
)
def test_held_milestones_only_after_a_target_was_met(target, last, expected):
    from factoryfloor.policies.sweep import held_milestones

    cfg = SimpleNamespace(target_success=target, eval_every_steps=100, timesteps=400)
    assert held_milestones(cfg, last) == expected
