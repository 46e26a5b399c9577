"""The SB3 model of a checkpoint: built from a ``TrainConfig``, and loaded without unpickling.

SB3's model zip (``BaseAlgorithm.save``) holds ``data``, a JSON object of the model's
attributes, and ``*.pth`` torch files of weights and optimiser states. Attributes that JSON
cannot hold are written as ``{":type:": ..., ":serialized:": <base64 cloudpickle>}``, and
``BaseAlgorithm.load`` unpickles them unless their key is in ``custom_objects``. ``load_model``
reads ``data`` first (plain JSON) and supplies every serialized key, from the run's config and
env, so that nothing is unpickled; a serialized key it does not know is refused. For the runs of
this repository (SAC, TD3, TQC, PPO, with or without HER) those keys are ``SUPPLIED``.

The ``.pth`` files are read by SB3 (>= 2.3, which pyproject requires) with
``torch.load(..., weights_only=True)``: torch's restricted unpickler, which builds only tensors
and plain containers and refuses anything else. That is the one unpickler left on this path;
it is torch's documented safe mode for untrusted weights, not a general pickle.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.utils import FloatSchedule
from stable_baselines3.common.vec_env import VecEnv

from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies.train_config import ALGORITHMS, ConfigError, TrainConfig

PIP_NAMES = {"stable_baselines3": "stable-baselines3", "sb3_contrib": "sb3-contrib"}
# serialized data keys -> where load_model takes their value from
SUPPLIED = {
    "policy_class": "the policy class of the observation space (as train builds it)",
    "observation_space": "the env's observation space",
    "action_space": "the env's action space",
    "lr_schedule": "config learning_rate (SB3 rebuilds it from learning_rate anyway)",
    "learning_rate": "config learning_rate",
    "train_freq": "config train_freq",
    "action_noise": "config action_noise_std",
    "replay_buffer_class": "config her (HerReplayBuffer, else SB3's default)",
    "replay_buffer_kwargs": "config her_n_sampled_goal and her_goal_selection",
    "rollout_buffer_class": "SB3's default",
    "target_entropy": "config algo_kwargs, else the constructor's default",
    "clip_range": "config algo_kwargs, else the constructor's default",
    "clip_range_vf": "config algo_kwargs, else the constructor's default",
    "policy_kwargs": "config net_arch and policy_kwargs",
    "_last_obs": "none (the env is reset)",
    "_last_original_obs": "none (the env is reset)",
    "_last_episode_starts": "all true (a fresh episode)",
    "ep_info_buffer": "none (SB3 starts new episode-statistics windows)",
    "ep_success_buffer": "none (SB3 starts new episode-statistics windows)",
}


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


def model_class(cfg: TrainConfig) -> type[BaseAlgorithm]:
    """The class a run of ``cfg`` trains: its algorithm's, or SAC anchored to the demos."""
    if cfg.bc_alpha > 0:
        from factoryfloor.policies.anchored_sac import AnchoredSAC

        return AnchoredSAC
    return algorithm_class(cfg.algo)


def policy_name(venv: VecEnv | gym.Env[Any, Any]) -> str:
    """SB3's policy alias for the env's observations."""
    dict_obs = isinstance(venv.observation_space, gym.spaces.Dict)
    return "MultiInputPolicy" if dict_obs else "MlpPolicy"


def is_camera(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` trains on ``obs_mode="camera"`` (the asymmetric camera actor-critic)."""
    return cfg.env_kwargs.get("obs_mode") == "camera"


def policy_class(cls: type[BaseAlgorithm], cfg: TrainConfig, venv: VecEnv) -> type[Any]:
    """The policy class a run of ``cfg`` trains: SB3's for the space, or the camera policy.

    Raises:
        ConfigError: For camera observations with an algorithm other than SAC.
    """
    if not is_camera(cfg):
        return cls.policy_aliases[policy_name(venv)]  # type: ignore[no-any-return]
    if cfg.algo != "sac":
        raise ConfigError(
            f"obs_mode camera trains the asymmetric SAC actor-critic: set algo: sac, "
            f"not {cfg.algo!r}"
        )
    from factoryfloor.policies.camera_policy import AsymmetricSACPolicy

    return AsymmetricSACPolicy


def channels_first(venv: VecEnv) -> VecEnv:
    """``venv`` with its HWC images transposed to CHW (``VecTransposeImage``), as SB3 wants.

    Applied under VecNormalize, so that the original observations VecNormalize hands to the
    replay buffer are channel-first like the buffer (SB3 would put the transpose on top).
    """
    from stable_baselines3.common.vec_env import VecTransposeImage

    space = venv.observation_space
    subspaces = space.spaces.values() if isinstance(space, gym.spaces.Dict) else [space]
    hwc = any(
        is_image_space(s) and not is_image_space_channels_first(s)  # type: ignore[arg-type]
        for s in subspaces
    )
    return VecTransposeImage(venv) if hwc else venv


def vector_keys(venv: VecEnv | gym.Env[Any, Any]) -> list[str] | None:
    """The Dict keys VecNormalize may normalise: every key but uint8 images; None: all."""
    space = venv.observation_space
    if not isinstance(space, gym.spaces.Dict):
        return None
    return [k for k, s in space.spaces.items() if getattr(s, "dtype", None) != np.uint8]


def hyperparameters(cfg: TrainConfig, venv: VecEnv) -> dict[str, Any]:
    """Constructor arguments of the algorithm taken from the config's fields."""
    kwargs: dict[str, Any] = {
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "gamma": cfg.gamma,
        "policy_kwargs": {"net_arch": list(cfg.net_arch), **cfg.policy_kwargs},
    }
    if is_camera(cfg):  # the actor reads the real-cell keys only (the env's ``actor_keys``)
        kwargs["policy_kwargs"]["actor_keys"] = list(venv.get_attr("actor_keys", [0])[0])
        kwargs["policy_kwargs"].setdefault(
            "estimate_dims", list(venv.get_attr("visible_privileged", [0])[0])
        )
    if not cfg.off_policy:
        return kwargs
    if cfg.bc_alpha > 0:
        kwargs["bc_alpha"] = cfg.bc_alpha
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


def constructor_parameters(cls: type[Any]) -> dict[str, inspect.Parameter]:
    """The named constructor parameters of ``cls`` and of the classes it passes ``**kwargs`` to.

    A subclass such as ``AnchoredSAC(*args, bc_alpha, **kwargs)`` takes SAC's parameters too.
    """
    found: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass) and klass is not object:
            for name, param in inspect.signature(klass.__init__).parameters.items():
                if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    found[name] = param
    return found


def supplied_objects(cls: type[BaseAlgorithm], cfg: TrainConfig, env: VecEnv) -> dict[str, Any]:
    """The value of every ``SUPPLIED`` key for a model of ``cls`` trained with ``cfg`` on ``env``.

    Constructor arguments are given as the constructor takes them: SB3's ``_setup_model``
    converts them (schedules, ``TrainFreq``, ``"auto"`` entropy) as it did when training.
    """
    defaults = {
        name: p.default
        for name, p in constructor_parameters(cls).items()
        if p.default is not inspect.Parameter.empty
    }
    args = {**defaults, **cfg.algo_kwargs, **hyperparameters(cfg, env)}
    values = {key: args.get(key) for key in SUPPLIED}
    values.update(
        policy_class=policy_class(cls, cfg, env),
        observation_space=env.observation_space,
        action_space=env.action_space,
        lr_schedule=FloatSchedule(cfg.learning_rate),
        _last_obs=None,
        _last_original_obs=None,
        _last_episode_starts=np.ones(env.num_envs, dtype=bool),
        ep_info_buffer=None,
        ep_success_buffer=None,
    )
    return values


def model_zip_data(raw: bytes) -> dict[str, Any]:
    """The ``data`` JSON object of a model zip's bytes, as stored (nothing deserialized).

    Raises:
        ValueError: When it is not an SB3 model zip.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            data = json.loads(archive.read("data").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"not an SB3 model zip ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError("its data member is not a JSON object")
    return dict(data)


def load_model(
    checkpoint: ckpt.Checkpoint, cfg: TrainConfig, env: VecEnv, device: str, **attributes: Any
) -> BaseAlgorithm:
    """The model of ``checkpoint`` on ``env``, loaded without unpickling (see the module doc).

    Every place that loads a model zip of a run folder does it through this function. The zip
    is read once into memory, so the bytes checked are the bytes loaded.

    Args:
        checkpoint: A checkpoint of ``read_checkpoint`` with a ``model`` file.
        cfg: The run's config (its ``config.yaml``).
        env: The (vectorised, possibly normalised) env the model runs on.
        device: Torch device of the model.
        **attributes: Model attributes set before SB3 builds it (``tensorboard_log``, a small
            ``buffer_size`` when the replay buffer is not needed, ...).

    Raises:
        CheckpointError: When the zip is not a model of this run, holds a serialized entry
            that is not ``SUPPLIED``, or its step counter differs from the manifest's.
    """
    cls = model_class(cfg)

    def load(path: Path) -> BaseAlgorithm:
        raw = path.read_bytes()
        data = model_zip_data(raw)
        saved = data.get("num_timesteps")
        if saved != checkpoint.num_timesteps:
            raise ckpt.CheckpointError(
                f"{checkpoint.manifest_path}: num_timesteps {checkpoint.num_timesteps} differs "
                f"from the {saved!r} env steps of its model {path.name}; the counter was edited: "
                f"set it back to {saved!r}, or restore the run folder from a backup"
            )
        serialized = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]
        unknown = sorted(set(serialized) - set(SUPPLIED))
        if unknown:
            raise ckpt.CheckpointError(
                f"{path} holds pickled entries {unknown} that factoryfloor does not load (pickles "
                "can run code; factoryfloor train saves only those it rebuilds from config.yaml): "
                "refusing it; restore the run folder from a backup or train it again"
            )
        supplied = supplied_objects(cls, cfg, env)
        custom = {key: supplied[key] for key in serialized}
        try:
            return cls.load(
                io.BytesIO(raw), env=env, device=device, custom_objects=custom, **attributes
            )
        except pickle.UnpicklingError as exc:  # from torch.load(weights_only=True)
            reason = str(exc).partition("WeightsUnpickler error:")[2].strip().split("\n")[0]
            reason = reason.split(". ")[0]
            raise ValueError(
                f"its .pth files are not plain weights: torch.load(weights_only=True) refused "
                f"them ({reason or type(exc).__name__})"
            ) from exc

    return ckpt.load_file(checkpoint, "model", load)  # type: ignore[no-any-return]
