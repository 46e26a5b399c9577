"""Scripted-expert demonstrations as Minari datasets: record them, load them, seed a buffer.

``factoryfloor demos record TASK --episodes N [--out ROOT] [--obs state|camera]`` writes a
`Minari <https://minari.farama.org>`_ dataset under the Minari datasets root ``ROOT`` (default:
Minari's own, ``MINARI_DATASETS_PATH`` or ``~/.minari/datasets``), with the id
``factoryfloor/<task>-<robot>-<obs>-v0`` (e.g. ``factoryfloor/pick-place-panda-state-v0``;
``--dataset-id`` overrides it); ``factoryfloor train TASK --demos ID_OR_FOLDER`` adds its
transitions to the replay buffer before learning starts. Any Minari tool reads it::

    MINARI_DATASETS_PATH=ROOT python -c "import minari; minari.load_dataset('factoryfloor/...')"

Layout (Minari's, ``parquet`` storage)::

    ROOT/factoryfloor/namespace_metadata.json
    ROOT/<dataset id>/data/metadata.json          Minari's: spaces, env spec, counts
    ROOT/<dataset id>/data/<i>/metadata.json      episode i: id, total_steps, seed
    ROOT/<dataset id>/data/<i>/part-0.parquet     episode i's steps
    ROOT/<dataset id>/data/factoryfloor.json      the sidecar, written last (demos_checks)

Each episode of ``T`` steps holds ``observations`` (a Dict, ``T + 1`` rows: the reset
observation, then the one after each step), ``actions`` (``T``, normalised commands in [-1, 1]),
``rewards``, ``terminations``, ``truncations`` and ``infos/is_success`` (``T + 1``, the reset's
first, as Minari stores infos), and its reset seed in its metadata. ``--obs state`` (the
default) records the keys ``observation``, ``achieved_goal`` and ``desired_goal``; ``--obs
camera`` (the env's ``obs_mode``) records ``observation`` (real-cell state only),
``privileged``, ``achieved_goal``, ``desired_goal``, ``image`` and ``wrist_image`` (uint8
84x84x3), the expert acting on the full state (``FactoryEnv.state_observation``).

Storage, measured on 20 PickPlace camera episodes (45 steps on average, two 84x84 RGB images per
observation): parquet lossless 0.186 MB per episode (186 MB per 1,000 episodes), parquet with
``jpeg_encoding`` 0.109 MB (109 MB per 1,000; lossy: pixel errors up to 163 of 255), arrow
lossless 2.03 MB (2.0 GB per 1,000), arrow with JPEG 0.173 MB. Parquet stores the images
losslessly in less than a tenth of arrow's size, so datasets are written as parquet with
``jpeg_encoding=False``; state datasets are a few kB per episode either way.

The sidecar ``factoryfloor.json`` holds ``format`` (``"factoryfloor-minari-demos"``),
``format_version`` (4), ``dataset_id``, ``env_id``, ``robot``, ``obs_mode``, ``env_kwargs``,
``storage``, ``jpeg_encoding``, ``observation_space`` and ``action_space`` (the fields of
``factoryfloor.edge_runtime.spec.space_fields``), ``episodes`` (``{"id", "seed", "length",
"success", "return"}``), ``total_transitions``, ``only_successful``, ``attempts`` (episodes run,
counting the failed ones skipped), ``action_noise`` (the std of the noise on the expert's motion
commands while recording, 0: none; the actions stored are those executed),
``factoryfloor_version``, ``command``, ``files`` (the SHA-256 of every other file of the folder,
metadata included) and ``sidecar_sha256`` (of the rest).

``load_demos`` reads any Minari dataset (arrow or parquet) whose spaces match the training env,
factoryfloor's or not, and trusts nothing (``demos_checks``, ``demos_read``): damage is one
``DemosError`` line naming the file. A dataset without a sidecar loads after the structural
checks, marked ``index["verified"] = False``, its ``is_success`` taken from ``infos`` when present
and from ``terminations`` otherwise.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from factoryfloor.edge_runtime.spec import space_fields
from factoryfloor.policies.demos_checks import (  # noqa: F401  (re-exported: the format's names)
    DATASET_ID,
    FORMAT,
    FORMAT_VERSION,
    METADATA,
    SIDECAR,
    DemosError,
    digest,
)
from factoryfloor.policies.demos_paths import (  # noqa: F401  (re-exported)
    ID_EXAMPLE,
    check_id,
    dataset_folder,
    datasets_root,
    default_dataset_id,
    resolve_dataset,
)
from factoryfloor.policies.progress import Progress
from factoryfloor.policies.rollout import run_episode, with_action_noise

STORAGE, JPEG_ENCODING = "parquet", False  # measured above: lossless and small
NOISE_STREAM = 0xDA27  # second word of the recording noise's seed, beside the attempt's seed
OBS_MODES = ("state", "camera")


@dataclass(frozen=True)
class Demos:
    """A loaded demonstration dataset: its index and one dict of arrays per episode.

    Attributes:
        folder: The dataset's ``data`` folder.
        index: What the dataset says about itself (``demos_read.read_dataset``).
        episodes: Per episode ``obs/<key>`` ``(T + 1, ...)``, ``actions`` ``(T, A)`` float32,
            ``rewards`` ``(T,)`` float32, ``terminated``, ``truncated``, ``is_success`` ``(T,)``
            bool.
    """

    folder: Path
    index: dict[str, Any]
    episodes: list[dict[str, np.ndarray]]

    @property
    def total_transitions(self) -> int:
        """Env steps over all episodes."""
        return sum(len(ep["actions"]) for ep in self.episodes)


def record_demos(
    env_id: str,
    episodes: int,
    out_dir: Path | str | None = None,
    robot: str = "panda",
    seed: int = 0,
    only_successful: bool = True,
    max_attempts: int | None = None,
    command: str | None = None,
    progress: bool = True,
    *,
    obs_mode: str = "state",
    dataset_id: str | None = None,
    storage: str = STORAGE,
    jpeg_encoding: bool = JPEG_ENCODING,
    image_size: int | None = None,
    action_noise: float = 0.0,
) -> dict[str, Any]:
    """Run the scripted expert and write ``episodes`` episodes as a Minari dataset (format above).

    Episode attempts are seeded ``seed``, ``seed + 1``, ...; with ``only_successful``, failed
    attempts are skipped (their seeds are absent from the dataset).

    Args:
        env_id: Gymnasium id of a factoryfloor task, e.g. ``"factoryfloor/Reach-v0"``.
        episodes: Episodes to write (>= 1).
        out_dir: Minari datasets root to write under (default: ``datasets_root()``).
        robot: Robot name.
        seed: Seed of the first attempt.
        only_successful: Keep only episodes that end with ``is_success``.
        max_attempts: Attempts before giving up (default: ``2 * episodes + 10``).
        command: Command line recorded in the sidecar (default: ``sys.argv``).
        progress: Show progress (a bar on a terminal, a line every 10 s elsewhere).
        obs_mode: ``"state"`` or ``"camera"`` (the env's ``obs_mode``).
        dataset_id: Minari dataset id (default: ``default_dataset_id``).
        storage: ``"parquet"`` or ``"arrow"``.
        jpeg_encoding: Store images JPEG-encoded (lossy).
        image_size: Side of the camera images (px; default: the env's, 84).
        action_noise: Std of Gaussian noise on the expert's motion commands (normalised
            action units; ``rollout.with_action_noise``, seeded per attempt): the episodes
            show it correcting; the actions stored are those executed. 0: none.

    Returns:
        The sidecar written (``factoryfloor.json``); the dataset is in
        ``dataset_folder(sidecar["dataset_id"], out_dir)``.

    Raises:
        DemosError: For a dataset id that exists already or is malformed, or too many failures.
    """
    import factoryfloor  # noqa: F401  (registers the envs)
    from factoryfloor.policies.demos_write import DatasetWriter

    if episodes < 1:
        raise DemosError(f"episodes={episodes}: record at least 1 episode")
    if not 0.0 <= action_noise <= 1.0:  # (NaN fails too) the sidecar's rule, checked on entry
        raise DemosError(f"action_noise={action_noise}: give a noise std in [0, 1], e.g. 0.1")
    if obs_mode not in OBS_MODES:
        raise DemosError(f"obs mode {obs_mode!r}: record with one of {', '.join(OBS_MODES)}")
    dataset_id = dataset_id or default_dataset_id(env_id, robot, obs_mode)
    check_id(dataset_id)
    env_kwargs: dict[str, Any] = {"robot": robot, "obs_mode": obs_mode}
    if image_size is not None:
        env_kwargs["image_size"] = image_size
    max_attempts = max_attempts if max_attempts is not None else 2 * episodes + 10
    env = gym.make(env_id, **env_kwargs)
    try:
        observation, (action,) = space_fields(env.observation_space, env.action_space)
        writer = DatasetWriter(datasets_root(out_dir), dataset_id, env, storage, jpeg_encoding)
        try:
            label = f"recording {env_id} expert demonstrations"
            with Progress(label, episodes, "episodes", enabled=progress) as bar:
                written, attempts = _record(
                    env, writer, episodes, seed, only_successful, max_attempts, bar, action_noise
                )
            return writer.finish({
                "env_id": env_id, "robot": robot, "obs_mode": obs_mode, "env_kwargs": env_kwargs,
                "storage": storage, "jpeg_encoding": jpeg_encoding,
                "observation_space": observation, "action_space": action, "episodes": written,
                "total_transitions": sum(e["length"] for e in written),
                "only_successful": only_successful, "attempts": attempts,
                "action_noise": action_noise,
                "factoryfloor_version": _version(),
                "command": command if command is not None else shlex.join(sys.argv),
            })  # fmt: skip
        except BaseException:
            writer.abort()
            raise
    finally:
        env.close()


def _record(
    env: gym.Env[Any, Any], writer: Any, episodes: int, seed: int, only_successful: bool,
    max_attempts: int, bar: Progress, action_noise: float = 0.0,
) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """Run expert attempts (seeds ``seed``, ``seed + 1``, ...) until ``episodes`` are written.

    Returns:
        The sidecar entries of the episodes written, and the attempts made.
    """
    from factoryfloor.policies.demos_write import episode_entry
    from factoryfloor.policies.scripted import make_expert

    expert = make_expert(env)
    base = env.unwrapped

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        return expert.act(base.state_observation(obs))  # the full state, in any obs mode

    written: list[dict[str, Any]] = []
    attempts = 0
    while len(written) < episodes:
        if attempts >= max_attempts:
            raise DemosError(
                f"only {len(written)} of {episodes} successful episodes in {attempts} attempts "
                f"of the expert; pass only_successful=False (--keep-failures) to keep failures"
            )
        rng = np.random.default_rng([seed + attempts, NOISE_STREAM])
        policy = with_action_noise(act, action_noise, rng)
        episode = run_episode(env, policy, seed + attempts, reset_policy=expert.reset, keep=True)
        attempts += 1
        if only_successful and not episode.success:
            continue
        writer.add(episode)
        written.append(episode_entry(len(written), episode))
        bar.advance(note=f"{attempts} attempts")
    return written, attempts


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("factoryfloor")
    except PackageNotFoundError:
        return "unknown"


def load_demos(path_or_id: Path | str, env_id: str | None = None) -> Demos:
    """Read and validate a Minari dataset (no pickle is ever loaded).

    Args:
        path_or_id: A dataset id (under ``datasets_root()``), a dataset folder, or a datasets
            root that holds exactly one dataset (e.g. ``--demo-episodes``' ``RUN/demos``).
        env_id: When given, the env id a factoryfloor dataset must have been recorded on
            (datasets from elsewhere are judged by their spaces: ``check_compatible``).

    Raises:
        DemosError: Naming the file, what is wrong with it and how to fix it.
    """
    from factoryfloor.policies.demos_read import read_dataset

    folder = resolve_dataset(path_or_id)
    index, episodes = read_dataset(folder)
    if env_id is not None and index["verified"] and index["env_id"] != env_id:
        raise DemosError(
            f"demonstrations in {folder} were recorded on {index['env_id']!r}, not {env_id!r}"
        )
    return Demos(folder, index, episodes)


def check_compatible(demos: Demos, env: gym.Env[Any, Any], robot: str) -> None:
    """Refuse demonstrations recorded on another robot or with other spaces than ``env``'s.

    Raises:
        DemosError: One line with the first thing that differs.
    """
    try:
        obs_spec, (act_spec,) = space_fields(env.observation_space, env.action_space)
    except ValueError as exc:
        raise DemosError(f"demonstrations: {exc}") from None
    index, where = demos.index, f"demonstrations in {demos.folder}"
    fix = "record them again for this env (factoryfloor demos record)"
    if index.get("robot") is not None and index["robot"] != robot:
        raise DemosError(
            f"{where} were recorded with robot {index['robot']!r}, but training uses {robot!r}"
        )
    ours = {f["name"]: (tuple(f["shape"]), f["dtype"]) for f in obs_spec}
    theirs = {f["name"]: (tuple(f["shape"]), f["dtype"]) for f in index["observation_space"]}
    if set(ours) != set(theirs):
        raise DemosError(
            f"{where} have observation keys {sorted(theirs)}, but the training env has "
            f"{sorted(ours)}; {fix}"
        )
    for key in sorted(ours):
        if ours[key] != theirs[key]:
            (s1, d1), (s2, d2) = theirs[key], ours[key]
            raise DemosError(
                f"{where} have observation {key!r} of shape {s1} {d1}, but the training env's is "
                f"{s2} {d2}; {fix}"
            )
    act = index["action_space"]
    for name in ("shape", "dtype", "low", "high"):
        if act[name] != act_spec[name]:
            raise DemosError(
                f"{where} have action {name} {act[name]}, but the training env's is "
                f"{act_spec[name]}; {fix}"
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
    from stable_baselines3.common.preprocessing import maybe_transpose

    vecnorm = model.get_vec_normalize_env()
    space = model.observation_space
    for ep in demos.episodes:
        obs = {k[4:]: v for k, v in ep.items() if k.startswith("obs/")}
        obs = {k: maybe_transpose(v, space[k]) for k, v in obs.items()}  # images channel-first
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
