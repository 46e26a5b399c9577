"""The demonstrations of a training run: recorded, seeded, cloned, and held to.

``factoryfloor.policies.train`` calls these for a run with ``demos`` or ``demo_episodes``:
``record_run_demos`` records the expert into the run folder, ``add_demos`` seeds the replay
buffer, clones the actor, pre-trains the critic and anchors the actor (``bc.json`` sums it up),
and ``anchor_to_demos`` anchors a resumed run's actor again (its demonstrations are not in the
checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm

from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies.train_config import TrainConfig


def record_run_demos(cfg: TrainConfig, run_dir: Path) -> Path:
    """Record ``cfg.demo_episodes`` expert episodes under ``run_dir/demos`` (kept on a rerun)."""
    from factoryfloor.policies.demos import dataset_folder, default_dataset_id, record_demos

    obs_mode = str(cfg.env_kwargs.get("obs_mode", "state"))
    dataset_id = default_dataset_id(cfg.task, cfg.robot, obs_mode)
    folder = dataset_folder(dataset_id, run_dir / "demos")
    if not folder.is_dir():
        record_demos(
            cfg.task, cfg.demo_episodes, run_dir / "demos", robot=cfg.robot, seed=cfg.seed,
            progress=bool(cfg.progress_bar), obs_mode=obs_mode, dataset_id=dataset_id,
            image_size=cfg.env_kwargs.get("image_size"), action_noise=cfg.demo_action_noise,
        )  # fmt: skip
    return folder


def add_demos(
    cfg: TrainConfig, model: BaseAlgorithm, env: gym.Env[Any, Any], run_dir: Path
) -> None:
    """Seed a new run's replay buffer with ``cfg.demos``, then use them as the config asks.

    In this order: clone the actor (``bc_epochs``), fit the critic to it
    (``critic_pretrain_steps``), hold the actor to them in the RL that follows (``bc_alpha``).
    With cloning or the anchor, the observation normalisation statistics stay those of the
    demonstrations for the rest of the run: the actor relies on them, and the drift brought by
    early exploratory episodes was measured to undo the cloning (PickPlace: 98% -> 32% success
    in 2,000 env steps with the actor frozen).

    Demonstrations made for another env are refused (``DemosError``).
    """
    from factoryfloor.policies.bc import behaviour_clone, demo_tensors
    from factoryfloor.policies.demos import check_compatible, load_demos, seed_replay_buffer

    demos = load_demos(cfg.demos or "", env_id=cfg.task)
    check_compatible(demos, env, cfg.robot)
    added = seed_replay_buffer(model, demos)
    if cfg.verbose:
        note = "" if demos.index["verified"] else " (unverified: no factoryfloor.json hashes)"
        print(f"replay buffer seeded with {added} demonstration transitions from {cfg.demos}{note}")
    if not cfg.bc_epochs and not cfg.critic_pretrain_steps and not cfg.bc_alpha:
        return
    summary: dict[str, Any] = {"demos": cfg.demos}
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None and fixed_statistics(cfg):  # the actor relies on the demos' ones
        vecnorm.training = False
    tensors = demo_tensors(model, demos) if cfg.bc_epochs or cfg.bc_alpha else None
    if cfg.bc_epochs:
        result = behaviour_clone(
            model, demos, cfg.bc_epochs, cfg.bc_batch_size, cfg.bc_learning_rate, cfg.seed,
            progress=bool(cfg.progress_bar), tensors=tensors,
        )  # fmt: skip
        summary.update(result.to_dict())
        if cfg.verbose:
            print(f"behaviour cloning: {result}")
    if cfg.critic_pretrain_steps:
        from factoryfloor.policies.critic_pretrain import pretrain_critic

        critic = pretrain_critic(
            model, cfg.critic_pretrain_steps, cfg.batch_size, bool(cfg.progress_bar)
        )
        summary["critic_pretrain"] = critic.to_dict()
        if cfg.verbose:
            print(f"critic pre-training: {critic}")
    if cfg.bc_alpha and tensors is not None:
        model.set_anchor(*tensors)  # type: ignore[attr-defined]  # AnchoredSAC
        summary["bc_alpha"] = cfg.bc_alpha
    ckpt.atomic_write_text(run_dir / "bc.json", json.dumps(summary, indent=1) + "\n")


def fixed_statistics(cfg: TrainConfig) -> bool:
    """Whether the normalisation statistics stay the demonstrations' for the whole run.

    So they do for a cloned actor (``bc_epochs``) and for one held to the demonstrations
    (``bc_alpha``: its anchor batches are normalised once, with those statistics).
    """
    return bool(cfg.bc_epochs or cfg.bc_alpha)


def anchor_to_demos(cfg: TrainConfig, model: BaseAlgorithm, env: gym.Env[Any, Any]) -> None:
    """Give a resumed ``AnchoredSAC`` its demonstrations again (they are not checkpointed).

    Its weight is the config's, which is the run's record of what it trains.
    """
    from factoryfloor.policies.bc import demo_tensors
    from factoryfloor.policies.demos import check_compatible, load_demos

    demos = load_demos(cfg.demos or "", env_id=cfg.task)
    check_compatible(demos, env, cfg.robot)
    model.set_anchor(*demo_tensors(model, demos))  # type: ignore[attr-defined]
    model.bc_alpha = cfg.bc_alpha  # type: ignore[attr-defined]
