"""The checks of a ``TrainConfig``: types, ranges, cross-field rules, YAML files, resources.

Each refusal is a ``ConfigError`` naming the field, the value, what is allowed and how to fix
it (``load_config`` adds the file or option it came from). ``coerce`` refuses floats where an
integer is meant and booleans where a number is; ``LIMITS`` (a table) bounds every numeric
field, absolutely, so that a config loads on any machine (``export``, ``--resume``);
``check_resources`` adds the machine-relative limits (CPUs, memory) when a run starts.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import typing
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

MAX_STEPS = 10**10  # env steps: ~100 days at 1,000 steps/s
MAX_WIDTH, MAX_LAYERS = 4096, 8  # net_arch: hidden layer width (units) and depth
IMAGE_SIZE = (36, 512)  # env_kwargs.image_size (pixels): SB3's NatureCNN needs >= 36
MAX_YAML_BYTES = 256 * 1024  # a config is ~1 KiB
MAX_YAML_DEPTH = 8  # mappings/lists: config > env_kwargs > task_options > ... (3 used)
MAX_NESTING, MAX_ITEMS = 6, 1000  # dict fields (env_kwargs, policy_kwargs, algo_kwargs)
# Memory estimate: bounds on what the tasks' spaces hold (largest today: 39 observation floats
# over all keys, 8 action floats), and what one subprocess env (Python + pybullet) takes.
STATE_FLOATS, ACTION_FLOATS, CNN_FEATURES = 64, 8, 512
ENV_PROCESS_BYTES = 256 * 2**20
GIB = 2**30
Rule = tuple[str, bool, str]  # (field, condition, how to fix)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


class ConfigError(ValueError):
    """A config value or file that cannot be used; the message says how to fix it.

    Attributes:
        field: The field at fault, when there is one (``load_config`` names its source).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def show(value: Any) -> str:
    """``repr(value)``, cut to 60 characters (a refusal stays one readable line)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


@dataclass(frozen=True)
class Limit:
    """The allowed values of a numeric field: ``low``..``high`` (bounds included unless open)."""

    low: float
    high: float
    fix: str
    open_low: bool = False
    open_high: bool = False
    also: tuple[int, ...] = ()  # allowed outside the range (e.g. -1: "one per env step")

    def allows(self, value: float) -> bool:
        """Whether ``value`` is allowed."""
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return value in self.also or (above and below)

    def text(self) -> str:
        """The range in interval notation, e.g. ``(0, 1]``."""
        extra = "".join(f" or {v}" for v in self.also)
        low, high = (f"{v:g}" if isinstance(v, float) else str(v) for v in (self.low, self.high))
        return (
            f"{'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}{extra}"
        )


LIMITS: dict[str, Limit] = {
    "timesteps": Limit(1, MAX_STEPS, "give a training budget >= 1 env step"),
    "n_envs": Limit(1, 4096, "use 1 (in-process) or more (subprocesses)"),
    "seed": Limit(0, 2**32 - 1025, "use a seed in [0, 2**32 - 1024)"),
    "learning_rate": Limit(0, 1, "use a small positive rate, e.g. 1e-3", True, True),
    "batch_size": Limit(1, 65_536, "use a positive batch size, e.g. 256"),
    "gamma": Limit(0, 1, "use a discount in (0, 1], e.g. 0.95", open_low=True),
    "her_n_sampled_goal": Limit(1, 64, "use >= 1, e.g. 4"),
    "buffer_size": Limit(1, 10**8, "e.g. 1000000 transitions"),
    "learning_starts": Limit(0, MAX_STEPS, "use >= 0 env steps"),
    "train_freq": Limit(1, 10**6, "use >= 1 vectorised env step"),
    "gradient_steps": Limit(1, 10_000, "use >= 1, or -1 (one per env step)", also=(-1,)),
    "tau": Limit(0, 1, "use a coefficient in (0, 1], e.g. 0.05", open_low=True),
    "action_noise_std": Limit(0, 10, "use >= 0 (0: no noise), e.g. 0.1"),
    "eval_every_steps": Limit(1, MAX_STEPS, "use >= 1 env step"),
    "eval_episodes": Limit(1, 10_000, "use >= 1 episode, e.g. 50"),
    "eval_seed": Limit(0, 2**32 - 1, "use a seed >= 0"),
    "checkpoint_every_steps": Limit(0, MAX_STEPS, "use >= 0 (0: only at the end)"),
    "torch_threads": Limit(0, 1024, "use 0 (torch's default) or a few threads"),
    "verbose": Limit(0, 2, "use 0, 1 or 2"),
    "demo_episodes": Limit(0, 100_000, "use >= 0 episodes (0: none)"),
    "demo_action_noise": Limit(0, 1, "use a noise std in [0, 1], e.g. 0.2 (0: none)"),
    "bc_epochs": Limit(0, 10_000, "use >= 0 epochs (0: no behaviour cloning)"),
    "bc_batch_size": Limit(1, 65_536, "use a positive batch size, e.g. 256"),
    "bc_learning_rate": Limit(0, 1, "use e.g. 1e-3", True, True),
    "critic_pretrain_steps": Limit(0, 1_000_000, "use >= 0 steps (0: none)"),
    "bc_alpha": Limit(0, 1e6, "use a weight >= 0, e.g. 2.5 (0: plain SAC)"),
    "envs_per_actor": Limit(1, 256, "use >= 1 environment per actor"),
    "target_success": Limit(0, 1, "use a rate in [0, 1] (0: never)"),
    "max_wall_time_s": Limit(0, 10**9, "use >= 0 seconds (0: no limit)"),
}
# dict field -> {key: Limit} for the numeric keys that size what is built
KWARG_LIMITS: dict[str, dict[str, Limit]] = {
    "policy_kwargs": {"n_critics": Limit(1, 16, "e.g. 2"), "n_quantiles": Limit(1, 1024, "")},
    "algo_kwargs": {"n_steps": Limit(1, 2**20, "e.g. 2048"), "n_epochs": Limit(1, 1000, "")},
}


def coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotated type ``hint``, or a ConfigError that says what was expected."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    if origin is bool and isinstance(value, bool):
        return value
    if origin is int and _is_int(value):
        return int(value)
    if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if origin is str and isinstance(value, str | Path):
        return str(value)
    if origin is list and isinstance(value, list | tuple) and all(_is_int(v) for v in value):
        return [int(v) for v in value]
    if origin is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return dict(value)
    kind = "list of int" if origin is list else getattr(origin, "__name__", str(origin))
    hint_text = ""
    if origin is int and isinstance(value, float) and math.isfinite(value):
        hint_text = f"; write a whole number without a point or exponent, e.g. {int(value)}"
    elif isinstance(value, str) and origin in (int, float) and _number(value) is not None:
        number = _number(value) or 0.0
        example = show(int(number)) if origin is int and number.is_integer() else repr(number)
        hint_text = f" (YAML reads {show(value)} as text: write {example})"
    raise ConfigError(
        f"{name} must be {kind}, got {show(value)} ({type(value).__name__}){hint_text}",
        name.split(".")[0],
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def check_range(name: str, value: Any, limit: Limit) -> None:
    """Refuse a number outside ``limit`` (or not finite), naming the field and the range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"{name}={value!r} is not valid: give a finite number in {limit.text()}", name
        )
    if not limit.allows(value):
        raise ConfigError(
            f"{name}={show(value)} is not valid: allowed {limit.text()}; {limit.fix}".rstrip("; "),
            name.split(".")[0],
        )


def check_ranges(cfg: Any) -> None:
    """Every field of ``LIMITS``, ``net_arch`` and the dict fields' nesting and sized keys."""
    for name, limit in LIMITS.items():
        check_range(name, getattr(cfg, name), limit)
    arch = cfg.net_arch
    if not arch or len(arch) > MAX_LAYERS or not all(1 <= w <= MAX_WIDTH for w in arch):
        raise ConfigError(
            f"net_arch={show(arch)} is not valid: give 1 to {MAX_LAYERS} hidden layer widths, "
            f"each in [1, {MAX_WIDTH}], e.g. [64, 64]",
            "net_arch",
        )
    for name in ("env_kwargs", "policy_kwargs", "algo_kwargs"):
        depth, items = _nesting(getattr(cfg, name))
        if depth > MAX_NESTING or items > MAX_ITEMS:
            raise ConfigError(
                f"{name} is nested {depth} deep with {items} values: allowed {MAX_NESTING} levels "
                f"and {MAX_ITEMS} values; give plain keyword arguments",
                name,
            )
        for key, limit in KWARG_LIMITS.get(name, {}).items():
            if key in getattr(cfg, name):
                value = coerce(f"{name}.{key}", getattr(cfg, name)[key], int)
                check_range(f"{name}.{key}", value, limit)
    if "net_arch" in cfg.policy_kwargs:
        raise ConfigError(
            "policy_kwargs.net_arch is not allowed: set the net_arch field", "policy_kwargs"
        )
    _check_env_kwargs(cfg)


def _nesting(value: Any) -> tuple[int, int]:
    """(depth, number of values) of nested dicts and lists, without recursion."""
    depth = items = 0
    stack = [(value, 0)]
    while stack and items <= MAX_ITEMS:
        node, level = stack.pop()
        items += 1
        if isinstance(node, dict | list | tuple):
            depth = max(depth, level + 1)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return depth, items


def _check_env_kwargs(cfg: Any) -> None:
    """Keyword arguments of the factoryfloor envs: known names, a usable ``image_size``."""
    from factoryfloor.sim.registry import BY_ENV_ID

    if not cfg.env_kwargs or cfg.task not in BY_ENV_ID:
        return
    import inspect

    from factoryfloor.sim.env import FactoryEnv

    known = set(inspect.signature(FactoryEnv.__init__).parameters) - {"self", "task"}
    unknown = sorted(set(cfg.env_kwargs) - known)
    if unknown:
        raise ConfigError(
            f"env_kwargs {unknown} are not arguments of the factoryfloor envs; use {sorted(known)}",
            "env_kwargs",
        )
    if "image_size" in cfg.env_kwargs:
        size = coerce("env_kwargs.image_size", cfg.env_kwargs["image_size"], int)
        fix = "pixels per side of the camera image; SB3's NatureCNN needs >= 36, e.g. 84"
        check_range("env_kwargs.image_size", size, Limit(*IMAGE_SIZE, fix))


def rules(cfg: Any, off_policy: bool, algos: list[str], her: tuple[str, ...]) -> list[Rule]:
    """(field, condition, how to fix) of every rule that is not a plain range."""
    from factoryfloor.robots import robot_names

    with_demos = bool(cfg.demos or cfg.demo_episodes)
    every_ckpt = min(1000, cfg.eval_every_steps)
    return [
        ("algo", cfg.algo in algos, f"choose one of {algos}"),
        ("robot", cfg.robot in robot_names(), f"choose one of {robot_names()}"),
        ("env_kwargs", "robot" not in cfg.env_kwargs, "set the robot field, not env_kwargs"),
        ("device", _DEVICE.fullmatch(cfg.device) is not None, "use auto, cpu, cuda, cuda:N or mps"),
        ("her", off_policy or not cfg.her, "set her: false for on-policy algorithms (ppo)"),
        ("her_goal_selection", cfg.her_goal_selection in her, f"choose one of {her}"),
        ("buffer_size", cfg.buffer_size >= cfg.batch_size, "use >= batch_size"),
        (
            "checkpoint_every_steps",
            cfg.checkpoint_every_steps == 0 or cfg.checkpoint_every_steps >= every_ckpt,
            f"use 0 (only at the end) or >= {every_ckpt} (min(1000, eval_every_steps)): each "
            "checkpoint writes the model and the replay buffer",
        ),
        ("demos", off_policy or not cfg.demos, "demos seed a replay buffer: sac, td3, tqc"),
        ("demo_episodes", off_policy or not cfg.demo_episodes, "use sac, td3 or tqc"),
        (
            "demo_action_noise",
            not cfg.demo_action_noise or cfg.demo_episodes,
            "the noise applies to the episodes train records: set demo_episodes",
        ),
        (
            "bc_epochs",
            not cfg.bc_epochs or with_demos,
            "behaviour cloning needs demonstrations: set demos or demo_episodes",
        ),
        (
            "critic_pretrain_steps",
            not cfg.critic_pretrain_steps or with_demos,
            "critic pre-training needs demonstrations: set demos or demo_episodes",
        ),
        ("bc_alpha", not cfg.bc_alpha or cfg.algo == "sac", "it is SAC's actor loss: algo sac"),
        ("bc_alpha", not cfg.bc_alpha or with_demos, "it anchors to demos: set demo_episodes"),
    ]


def read_yaml_file(path: Path) -> dict[str, Any]:
    """The mapping a YAML config file holds, refused when huge, deep, aliased or empty.

    Raises:
        ConfigError: Naming ``path`` and what is wrong with it.
    """
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"config file {path} is {size:,} bytes, over {MAX_YAML_BYTES:,}")
        text = path.read_bytes().decode("utf-8")
        _check_events(path, text)
        data = yaml.safe_load(text)
    except ConfigError:
        raise
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as exc:  # (not UTF-8, big ints)
        what = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"cannot read config file {path}: {what}") from None
    if data is None or data == {}:
        raise ConfigError(
            f"config file {path} is empty; give at least one field or leave out --config"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value")
    return data


def _check_events(path: Path, text: str) -> None:
    """Refuse nesting deeper than ``MAX_YAML_DEPTH`` and aliases, before building anything."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"config file {path} uses a YAML alias (*name); write values out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"config file {path} nests mappings/lists more than {MAX_YAML_DEPTH} deep; "
                    "a config is field: value, with small mappings for *_kwargs"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _image_bytes(env_kwargs: dict[str, Any]) -> int:
    """uint8 image bytes of one observation: every camera of the obs mode (``MODE_KEYS``)."""
    from factoryfloor.sim.env_checks import OBS_MODES
    from factoryfloor.sim.observations import MODE_KEYS

    mode = str(env_kwargs.get("obs_mode", "state"))
    if mode not in MODE_KEYS:
        return 0  # the env refuses it, with the list of modes
    channels = OBS_MODES[mode] or 0
    if mode == "camera" and env_kwargs.get("camera_depth") is True:
        channels += 1
    size = env_kwargs.get("image_size", 84)
    side = size if _is_int(size) else 84
    return len(MODE_KEYS[mode].image_keys) * channels * side**2


def estimate_memory(cfg: Any, off_policy: bool) -> dict[str, int]:
    """Bytes ``cfg``'s run may need, by part: upper bounds from its sizes and the space bounds."""
    kwargs = cfg.env_kwargs
    image = _image_bytes(kwargs)
    transition = 2 * (4 * STATE_FLOATS + image) + 4 * ACTION_FLOATS + 12 + (16 if cfg.her else 0)
    n_steps = int(cfg.algo_kwargs.get("n_steps", 2048))
    stored = cfg.buffer_size if off_policy else n_steps * cfg.n_envs  # replay / rollout buffer
    mlps = 2 + 2 * int(cfg.policy_kwargs.get("n_critics", 2))  # actor, critics (+ targets)
    inputs = STATE_FLOATS + ACTION_FLOATS + (CNN_FEATURES if image else 0)
    params = sum((a + 1) * b for a, b in pairwise([inputs, *cfg.net_arch, 2 * ACTION_FLOATS]))
    per_sample = 8 * (STATE_FLOATS + image) + 12 * mlps * sum(cfg.net_arch)
    return {
        f"transitions ({stored:,} x ~{transition:,} B)": stored * transition,
        "networks with gradients and Adam moments": 16 * mlps * params,
        "batches": max(cfg.batch_size, cfg.bc_batch_size) * per_sample,
        "env processes": ENV_PROCESS_BYTES * cfg.n_envs if cfg.n_envs > 1 and not cfg.ray else 0,
    }


def available_memory() -> int | None:
    """Bytes this process may still allocate (MemAvailable, capped by its cgroup), or None."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        meminfo = dict(line.split()[:2] for line in _read("/proc/meminfo").splitlines())
        found.append(1024 * int(meminfo["MemAvailable:"]))
    if not found and "SC_AVPHYS_PAGES" in getattr(os, "sysconf_names", {}):
        found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    with contextlib.suppress(OSError, ValueError):  # "max": no limit
        cgroup = int(_read("/sys/fs/cgroup/memory.max"))
        found.append(cgroup - int(_read("/sys/fs/cgroup/memory.current")))
    return min(found) if found else None


def _read(path: str) -> str:
    return Path(path).read_text().strip()


def usable_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_resources(cfg: Any, off_policy: bool) -> None:
    """Machine-relative limits of a run about to start: threads, env processes, memory.

    Raises:
        ConfigError: With the limit, or the memory estimate in GiB and how to lower it.
    """
    cpus = usable_cpus()
    if cfg.torch_threads > 2 * cpus:
        raise ConfigError(
            f"torch_threads={cfg.torch_threads} is not valid: allowed [0, {2 * cpus}] (2 x the "
            f"{cpus} CPUs this process may use); use 0 (torch's default) or fewer threads",
            "torch_threads",
        )
    max_envs = max(8, 4 * cpus)
    if not cfg.ray and cfg.n_envs > max_envs:
        raise ConfigError(
            f"n_envs={cfg.n_envs} is not valid: allowed [1, {max_envs}] subprocess envs on "
            f"{cpus} CPUs; use fewer, or --ray to spread them over a cluster",
            "n_envs",
        )
    need, have = estimate_memory(cfg, off_policy), available_memory()
    total = sum(need.values())
    if have is not None and total > have:
        parts = "; ".join(f"{what}: {n / GIB:.1f} GiB" for what, n in need.items())
        raise ConfigError(
            f"this run needs an estimated {total / GIB:.1f} GiB of memory ({parts}), more "
            f"than the {have / GIB:.1f} GiB available; lower buffer_size, batch_size, net_arch "
            "or n_envs"
        )
