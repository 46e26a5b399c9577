"""Train a policy on a factoryfloor task with stable-baselines3 (``factoryfloor train``).

``train(cfg)`` writes a run folder::

    config.yaml          the resolved TrainConfig (``TrainConfig.from_yaml`` reads it back)
    environment.json     versions, device, torch threads, git commit, command line
    evaluations.jsonl    one JSON object per evaluation: num_timesteps, success_rate, ...
    checkpoints/last/    model, optimiser, replay buffer, VecNormalize, random states
    checkpoints/best/    model and VecNormalize of the best evaluation so far
    tensorboard/         TensorBoard logs (or TENSORBOARD_SKIPPED.txt)

Checkpoints are written atomically (see ``factoryfloor.policies.checkpoint``). ``resume=True``
continues the run from ``checkpoints/last``. SIGINT or SIGTERM stops training cleanly at the next
env step and writes ``checkpoints/last`` first; a second SIGINT aborts at once. With
``cfg.demos`` (or ``cfg.demo_episodes``, recorded into ``demos/`` of the run folder), a new
run's replay buffer is seeded with the demonstrations first (``factoryfloor.policies.demos``) and,
with ``cfg.bc_epochs``, its actor is cloned from them (``factoryfloor.policies.bc``, summary in
``bc.json``) and evaluated at step 0; a resumed run finds them in its saved replay buffer.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
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
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies.provenance import write_environment
from factoryfloor.policies.train_callback import RunCallback, evaluate_model, stop_on_signals
from factoryfloor.policies.train_config import ALGORITHMS, ConfigError, TrainConfig, run_folder

__all__ = ["evaluate_model", "resolve_device", "run_folder", "run_summary", "train"]

PIP_NAMES = {"stable_baselines3": "stable-baselines3", "sb3_contrib": "sb3-contrib"}


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
        ConfigError: For settings that cannot work (the message says how to fix them).
        CheckpointError: When ``resume`` finds no usable checkpoint.
    """
    start = time.perf_counter()
    run_dir = run_folder(cfg)
    last = _check_run_folder(run_dir, resume)
    cfg = replace(cfg, out=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    if last is None and cfg.demo_episodes and not cfg.demos:
        cfg = replace(cfg, demos=str(_record_run_demos(cfg, run_dir)))
    device = resolve_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    eval_env = _make_eval_env(cfg)
    venv = _make_training_envs(cfg)
    try:
        tb_dir = _tensorboard_dir(cfg, run_dir)
        if last is None:
            venv = VecNormalize(venv, norm_reward=False, gamma=cfg.gamma) if cfg.normalize else venv
            model = _build_model(cfg, venv, device, tb_dir)
            if cfg.demos:
                _add_demos(cfg, model, eval_env, run_dir)
        else:
            try:
                model, venv = _load_last(cfg, last, venv, device, tb_dir)
            except ckpt.CheckpointError as exc:
                raise ckpt.CheckpointError(f"cannot resume {run_dir}: {exc}") from exc
            _drop_evaluations_after(run_dir, last.num_timesteps)
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
    lines = (run_dir / "evaluations.jsonl").read_text().splitlines()
    return {**manifest, "last_evaluation": json.loads(lines[-1]) if lines else None}


def _check_run_folder(run_dir: Path, resume: bool) -> ckpt.Checkpoint | None:
    if not resume:
        if (run_dir / "config.yaml").exists():
            raise ConfigError(
                f"{run_dir} already holds a run; pass --resume to continue it, or choose "
                "another --out folder"
            )
        return None
    try:
        return ckpt.read_checkpoint(run_dir / "checkpoints" / "last")
    except ckpt.CheckpointError as exc:
        raise ckpt.CheckpointError(f"cannot resume {run_dir}: {exc}") from exc


def _drop_evaluations_after(run_dir: Path, num_timesteps: int) -> None:
    """Keep the evaluations up to the resumed checkpoint (later ones are about to be redone)."""
    path = run_dir / "evaluations.jsonl"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [ln for ln in lines if ln and json.loads(ln)["num_timesteps"] <= num_timesteps]
        ckpt.atomic_write_text(path, "".join(f"{ln}\n" for ln in kept))


def _make_training_envs(cfg: TrainConfig) -> VecEnv:
    """The training envs: in-process, in subprocesses, or in Ray actors (``cfg.ray``)."""
    if cfg.ray:
        import ray

        from factoryfloor.policies.ray_vec_env import RayVecEnv

        if not ray.is_initialized():
            ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
        venv: VecEnv = RayVecEnv(cfg.task, cfg.n_envs, cfg.envs_per_actor, cfg.make_kwargs())
        venv.seed(cfg.seed)
        return venv
    return make_vec_env(
        partial(_make_env, cfg.task, cfg.n_envs > 1),
        n_envs=cfg.n_envs,
        seed=cfg.seed,
        vec_env_cls=SubprocVecEnv if cfg.n_envs > 1 else DummyVecEnv,
        env_kwargs=cfg.make_kwargs(),
    )


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


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 class of ``algo``; a clear error names the package to install when missing."""
    module, name, _ = ALGORITHMS[algo]
    try:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    except ImportError as exc:
        pkg = PIP_NAMES.get(module, module)
        raise ConfigError(
            f"algo {algo!r} needs the {pkg} package: pip install {pkg} "
            "(or pip install 'factoryfloor[train]')"
        ) from exc


def _build_model(cfg: TrainConfig, venv: VecEnv, device: str, tb_dir: Path | None) -> BaseAlgorithm:
    cls = algorithm_class(cfg.algo)
    dict_obs = isinstance(venv.observation_space, gym.spaces.Dict)
    kwargs: dict[str, Any] = {
        "policy": "MultiInputPolicy" if dict_obs else "MlpPolicy",
        "env": venv,
        "seed": cfg.seed,
        "device": device,
        "verbose": cfg.verbose,
        "tensorboard_log": str(tb_dir) if tb_dir else None,
        **_hyperparameters(cfg, venv),
    }
    clash = sorted(set(kwargs) & set(cfg.algo_kwargs))
    if clash:
        raise ConfigError(f"algo_kwargs {clash} are TrainConfig fields: set them at top level")
    unknown = sorted(set(cfg.algo_kwargs) - set(inspect.signature(cls.__init__).parameters))
    if unknown:
        raise ConfigError(f"algo_kwargs {unknown} are not arguments of {cls.__name__}")
    try:
        return cls(**kwargs, **cfg.algo_kwargs)
    except (TypeError, AssertionError) as exc:
        raise ConfigError(f"cannot build {cls.__name__} from this config: {exc}") from exc


def _hyperparameters(cfg: TrainConfig, venv: VecEnv) -> dict[str, Any]:
    """Constructor arguments of the algorithm taken from the config's fields."""
    kwargs: dict[str, Any] = {
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "gamma": cfg.gamma,
        "policy_kwargs": {"net_arch": list(cfg.net_arch), **cfg.policy_kwargs},
    }
    if not cfg.off_policy:
        return kwargs
    kwargs.update(
        buffer_size=cfg.buffer_size,
        learning_starts=cfg.learning_starts,
        train_freq=cfg.train_freq,
        gradient_steps=cfg.gradient_steps,
        tau=cfg.tau,
    )
    if cfg.action_noise_std > 0:
        space = venv.action_space
        assert isinstance(space, gym.spaces.Box)
        half_range = (space.high - space.low) / 2.0
        kwargs["action_noise"] = NormalActionNoise(
            np.zeros_like(half_range), cfg.action_noise_std * half_range
        )
    if cfg.her:
        kwargs["replay_buffer_class"] = HerReplayBuffer
        kwargs["replay_buffer_kwargs"] = {
            "n_sampled_goal": cfg.her_n_sampled_goal,
            "goal_selection_strategy": cfg.her_goal_selection,
        }
    return kwargs


def _load_last(
    cfg: TrainConfig, last: ckpt.Checkpoint, venv: VecEnv, device: str, tb_dir: Path | None
) -> tuple[BaseAlgorithm, VecEnv]:
    """Model, optimiser, replay buffer, normalisation and random states of a checkpoint."""
    if "vecnormalize" in last.paths:
        venv = ckpt.load_file(last, "vecnormalize", lambda p: VecNormalize.load(str(p), venv))
    cls = algorithm_class(cfg.algo)
    tb = str(tb_dir) if tb_dir else None
    model = ckpt.load_file(
        last, "model", lambda p: cls.load(p, env=venv, device=device, tensorboard_log=tb)
    )
    if "replay_buffer" in last.paths:
        ckpt.load_file(last, "replay_buffer", _load_replay_buffer(model))
    elif cfg.off_policy:  # saved without it: collect afresh before the next update
        model.learning_starts = model.num_timesteps + cfg.learning_starts
    rng = ckpt.load_file(last, "rng", ckpt.unpickle)
    ckpt.set_global_rng_state(rng["global"])
    model.action_space._np_random = rng["action_space"]
    # ``load`` re-seeded the envs: take that seeded reset, then restore the saved generators
    # and start a fresh episode from them.
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None:
        vecnorm.training = False
    venv.reset()
    for i, generator in enumerate(rng["envs"]):
        venv.set_attr("np_random", generator, indices=[i])
    model._last_obs = venv.reset()
    model._last_episode_starts = np.ones(venv.num_envs, dtype=bool)
    if vecnorm is not None:
        vecnorm.training = not cfg.bc_epochs  # see _add_demos
        model._last_original_obs = vecnorm.get_original_obs()
    return model, venv


def _load_replay_buffer(model: BaseAlgorithm) -> Callable[[Path], None]:
    """A loader of a saved replay buffer into ``model`` that ends its unfinished episode.

    A checkpoint is usually written mid-episode, and ``_load_last`` never continues that
    episode: it starts fresh ones from the saved generators. So the buffer's last trajectory
    must be truncated (``truncate_last_traj=True``: its last transition is marked done, and a
    time-out so that it still bootstraps), else HER would join it to the next episode when
    relabelling goals. SB3 warns that it truncates ("If you are in the same episode ...");
    here that is the intent, so only that message is silenced, for this call only.

    Args:
        model: The off-policy model being resumed.

    Returns:
        A ``load(path)`` for ``ckpt.load_file``.
    """
    assert isinstance(model, OffPolicyAlgorithm)

    def load(path: Path) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="The last trajectory in the replay buffer will be truncated"
            )
            model.load_replay_buffer(path, truncate_last_traj=True)

    return load


def _record_run_demos(cfg: TrainConfig, run_dir: Path) -> Path:
    """Record ``cfg.demo_episodes`` expert episodes into ``run_dir/demos`` (kept on a rerun)."""
    from factoryfloor.policies.demos import INDEX, record_demos

    folder = run_dir / "demos"
    if not (folder / INDEX).is_file():
        record_demos(
            cfg.task, cfg.demo_episodes, folder, robot=cfg.robot, seed=cfg.seed,
            progress=bool(cfg.progress_bar),
        )  # fmt: skip
    return folder


def _add_demos(
    cfg: TrainConfig, model: BaseAlgorithm, env: gym.Env[Any, Any], run_dir: Path
) -> None:
    """Seed a new run's replay buffer with ``cfg.demos`` and clone the actor from them.

    After cloning, the observation normalisation statistics stay those of the demonstrations
    for the rest of the run: the cloned actor relies on them, and the drift brought by early
    exploratory episodes was measured to undo the cloning (PickPlace: 98% -> 32% success in
    2,000 env steps with the actor frozen).

    Demonstrations made for another env are refused (``DemosError``).
    """
    from factoryfloor.policies.bc import behaviour_clone
    from factoryfloor.policies.demos import check_compatible, load_demos, seed_replay_buffer

    demos = load_demos(cfg.demos or "", env_id=cfg.task)
    check_compatible(demos, env, cfg.robot)
    added = seed_replay_buffer(model, demos)
    if cfg.verbose:
        print(f"replay buffer seeded with {added} demonstration transitions from {cfg.demos}")
    if cfg.bc_epochs:
        result = behaviour_clone(
            model, demos, cfg.bc_epochs, cfg.bc_batch_size, cfg.bc_learning_rate, cfg.seed,
            progress=bool(cfg.progress_bar),
        )  # fmt: skip
        text = json.dumps({"demos": cfg.demos, **result.to_dict()}, indent=1) + "\n"
        ckpt.atomic_write_text(run_dir / "bc.json", text)
        vecnorm = model.get_vec_normalize_env()
        if vecnorm is not None:  # the cloned actor relies on the demonstrations' statistics
            vecnorm.training = False
        if cfg.verbose:
            print(f"behaviour cloning: {result}")


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
