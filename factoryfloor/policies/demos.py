"""Scripted-expert demonstrations: record them, load them, seed a replay buffer with them.

``factoryfloor demos record TASK --episodes N --out DIR`` writes a demonstration folder;
``factoryfloor train TASK --demos DIR`` adds its transitions to the replay buffer before learning
starts.

Format (version 2), pickle-free so that it can be read with ``np.load(..., allow_pickle=False)``
and any JSON parser::

    DIR/demos.json            the index, written last (atomically): a folder without it is
                              incomplete and is refused
    DIR/episode_00000.npz     one file per episode, in the index's order
    DIR/episode_00001.npz
    ...

Each ``episode_NNNNN.npz`` holds, for an episode of ``T`` env steps:

* ``obs/<key>``: ``(T + 1, *shape)`` float arrays, one per key of the Dict observation
  (``observation``, ``achieved_goal``, ``desired_goal``): the reset observation, then the
  observation after each step;
* ``actions``: ``(T, A)`` float32, the expert's actions as given to ``env.step`` (in the action
  space's units: normalised commands in [-1, 1]);
* ``rewards``: ``(T,)`` float32;
* ``terminated``, ``truncated``: ``(T,)`` bool, as returned by ``env.step``;
* ``is_success``: ``(T,)`` bool, ``info["is_success"]`` after each step.

``demos.json`` holds: ``format`` (``"factoryfloor-demos"``), ``format_version`` (2), ``env_id``,
``robot``, ``env_kwargs`` (the keyword arguments of ``gymnasium.make``), ``observation_space``
(``[{"name", "shape", "dtype", "units"}]``) and ``action_space`` (``{"name", "shape", "dtype",
"low", "high", "units"}``), the fields of ``factoryfloor.edge_runtime.spec.space_fields``,
``episodes`` (a list of ``{"file", "seed", "length", "success", "return", "sha256"}``, the
last the SHA-256 of the episode file), ``total_transitions``, ``only_successful``, ``attempts``
(episodes run, counting the failed ones that were skipped), ``factoryfloor_version``, ``command``
(the command line that wrote it) and ``index_sha256`` (``demos_checks.index_digest``: the SHA-256
of the other fields). Folders recorded before the hashes existed have neither, and still load.

``load_demos`` trusts nothing: ``demos_checks`` validates the whole folder (schema, counts,
hashes, every array's dtype, shape and finiteness) and refuses any damage with a ``DemosError``
that names the file; ``train --demos`` checks the folder before any env or model is built.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from factoryfloor.edge_runtime.spec import space_fields
from factoryfloor.policies.atomic import atomic_write_stream
from factoryfloor.policies.demos_checks import (  # noqa: F401  (re-exported: the format's names)
    ARRAYS,
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    DemosError,
    index_digest,
    read_episode,
    read_index,
)
from factoryfloor.policies.progress import Progress
from factoryfloor.policies.rollout import Episode, run_episode


@dataclass(frozen=True)
class Demos:
    """A loaded demonstration folder: its index and one dict of arrays per episode."""

    folder: Path
    index: dict[str, Any]
    episodes: list[dict[str, np.ndarray]]

    @property
    def total_transitions(self) -> int:
        """Env steps over all episodes."""
        return sum(len(ep["actions"]) for ep in self.episodes)


def _space_spec(env: gym.Env[Any, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The env's observation fields and its action field (``edge_runtime.spec.space_fields``)."""
    try:
        observation, (action,) = space_fields(env.observation_space, env.action_space)
    except ValueError as exc:
        raise DemosError(f"demonstrations: {exc}") from None
    return observation, action


def record_demos(
    env_id: str,
    episodes: int,
    out_dir: Path | str,
    robot: str = "panda",
    seed: int = 0,
    only_successful: bool = True,
    max_attempts: int | None = None,
    command: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the scripted expert and write ``episodes`` episodes to ``out_dir`` (format above).

    Episode attempts are seeded ``seed``, ``seed + 1``, ...; with ``only_successful``, failed
    attempts are skipped (their seeds are absent from the index).

    Args:
        env_id: Gymnasium id of a factoryfloor task, e.g. ``"factoryfloor/Reach-v0"``.
        episodes: Episodes to write (>= 1).
        out_dir: Folder to write; it must not already hold demonstrations.
        robot: Robot name.
        seed: Seed of the first attempt.
        only_successful: Keep only episodes that end with ``is_success``.
        max_attempts: Attempts before giving up (default: ``2 * episodes + 10``).
        command: Command line recorded in the index (default: ``sys.argv``).
        progress: Show progress (a bar on a terminal, a line every 10 s elsewhere).

    Returns:
        The index written to ``demos.json``.

    Raises:
        DemosError: When ``out_dir`` already holds demonstrations, or too many attempts failed.
    """
    import factoryfloor  # noqa: F401  (registers the envs)

    if episodes < 1:
        raise DemosError(f"episodes={episodes}: record at least 1 episode")
    out = Path(out_dir)
    if (out / INDEX).exists():
        raise DemosError(f"{out} already holds demonstrations; choose another --out folder")
    out.mkdir(parents=True, exist_ok=True)
    max_attempts = max_attempts if max_attempts is not None else 2 * episodes + 10
    env_kwargs = {"robot": robot}
    env = gym.make(env_id, **env_kwargs)
    try:
        obs_spec, act_spec = _space_spec(env)
        label = f"recording {env_id} expert demonstrations"
        with Progress(label, episodes, "episodes", enabled=progress) as bar:
            written, attempts = _record(
                env, out, episodes, seed, only_successful, max_attempts, bar
            )
    finally:
        env.close()
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "env_id": env_id,
        "robot": robot,
        "env_kwargs": env_kwargs,
        "observation_space": obs_spec,
        "action_space": act_spec,
        "episodes": written,
        "total_transitions": sum(e["length"] for e in written),
        "only_successful": only_successful,
        "attempts": attempts,
        "factoryfloor_version": _version(),
        "command": command if command is not None else shlex.join(sys.argv),
    }
    index["index_sha256"] = index_digest(index)
    text = json.dumps(index, indent=1) + "\n"
    atomic_write_stream(out / INDEX, lambda f: f.write(text.encode("utf-8")))
    return index


def _record(
    env: gym.Env[Any, Any], out: Path, episodes: int, seed: int, only_successful: bool,
    max_attempts: int, bar: Progress,
) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """Run expert attempts (seeds ``seed``, ``seed + 1``, ...) until ``episodes`` are written.

    Returns:
        The index entries of the episodes written, and the attempts made.
    """
    from factoryfloor.policies.scripted import make_expert

    expert = make_expert(env)
    written: list[dict[str, Any]] = []
    attempts = 0
    while len(written) < episodes:
        if attempts >= max_attempts:
            raise DemosError(
                f"only {len(written)} of {episodes} successful episodes in {attempts} attempts "
                f"of the expert; pass only_successful=False (--keep-failures) to keep failures"
            )
        episode = run_episode(
            env, expert.act, seed + attempts, reset_policy=expert.reset, keep=True
        )
        attempts += 1
        if only_successful and not episode.success:
            continue
        written.append(_write_episode(out, len(written), episode))
        bar.advance(note=f"{attempts} attempts")
    return written, attempts


def _write_episode(out: Path, number: int, episode: Episode) -> dict[str, Any]:
    """Write one episode's ``.npz`` atomically; its index entry."""
    name = f"episode_{number:05d}.npz"
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **episode.arrays())
    data = buffer.getvalue()
    atomic_write_stream(out / name, lambda f: f.write(data))
    return {
        "file": name, "seed": episode.seed, "length": episode.length,
        "success": episode.success, "return": episode.total_return,
        "sha256": hashlib.sha256(data).hexdigest(),
    }  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("factoryfloor")
    except PackageNotFoundError:
        return "unknown"


def load_demos(folder: Path | str, env_id: str | None = None) -> Demos:
    """Read and validate a demonstration folder (no pickle is ever loaded).

    Every field of the index, every array's dtype and shape, the counts and the checksums are
    checked, and every float is finite, before anything is used: a damaged folder is refused.

    Args:
        folder: Folder written by ``record_demos``.
        env_id: When given, the env id the demonstrations must have been recorded on.

    Raises:
        DemosError: Naming the file, what is wrong with it and how to fix it.
    """
    folder = Path(folder)
    index = read_index(folder)
    if env_id is not None and index["env_id"] != env_id:
        raise DemosError(
            f"demonstrations in {folder} were recorded on {index['env_id']!r}, not {env_id!r}"
        )
    return Demos(folder, index, [read_episode(folder, e, index) for e in index["episodes"]])


def check_compatible(demos: Demos, env: gym.Env[Any, Any], robot: str) -> None:
    """Refuse demonstrations recorded on another robot or with other spaces than ``env``'s.

    Raises:
        DemosError: With what differs.
    """
    obs_spec, act_spec = _space_spec(env)
    index = demos.index
    if index.get("robot") != robot:
        raise DemosError(
            f"demonstrations in {demos.folder} were recorded with robot {index.get('robot')!r}, "
            f"but training uses {robot!r}"
        )
    for what, ours, theirs in (
        ("observation space", obs_spec, index["observation_space"]),
        ("action space", act_spec, index["action_space"]),
    ):
        if ours != theirs:
            raise DemosError(
                f"demonstrations in {demos.folder} have {what} {theirs}, but the training env "
                f"has {ours}; record them again for this env"
            )


def seed_replay_buffer(model: Any, demos: Demos) -> int:
    """Add every demonstration transition to ``model.replay_buffer``, episode by episode.

    Transitions go through the buffer's own ``add`` (so HerReplayBuffer records episode bounds
    and relabels demonstration goals like any other). Observations are stored unnormalised, as
    SB3 does with VecNormalize, whose running statistics are updated with the demonstration
    observations. Actions are scaled to the policy's [-1, 1] range. A buffer of ``n_envs`` > 1
    streams stores each transition in every stream (the buffer adds rows of ``n_envs``
    transitions in lockstep, and episodes have different lengths), so it holds ``n_envs`` copies.

    Returns:
        Transitions added (``n_envs`` x the demonstration transitions).

    Raises:
        DemosError: When the replay buffer cannot hold every demonstration transition.
    """
    buffer = model.replay_buffer
    n_envs = int(buffer.n_envs)
    if demos.total_transitions > buffer.buffer_size:
        raise DemosError(
            f"{demos.total_transitions} demonstration transitions do not fit in the replay "
            f"buffer ({buffer.buffer_size}); raise buffer_size or record fewer episodes"
        )
    vecnorm = model.get_vec_normalize_env()
    for ep in demos.episodes:
        obs = {k[4:]: v for k, v in ep.items() if k.startswith("obs/")}
        if vecnorm is not None and vecnorm.norm_obs:
            for key, rms in vecnorm.obs_rms.items():
                rms.update(obs[key])
        actions = model.policy.scale_action(ep["actions"])
        for t in range(len(actions)):
            done = bool(ep["terminated"][t] or ep["truncated"][t])
            timeout = bool(ep["truncated"][t] and not ep["terminated"][t])
            buffer.add(
                {k: np.repeat(v[t][None], n_envs, 0) for k, v in obs.items()},
                {k: np.repeat(v[t + 1][None], n_envs, 0) for k, v in obs.items()},
                np.repeat(actions[t][None], n_envs, 0),
                np.full(n_envs, ep["rewards"][t], dtype=np.float32),
                np.full(n_envs, done or t == len(actions) - 1),
                [{"TimeLimit.truncated": timeout}] * n_envs,
            )
    return demos.total_transitions * n_envs
