"""Train a policy on a factoryfloor task with stable-baselines3 (``factoryfloor train``).

``train(cfg)`` writes a run folder::

    config.yaml          the resolved TrainConfig (``TrainConfig.from_yaml`` reads it back)
    environment.json     versions, device, torch threads, git commit, command line
    evaluations.jsonl    one JSON object per evaluation: num_timesteps, success_rate, ...
    checkpoints/last/    model, optimiser, replay buffer, VecNormalize, random states
    checkpoints/best/    model and VecNormalize of the best evaluation so far
    tensorboard/         TensorBoard logs (or TENSORBOARD_SKIPPED.txt)
    evaluations.superseded.jsonl   evaluations redone after a resume (kept, never deleted)

Checkpoints are written atomically (see ``factoryfloor.policies.checkpoint``), and hold no pickle
(``factoryfloor.policies.run_files``, ``factoryfloor.policies.model_files``): a run folder from
elsewhere is checked, never executed. ``resume=True`` continues the run from ``checkpoints/last``.
A run stopped before its first "last" checkpoint (a kill) resumes from ``checkpoints/best`` when
there is one, without the replay buffer and random states that only "last" holds; with no
checkpoint at all, training into the same folder without ``resume`` starts it over. SIGINT or
SIGTERM stops training cleanly at the next env step and writes ``checkpoints/last`` first; a
second SIGINT aborts at once. With
``cfg.demos`` (or ``cfg.demo_episodes``, recorded into ``demos/`` of the run folder), a new
run's replay buffer is seeded with the demonstrations first (``factoryfloor.policies.demos``) and,
with ``cfg.bc_epochs``, its actor is cloned from them (``factoryfloor.policies.bc``, summary in
``bc.json``) and evaluated at step 0; a resumed run finds them in its saved replay buffer.
"""

from __future__ import annotations

import importlib.util
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies import run_files as rf
from factoryfloor.policies import train_demos
from factoryfloor.policies.model_files import (
    algorithm_class,
    channels_first,
    constructor_parameters,
    hyperparameters,
    load_model,
    model_class,
    policy_class,
    vector_keys,
)
from factoryfloor.policies.provenance import write_environment
from factoryfloor.policies.train_callback import RunCallback, evaluate_model, stop_on_signals
from factoryfloor.policies.train_config import ConfigError, TrainConfig, run_folder

__all__ = [
    "algorithm_class", "evaluate_model", "resolve_device", "run_folder", "run_summary", "train",
]  # fmt: skip


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; other names unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but torch sees no CUDA GPU; use --device auto/cpu")
    return device


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    on_evaluation: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train (or, with ``resume``, continue training) and return the run folder.

    ``on_evaluation`` receives each evaluation record as it is written (e.g. a sweep reporting
    the success rate to Ray Tune).

    Raises:
        ConfigError: For settings that cannot work (the message says how to fix them), or a
            folder holding a run that this would overwrite.
        CheckpointError: When ``resume`` finds no usable checkpoint, or the run folder is
            corrupted (the message names the file).
    """
    start = time.perf_counter()
    run_dir = run_folder(cfg)
    last = _check_run_folder(run_dir, resume)
    cfg = replace(cfg, out=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    if last is None and cfg.demo_episodes and not cfg.demos:
        cfg = replace(cfg, demos=str(train_demos.record_run_demos(cfg, run_dir)))
    device = resolve_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    eval_env = _make_eval_env(cfg)
    venv = _make_training_envs(cfg)
    try:
        tb_dir = _tensorboard_dir(cfg, run_dir)
        if last is None:
            if cfg.normalize:  # images are scaled by the policy, never normalised
                venv = VecNormalize(
                    venv, norm_reward=False, gamma=cfg.gamma, norm_obs_keys=vector_keys(venv)
                )
            model = _build_model(cfg, venv, device, tb_dir)
            if cfg.demos:
                train_demos.add_demos(cfg, model, eval_env, run_dir)
        else:
            try:
                model, venv = _load_last(cfg, last, venv, device, tb_dir)
                ckpt.supersede_evaluations_after(run_dir, last.num_timesteps)
                if cfg.bc_alpha:
                    train_demos.anchor_to_demos(cfg, model, eval_env)
            except ckpt.CheckpointError as exc:
                raise ckpt.CheckpointError(f"cannot resume {run_dir}: {exc}") from exc
        ckpt.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        write_environment(run_dir, device, resumed=last is not None)
        callback = RunCallback(cfg, run_dir, eval_env, last, start)
        callback.on_evaluation = on_evaluation
        callback.evaluate_at_start = last is None and cfg.bc_epochs > 0  # the cloned actor
        callback.init_callback(model)
        with stop_on_signals() as stop:
            callback.stop = stop
            remaining = cfg.timesteps - model.num_timesteps
            if remaining > 0:
                model.learn(
                    remaining,
                    callback=callback,
                    reset_num_timesteps=last is None,
                    progress_bar=cfg.progress_bar and _has("tqdm", "rich"),
                    tb_log_name=cfg.algo,
                )
            callback.finish(stop.signum)
    finally:
        venv.close()
        eval_env.close()
    return run_dir


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Manifest of the run's last checkpoint and its latest evaluation (for the CLI)."""
    manifest = ckpt.read_checkpoint(run_dir / "checkpoints" / "last").manifest
    records, _ = ckpt.read_evaluations(run_dir)
    return {**manifest, "last_evaluation": records[-1] if records else None}


def _check_run_folder(run_dir: Path, resume: bool) -> ckpt.Checkpoint | None:
    """The checkpoint to resume, or None to start the run; refuses to overwrite a run.

    A run stopped before its first "last" checkpoint resumes from ``checkpoints/best`` when
    that holds one (a note says so); with no checkpoint at all it cannot be resumed, and
    training into it without ``resume`` starts it over (evaluations kept aside).
    """
    last, best = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
    has_last, has_best = (last / ckpt.MANIFEST).is_file(), (best / ckpt.MANIFEST).is_file()
    if not resume:
        if not (run_dir / "config.yaml").exists():
            return None
        if has_last:
            raise ConfigError(
                f"{run_dir} already holds a run; pass --resume to continue it, or choose "
                "another --out folder"
            )
        if has_best:
            try:
                found = f"holds the model of step {ckpt.read_checkpoint(best).num_timesteps}"
                fix = f"pass --resume to continue from it, or delete {best} to start over"
            except ckpt.CheckpointError as exc:
                found, fix = f"is unusable ({exc})", f"delete {best} to start the run over"
            raise ConfigError(
                f"{run_dir} holds a run stopped before its first checkpoints/last; its "
                f"checkpoints/best {found}: {fix}, or choose another --out folder"
            )
        ckpt.notice(
            f"starting {run_dir} over: it holds no checkpoint (its training stopped before "
            "the first one)"
        )
        ckpt.supersede_evaluations_after(run_dir, -1)
        return None
    try:
        if not has_last and not has_best:
            raise ckpt.CheckpointError(
                f"it holds no checkpoint (its training stopped before the first one: no {last} "
                f"or {best}); start it over in place: the same command without --resume"
            )
        checkpoint = ckpt.read_checkpoint(last if has_last else best)
    except ckpt.CheckpointError as exc:
        raise ckpt.CheckpointError(f"cannot resume {run_dir}: {exc}") from exc
    if not has_last:
        ckpt.notice(
            f"{last} was never written (the training stopped before it): resuming from {best}, "
            f"step {checkpoint.num_timesteps}: its model, optimiser and normalisation, with a "
            "new replay buffer and random states"
        )
    return checkpoint


def _make_training_envs(cfg: TrainConfig) -> VecEnv:
    """The training envs: in-process, in subprocesses, or in Ray actors (``cfg.ray``)."""
    if cfg.ray:
        from factoryfloor.policies.ray_start import start_ray
        from factoryfloor.policies.ray_vec_env import RayVecEnv

        start_ray(cfg.ray_address)
        venv: VecEnv = RayVecEnv(cfg.task, cfg.n_envs, cfg.envs_per_actor, cfg.make_kwargs())
        venv.seed(cfg.seed)
        return venv
    venv = make_vec_env(
        partial(_make_env, cfg.task, cfg.n_envs > 1),
        n_envs=cfg.n_envs,
        seed=cfg.seed,
        vec_env_cls=SubprocVecEnv if cfg.n_envs > 1 else DummyVecEnv,
        env_kwargs=cfg.make_kwargs(),
    )
    return channels_first(venv)


def _make_env(task: str, in_subprocess: bool, **kwargs: Any) -> gym.Env[Any, Any]:
    """One training env; subprocess workers ignore SIGINT (the main process handles it)."""
    if in_subprocess:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return gym.make(task, **kwargs)


def _make_eval_env(cfg: TrainConfig) -> gym.Env[Any, Any]:
    try:
        return gym.make(cfg.task, **cfg.make_kwargs())
    except TypeError as exc:
        raise ConfigError(f"env_kwargs={cfg.env_kwargs} not accepted by {cfg.task}: {exc}") from exc


def _build_model(cfg: TrainConfig, venv: VecEnv, device: str, tb_dir: Path | None) -> BaseAlgorithm:
    cls = model_class(cfg)
    kwargs: dict[str, Any] = {
        "policy": policy_class(cls, cfg, venv),
        "env": venv,
        "seed": cfg.seed,
        "device": device,
        "verbose": cfg.verbose,
        "tensorboard_log": str(tb_dir) if tb_dir else None,
        **hyperparameters(cfg, venv),
    }
    clash = sorted(set(kwargs) & set(cfg.algo_kwargs))
    if clash:
        raise ConfigError(f"algo_kwargs {clash} are TrainConfig fields: set them at top level")
    unknown = sorted(set(cfg.algo_kwargs) - set(constructor_parameters(cls)))
    if unknown:
        raise ConfigError(f"algo_kwargs {unknown} are not arguments of {cls.__name__}")
    try:
        return cls(**kwargs, **cfg.algo_kwargs)
    except (TypeError, AssertionError) as exc:
        raise ConfigError(f"cannot build {cls.__name__} from this config: {exc}") from exc


def _load_last(
    cfg: TrainConfig, last: ckpt.Checkpoint, venv: VecEnv, device: str, tb_dir: Path | None
) -> tuple[BaseAlgorithm, VecEnv]:
    """Model, optimiser, replay buffer, normalisation and random states of a checkpoint.

    A "best" checkpoint has no replay buffer or random states: the model collects
    ``learning_starts`` fresh env steps before its next update, from the generators seeded as
    SB3 seeds a loaded model.
    """
    if "vecnormalize" in last.paths:
        venv = ckpt.load_file(last, "vecnormalize", lambda p: rf.load_vecnormalize(p, venv))
    model = load_model(last, cfg, venv, device, tensorboard_log=str(tb_dir) if tb_dir else None)
    if "replay_buffer" in last.paths:
        assert isinstance(model, OffPolicyAlgorithm)
        buffer = model.replay_buffer
        assert buffer is not None
        ckpt.load_file(last, "replay_buffer", lambda p: rf.restore_replay_buffer(p, buffer))
        _end_last_episode(buffer)
    elif cfg.off_policy:  # saved without it: collect afresh before the next update
        model.learning_starts = model.num_timesteps + cfg.learning_starts
    rng = ckpt.load_file(last, "rng", rf.read_rng) if last.folder.name == "last" else None
    if rng is not None:
        if len(rng.envs) != venv.num_envs:
            raise ckpt.CheckpointError(
                f"{last.paths['rng']} holds {len(rng.envs)} env generators, but the run has "
                f"{venv.num_envs} envs; restore the run folder from a backup"
            )
        rf.set_global_rng_state(rng.global_states)
        model.action_space._np_random = rng.action_space
    # ``load`` re-seeded the envs: take that seeded reset, then restore the saved generators
    # and start a fresh episode from them.
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None:
        vecnorm.training = False
    venv.reset()
    for i, generator in enumerate(rng.envs if rng is not None else []):
        venv.set_attr("np_random", generator, indices=[i])
    model._last_obs = venv.reset()
    model._last_episode_starts = np.ones(venv.num_envs, dtype=bool)
    if vecnorm is not None:
        vecnorm.training = not train_demos.fixed_statistics(cfg)
        model._last_original_obs = vecnorm.get_original_obs()
    return model, venv


def _end_last_episode(buffer: ReplayBuffer) -> None:
    """End the unfinished episode of a restored HER buffer (``truncate_last_trajectory``).

    A checkpoint is usually written mid-episode, and ``_load_last`` never continues that
    episode: it starts fresh ones from the saved generators. So the buffer's last trajectory
    must be truncated (its last transition is marked done, and a time-out so that it still
    bootstraps), else HER would join it to the next episode when relabelling goals. SB3 warns
    that it truncates ("If you are in the same episode ..."); here that is the intent, so only
    that message is silenced, for this call only.
    """
    if isinstance(buffer, HerReplayBuffer):
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="The last trajectory in the replay buffer will be truncated"
            )
            buffer.truncate_last_trajectory()


def _tensorboard_dir(cfg: TrainConfig, run_dir: Path) -> Path | None:
    if not cfg.tensorboard:
        return None
    if not _has("tensorboard"):
        note = "TensorBoard logs skipped: the tensorboard package is not installed.\n"
        ckpt.atomic_write_text(
            run_dir / "TENSORBOARD_SKIPPED.txt", note + "pip install tensorboard\n"
        )
        return None
    return run_dir / "tensorboard"


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)
