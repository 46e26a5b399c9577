"""Evaluate a policy on a factoryfloor task: success rate, returns, episode lengths."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import factoryfloor  # noqa: F401  (registers the envs)
from factoryfloor.policies.rollout import Episode, Policy, run_episode
from factoryfloor.policies.scripted import make_expert
from factoryfloor.policies.video import VideoWriter


@dataclass(frozen=True)
class EvalResult:
    """Evaluation summary; ``as_dict()`` is what ``factoryfloor eval --json`` prints."""

    env_id: str
    robot: str
    policy: str
    episodes: int
    seed: int
    success_rate: float
    mean_return: float
    mean_episode_length: float
    successes: list[bool]
    episode_lengths: list[int]
    wall_time_s: float
    env_steps_per_s: float

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def _expert_policy(env: gym.Env[Any, Any]) -> tuple[Policy, Callable[[], None]]:
    expert = make_expert(env)
    return expert.act, expert.reset


PolicyFactory = Callable[[gym.Env[Any, Any]], tuple[Policy, Callable[[], None]]]

POLICIES: dict[str, PolicyFactory] = {
    "expert": _expert_policy,
}


def _check_obs_shapes(
    env: gym.Env[Any, Any], shapes: dict[str, tuple[int, ...]], what: str
) -> None:
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    env_shapes = {k: tuple(s.shape or ()) for k, s in space.spaces.items() if k in shapes}
    if env_shapes != shapes:
        raise ValueError(f"{what} expects observations {shapes}, but the env gives {env_shapes}")


def bundle_env_kwargs(manifest: dict[str, Any]) -> dict[str, Any]:
    """``gymnasium.make`` arguments of an env that feeds a bundle with this manifest.

    A bundle whose inputs hold uint8 images is a camera bundle: its env runs in
    ``obs_mode="camera"`` at the images' size (pixels). Others need the default (state) env.
    """
    spaces = manifest["observation"]["spaces"]
    images = [v["shape"] for v in spaces.values() if v.get("dtype") == "uint8"]
    return {"obs_mode": "camera", "image_size": int(images[0][0])} if images else {}


# The env arguments that decide a trained model's observation and action spaces.
RUN_ENV_KWARGS = ("obs_mode", "image_size", "camera_depth", "control")


def run_env_kwargs(run: Path) -> dict[str, Any]:
    """``gymnasium.make`` arguments of an env that feeds the model of the run folder ``run``.

    Those of the run's ``config.yaml`` ``env_kwargs`` that shape its spaces (``RUN_ENV_KWARGS``);
    dynamics such as ``randomize`` are the evaluator's choice. A folder without a config: none.

    Raises:
        ConfigError: When the run's ``config.yaml`` is not a valid config.
    """
    if not (run / "config.yaml").is_file():
        return {}
    from factoryfloor.policies.train_config import TrainConfig

    env_kwargs = TrainConfig.from_yaml(run / "config.yaml").env_kwargs
    return {k: env_kwargs[k] for k in RUN_ENV_KWARGS if k in env_kwargs}


def policy_env_kwargs(policy: str) -> dict[str, Any]:
    """The ``gymnasium.make`` arguments a policy needs (a camera bundle or run: camera mode).

    Raises:
        BundleError: For a bundle that does not verify (``edge_runtime.bundle.read_bundle``).
        ConfigError: For a run folder whose ``config.yaml`` is not valid.
    """
    path = Path(policy)
    if policy not in POLICIES and path.is_dir():
        return run_env_kwargs(path)
    if policy in POLICIES or path.suffix != ".ffpolicy" or not path.is_file():
        return {}
    from factoryfloor.edge_runtime.bundle import read_bundle

    return bundle_env_kwargs(read_bundle(path.read_bytes(), str(path))[0])


def _bundle_policy(path: Path) -> PolicyFactory:
    """A ``.ffpolicy`` bundle (``factoryfloor.edge_runtime.bundle``), run without torch."""

    def factory(env: gym.Env[Any, Any]) -> tuple[Policy, Callable[[], None]]:
        from factoryfloor.edge_runtime.bundle import load_bundle

        policy = load_bundle(path)
        spaces = policy.manifest["observation"]["spaces"]
        _check_obs_shapes(env, {k: tuple(spaces[k]["shape"]) for k in policy.keys}, str(path))
        return policy.act, policy.reset

    return factory


def _run_policy(run: Path) -> PolicyFactory:
    """The SB3 model of a training run's best checkpoint (deterministic actions)."""

    def factory(env: gym.Env[Any, Any]) -> tuple[Policy, Callable[[], None]]:
        from factoryfloor.policies.export import load_run_model

        model, vecnorm, _, _ = load_run_model(run, "best")
        space = model.observation_space
        assert isinstance(space, gym.spaces.Dict)
        _check_obs_shapes(env, {k: tuple(s.shape or ()) for k, s in space.spaces.items()}, str(run))
        normalize = vecnorm.normalize_obs if vecnorm is not None else (lambda o: o)

        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(model.predict(normalize(obs), deterministic=True)[0])

        return act, lambda: None

    return factory


def resolve_policy(policy: str) -> PolicyFactory:
    """A ``POLICIES`` name, a run folder (its best checkpoint) or a ``.ffpolicy`` bundle.

    Raises:
        ValueError: With the valid choices, when ``policy`` is none of these.
    """
    if policy in POLICIES:
        return POLICIES[policy]
    path = Path(policy)
    if path.is_dir():
        return _run_policy(path)
    if path.suffix == ".ffpolicy":
        if not path.is_file():
            raise ValueError(f"no policy bundle at {path}")
        return _bundle_policy(path)
    raise ValueError(
        f"unknown policy {policy!r}; choose one of {sorted(POLICIES)}, a run folder or a "
        ".ffpolicy bundle"
    )


def evaluate(
    env_id: str,
    policy: str = "expert",
    episodes: int = 10,
    seed: int = 0,
    robot: str = "panda",
    video: Path | None = None,
    video_episodes: int = 3,
    env_kwargs: dict[str, Any] | None = None,
) -> EvalResult:
    """Run ``episodes`` seeded episodes (seeds ``seed``, ``seed + 1``, ...) and summarise.

    Args:
        env_id: Registered id, e.g. ``"factoryfloor/PickPlace-v0"``.
        policy: A name from ``POLICIES`` (``"expert"``: the task's scripted expert), a run
            folder of ``factoryfloor train`` (its best checkpoint) or a ``.ffpolicy`` bundle.
        episodes: Number of episodes (>= 1).
        seed: Seed of the first episode.
        robot: Robot name.
        video: Optional ``.mp4`` path: the cell camera over the first ``video_episodes``.
        video_episodes: Episodes recorded when ``video`` is given.
        env_kwargs: Extra keyword arguments for ``gymnasium.make`` (over those the policy
            needs: a camera bundle's env is made in camera mode, ``policy_env_kwargs``).

    Raises:
        ValueError: With the valid choices, for an unknown policy or a bad episode count.
    """
    make_policy = resolve_policy(policy)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    kwargs = {"robot": robot, **policy_env_kwargs(policy), **(env_kwargs or {})}
    if video is not None:
        kwargs["render_mode"] = "rgb_array"
    env = gym.make(env_id, **kwargs)
    try:
        act, reset_policy = make_policy(env)
    except BaseException:
        env.close()
        raise
    writer = VideoWriter(video, fps=env.metadata["render_fps"]) if video is not None else None
    start = time.perf_counter()
    try:
        runs = [
            run_episode(
                env, act, seed + i, reset_policy=reset_policy,
                observer=_recorder(writer) if i < video_episodes else None,
            )
            for i in range(episodes)
        ]  # fmt: skip
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    finally:
        env.close()
    if writer is not None:
        writer.close()
    return _summary(env_id, robot, policy, seed, runs, time.perf_counter() - start)


def _recorder(writer: VideoWriter | None) -> Callable[[gym.Env[Any, Any]], None] | None:
    """An episode observer writing each rendered frame, or None without a writer."""
    if writer is None:
        return None
    return lambda env: writer.write(env.render())


def _summary(
    env_id: str, robot: str, policy: str, seed: int, runs: list[Episode], wall_s: float
) -> EvalResult:
    lengths = [r.length for r in runs]
    return EvalResult(
        env_id=env_id, robot=robot, policy=policy, episodes=len(runs), seed=seed,
        success_rate=float(np.mean([r.success for r in runs])),
        mean_return=float(np.mean([r.total_return for r in runs])),
        mean_episode_length=float(np.mean(lengths)),
        successes=[r.success for r in runs], episode_lengths=lengths,
        wall_time_s=wall_s, env_steps_per_s=sum(lengths) / wall_s,
    )  # fmt: skip
