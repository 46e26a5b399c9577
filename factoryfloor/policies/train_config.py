"""``TrainConfig``: every setting of a training run, and where its values come from.

A config is resolved in layers, each overriding the one before:

1. the field defaults below;
2. the shipped file ``factoryfloor/policies/configs/<task>_<algo>.yaml`` (tuned per task and
   algorithm; the algorithm defaults to the task's entry in ``TaskEntry.default_algo``);
3. a user file given with ``--config FILE.yaml`` (any subset of the fields);
4. explicit overrides (the command line's ``--timesteps``, ``--seed``, ...).

YAML files are only serialised ``TrainConfig`` instances: the same field names, nothing else.
Every value is checked where it enters (``train_config_checks``: types, ranges, YAML size and
depth; and, when a run starts, CPUs and memory), and each refusal names the file it came from.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from factoryfloor.policies import train_config_checks as checks
from factoryfloor.policies.train_config_checks import ConfigError
from factoryfloor.sim.registry import BY_ENV_ID, TaskEntry

OBS_CHOICES = ("state", "camera")  # ``--obs``: which shipped config family

# algo -> (module, class, off-policy). A registry, read by validation and by ``train``.
ALGORITHMS: dict[str, tuple[str, str, bool]] = {
    "sac": ("stable_baselines3", "SAC", True),
    "td3": ("stable_baselines3", "TD3", True),
    "tqc": ("sb3_contrib", "TQC", True),
    "ppo": ("stable_baselines3", "PPO", False),
}
HER_STRATEGIES = ("future", "final", "episode")
RESUME_OVERRIDES = frozenset(
    {"timesteps", "device", "progress_bar", "verbose", "out", "target_success", "max_wall_time_s"}
)


@dataclass(kw_only=True)
class TrainConfig:
    """Settings of one training run (stable-baselines3, optionally with HER).

    Attributes:
        task: Gymnasium id of the task, e.g. ``"factoryfloor/Reach-v0"``.
        robot: Robot name (``factoryfloor.robots``), e.g. ``"panda"`` or ``"xarm6"``.
        algo: One of ``ALGORITHMS``: ``"sac"``, ``"td3"``, ``"tqc"`` (needs sb3-contrib), ``"ppo"``.
        timesteps: Training budget in env steps, summed over the parallel envs (steps).
        n_envs: Parallel envs: 1 runs in-process (DummyVecEnv), more run in subprocesses.
        seed: Seed of the model, the envs and every global random generator.
        device: Torch device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda[:N]"``.
        out: Run folder; ``None`` means ``runs/<task>_<algo>_seed<seed>``.
        env_kwargs: Other keyword arguments of ``gymnasium.make`` (control, reward, ...); the
            robot is the ``robot`` field. ``make_kwargs`` gives both.
        normalize: Normalise observations with running mean/std (VecNormalize); rewards are not.
        net_arch: Hidden layer widths of the actor and critic MLPs (units).
        policy_kwargs: Extra policy keyword arguments, e.g. ``{"n_critics": 1}``.
        learning_rate: Adam learning rate (1/update).
        batch_size: Transitions per gradient step (PPO: minibatch size).
        gamma: Discount factor per env step, in (0, 1].
        her: Relabel goals with SB3's HerReplayBuffer (off-policy algorithms only); ``None``
            turns it on for off-policy algorithms on the goal-conditioned factoryfloor tasks.
        her_n_sampled_goal: Relabelled goals per real transition.
        her_goal_selection: HER strategy: ``"future"``, ``"final"`` or ``"episode"``.
        buffer_size: Replay buffer capacity (transitions; off-policy only).
        learning_starts: Env steps of random actions before the first update (off-policy only).
        train_freq: Vectorised env steps (each ``n_envs`` transitions) between training phases.
        gradient_steps: Gradient steps per training phase (-1: one per env step collected).
        tau: Soft target update coefficient, in (0, 1] (off-policy only).
        action_noise_std: Gaussian exploration noise, as a fraction of the action half-range
            (0: none; used by TD3).
        algo_kwargs: Extra constructor arguments of the algorithm, e.g. ``{"n_steps": 512}``.
        eval_every_steps: Env steps between evaluations (steps).
        eval_episodes: Episodes per evaluation; episode ``i`` is seeded ``eval_seed + i``.
        eval_seed: Seed of the first evaluation episode.
        checkpoint_every_steps: Env steps between "last" checkpoints (0: only at the end).
        save_replay_buffer: Keep the replay buffer in "last" checkpoints, so that ``--resume``
            continues off-policy training as it was (without it, a resumed run collects
            ``learning_starts`` fresh env steps before its next update).
        torch_threads: Torch intra-op CPU threads (0: torch's default).
        tensorboard: Write TensorBoard logs (skipped, with a note, when it is not installed).
        progress_bar: Show a progress bar (needs tqdm and rich).
        verbose: SB3 verbosity: 0 quiet, 1 info, 2 debug.
        demos: Folder of scripted-expert demonstrations (``factoryfloor demos record``) whose
            transitions are added to the replay buffer before learning starts (off-policy
            only; HER relabels them too). They must be recorded on the same task, robot and
            spaces. ``None``: no demonstrations. A resumed run does not add them again.
        demo_episodes: When ``demos`` is not given, record this many scripted-expert episodes
            into ``<run folder>/demos`` first and use them as ``demos`` (0: none).
        demo_action_noise: Std of the Gaussian noise on the expert's motion commands while
            those episodes are recorded (normalised action units; DART, see
            ``rollout.with_action_noise``): the demonstrations then show the expert correcting
            from off its path. 0: none.
        bc_epochs: Behaviour cloning of the actor on the demonstrations before reinforcement
            learning starts: passes over the transitions (0: none; ``factoryfloor.policies.bc``).
            With it, the observation normalisation statistics are those of the demonstrations
            and stay fixed for the run (the cloned actor relies on them).
        bc_batch_size: Transitions per behaviour-cloning gradient step.
        bc_learning_rate: Initial behaviour-cloning Adam learning rate (cosine decay to 0).
        critic_pretrain_steps: TD steps fitting the critic to the (cloned) actor on the
            demonstrations before RL updates start, the actor fixed (0: none;
            ``factoryfloor.policies.critic_pretrain``): a fresh critic's first gradients
            would undo the cloned actor.
        bc_alpha: Keep the actor near the demonstrations during RL (SAC only): TD3+BC's
            weight of the RL term, normalised by the batch's mean |Q|, beside the
            behaviour-cloning term in the actor's loss (``factoryfloor.policies.anchored_sac``,
            e.g. 2.5). 0: plain SAC, which was measured to undo a cloned camera actor.
        ray: Run the training envs in Ray actors (``RayVecEnv``) instead of subprocesses.
        ray_address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ...); None starts
            a local Ray.
        envs_per_actor: Environments per Ray actor (stepped together in one remote call).
        target_success: Stop training once an evaluation reaches this success rate (0: never).
        max_wall_time_s: Stop training after this much wall time over all sessions of the run,
            saving the "last" checkpoint as at the end of the budget (s; 0: no limit).
    """

    task: str
    robot: str = "panda"
    algo: str = "sac"
    timesteps: int = 100_000
    n_envs: int = 1
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize: bool = True
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    learning_rate: float = 1e-3
    batch_size: int = 256
    gamma: float = 0.95
    her: bool | None = None
    her_n_sampled_goal: int = 4
    her_goal_selection: str = "future"
    buffer_size: int = 1_000_000
    learning_starts: int = 1_000
    train_freq: int = 1
    gradient_steps: int = 1
    tau: float = 0.05
    action_noise_std: float = 0.0
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_every_steps: int = 5_000
    eval_episodes: int = 50
    eval_seed: int = 1_000_000
    checkpoint_every_steps: int = 50_000
    save_replay_buffer: bool = True
    torch_threads: int = 1
    tensorboard: bool = True
    progress_bar: bool = True
    verbose: int = 0
    demos: str | None = None
    demo_episodes: int = 0
    demo_action_noise: float = 0.0
    bc_epochs: int = 0
    bc_batch_size: int = 256
    bc_learning_rate: float = 1e-3
    critic_pretrain_steps: int = 0
    bc_alpha: float = 0.0
    ray: bool = False
    ray_address: str | None = None
    envs_per_actor: int = 4
    target_success: float = 0.0
    max_wall_time_s: float = 0.0

    def __post_init__(self) -> None:
        for f, hint in typing.get_type_hints(TrainConfig).items():
            setattr(self, f, checks.coerce(f, getattr(self, f), hint))
        off_policy = ALGORITHMS.get(self.algo, ("", "", True))[2]
        if self.her is None:
            self.her = self.algo in ALGORITHMS and off_policy and task_name(self.task) is not None
        checks.check_ranges(self)
        for name, ok, fix in checks.rules(self, off_policy, sorted(ALGORITHMS), HER_STRATEGIES):
            if not ok:
                value = checks.show(getattr(self, name))
                raise ConfigError(f"{name}={value} is not valid: {fix}", name)
        self._check_task()

    def _check_task(self) -> None:
        import gymnasium as gym

        import factoryfloor  # noqa: F401  (registers the envs)

        if self.task not in gym.registry:
            ours = sorted(k for k in gym.registry if k.startswith("factoryfloor/"))
            raise ConfigError(
                f"task={checks.show(self.task)} is not a registered env id; use one of {ours}",
                "task",
            )
        max_steps = gym.registry[self.task].max_episode_steps or 0
        needed = max_steps * self.n_envs
        with_demos = bool(self.demos or self.demo_episodes)
        if self.her and not with_demos and self.learning_starts < needed:
            raise ConfigError(
                f"learning_starts={self.learning_starts} is too small: HER samples only finished "
                f"episodes ({max_steps} steps x {self.n_envs} envs); "
                f"set learning_starts >= {needed}",
                "learning_starts",
            )

    def make_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``gymnasium.make`` for this run's envs (robot included)."""
        return {"robot": self.robot, **self.env_kwargs}

    @property
    def off_policy(self) -> bool:
        """Whether ``algo`` learns from a replay buffer."""
        return ALGORITHMS[self.algo][2]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (what ``config.yaml`` holds)."""
        return asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML text, one key per field."""
        return str(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: Path | str, **overrides: Any) -> TrainConfig:
        """Load a complete config file (e.g. a run's ``config.yaml``), then apply ``overrides``.

        Raises:
            ConfigError: Naming ``path`` (or the override) when a value is refused.
        """
        data = read_yaml(Path(path))
        if "task" not in data and "task" not in overrides:
            raise ConfigError(f"{path} names no task: add `task: factoryfloor/<Task>-v0`", "task")
        try:
            return cls(**{**data, **overrides})
        except ConfigError as exc:
            where = "given as an override" if exc.field in overrides else f"in {path}"
            raise ConfigError(f"{exc} ({where})", exc.field) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """The fields of a config file, checked against ``TrainConfig``'s field names.

    Raises:
        ConfigError: When the file is missing, huge, nested too deep, empty, not a YAML mapping
            or has unknown keys.
    """
    data = checks.read_yaml_file(path)
    names = [f.name for f in fields(TrainConfig)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"unknown field {checks.show(key)} in {path}; {hint}valid fields: {names}"
            )
    return data


def shipped_config(entry: TaskEntry, algo: str, obs: str = "state") -> Path | None:
    """The shipped YAML of a task, algorithm and obs mode, or None when there is none.

    State configs are ``<task>_<algo>.yaml``; camera ones ``<task>_<algo>_camera.yaml``.
    """
    name = entry.config_file(algo)
    if obs != "state":
        name = name.removesuffix(".yaml") + f"_{obs}.yaml"
    path = resources.files("factoryfloor.policies") / "configs" / name
    return Path(str(path)) if path.is_file() else None


def task_name(env_id: str) -> str | None:
    """The factoryfloor task name of an env id (``"reach"``), or None for other envs."""
    entry = BY_ENV_ID.get(env_id)
    return entry.name if entry else None


def load_config(
    task: str,
    algo: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    obs: str = "state",
) -> TrainConfig:
    """Resolve a config: defaults < shipped YAML < ``config_file`` < ``overrides``.

    Args:
        task: Gymnasium env id.
        algo: Algorithm; None takes the user file's, else the task's
            ``TaskEntry.default_algo`` (``sac`` for camera observations).
        config_file: Optional user YAML with any subset of the fields.
        overrides: Field values that win over every file (None values are ignored).
        obs: ``state``, or ``camera``: the shipped camera config of the task (the env's
            ``obs_mode`` is then camera whatever the files say).
    """
    if obs not in OBS_CHOICES:
        raise ConfigError(f"--obs {obs!r}: use one of {', '.join(OBS_CHOICES)}", "obs")
    user = read_yaml(config_file) if config_file is not None else {}
    if "task" in user and user["task"] != task:
        raise ConfigError(
            f"{config_file} has task: {checks.show(user['task'])}, but the command line asks for "
            f"{task!r}; remove task: from the file or train {checks.show(user['task'])}"
        )
    entry = BY_ENV_ID.get(task)
    default_algo = "sac" if obs == "camera" or not entry else entry.default_algo
    algo = algo or user.get("algo") or default_algo
    known = isinstance(algo, str) and algo in ALGORITHMS  # (a file name is made from it)
    shipped = shipped_config(entry, algo, obs) if entry and known else None
    if obs != "state" and shipped is None:
        raise ConfigError(
            f"no shipped {obs} config for {task} with {algo}: train with --obs state, or pass "
            f"--config FILE.yaml with env_kwargs: {{obs_mode: {obs}}}",
            "obs",
        )
    base = read_yaml(shipped) if shipped else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for layer in (base, user, given):  # a layer's env_kwargs replaces the one below it
        if obs != "state" and (layer is base or "env_kwargs" in layer):
            layer["env_kwargs"] = {**layer.get("env_kwargs", {}), "obs_mode": obs}
    layers = {"the command-line options": given, f"{config_file}": user, f"{shipped}": base}
    try:
        cfg = TrainConfig(**{**base, **user, **given, "task": task, "algo": algo})
        checks.check_resources(cfg, cfg.off_policy)
    except ConfigError as exc:
        where = next((k for k, v in layers.items() if exc.field in v), None)
        files = [str(p) for p in (shipped, config_file) if p is not None] or ["defaults only"]
        source = f"set in {where}" if where else f"config: {' + '.join(files)}"
        raise ConfigError(f"{exc} ({source})", exc.field) from None
    if cfg.demos:  # refuse unusable demonstrations before any env or model is built
        from factoryfloor.policies.demos import load_demos

        load_demos(cfg.demos, env_id=cfg.task)
    return cfg


def resume_config(run_dir: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config of an existing run, with the few fields that may change on resume.

    Raises:
        ConfigError: When the run has no ``config.yaml`` or an override is not allowed.
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no run (no config.yaml); drop --resume to start one")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = TrainConfig.from_yaml(path)
    changed = sorted(
        k for k, v in given.items() if k not in RESUME_OVERRIDES and getattr(cfg, k) != v
    )
    if changed:
        raise ConfigError(
            f"cannot change {changed} when resuming (the run's config.yaml is used); only "
            f"{sorted(RESUME_OVERRIDES)} may change, or start a new run in another --out folder"
        )
    cfg = replace(cfg, **{k: v for k, v in given.items() if k in RESUME_OVERRIDES})
    try:
        checks.check_resources(cfg, cfg.off_policy)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (config: {path})", exc.field) from None
    return cfg


def run_folder(cfg: TrainConfig) -> Path:
    """``cfg.out``, or ``runs/<env name>_<algo>_seed<seed>`` when it is not set."""
    if cfg.out:
        return Path(cfg.out)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.task.split("/")[-1])
    return Path("runs") / f"{name}_{cfg.algo}_seed{cfg.seed}"


def resolve_config(
    task: str,
    algo: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    resume: bool = False,
    obs: str = "state",
) -> TrainConfig:
    """``load_config`` for a new run; for ``resume``, the run's own config (``resume_config``).

    The run folder resumed is ``overrides["out"]``, or the default folder of the task,
    algorithm and seed.
    """
    if not resume:
        return load_config(task, algo, config_file, overrides, obs)
    if config_file is not None:
        raise ConfigError("--config cannot be used with --resume (the run's config.yaml is used)")
    run_dir = run_folder(load_config(task, algo, None, overrides, obs))
    return resume_config(run_dir, {"task": task, "algo": algo, **(overrides or {})})
