"""Checks of what enters ``FactoryEnv``: its keyword arguments and each step's action.

Every refusal is a ``ValueError`` (``EnvArgumentError`` for the keyword arguments) that names
the argument, the value that came and what is allowed. The keyword arguments are checked once,
before any pybullet world exists, against one table, ``ENV_ARG_CHECKS``, whose choices are read
from the live registries (tasks, robots and their control modes, task options). The action
check is on the hot path of training: one ``np.asarray``, a shape and dtype test and one
``np.isfinite(...).all()``; the detailed message is built only when the action is refused.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import reprlib
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import cache
from numbers import Integral, Real
from typing import Any

import numpy as np

from factoryfloor.robots import get_robot_spec, robot_names
from factoryfloor.sim.backend import PhysicsConfig
from factoryfloor.sim.perturbation import check_perturb, perturb_allowed
from factoryfloor.sim.registry import BY_ENV_ID, TASKS, task_entry
from factoryfloor.sim.tasks.base import REWARD_TYPES, Task

# obs mode -> image channels ("camera": two images, 4 channels with camera_depth=True); the
# Dict keys of each mode are in ``observations.MODE_KEYS``.
OBS_MODES = {"state": None, "rgb": 3, "rgbd": 4, "camera": 3}
RENDER_MODES = ("human", "rgb_array")
# Side of the square camera observation (pixels). TinyRenderer draws any size, but below 16 the
# cell is a few blobs, and a 512 x 512 RGB-D frame already takes ~0.15 s on one core.
IMAGE_SIZE_RANGE = (16, 512)
REAL_KINDS = frozenset("iuf")  # numpy dtype kinds of real numbers: int, uint, float
_KIND_NAMES = {
    "b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "strings",
    "S": "byte strings", "V": "structured records", "M": "datetimes", "m": "timedeltas",
}  # fmt: skip
_MAX_LISTED = 8  # non-finite entries named in a refusal
_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother = 80, 160  # a huge value is cut short in messages


class EnvArgumentError(ValueError):
    """A keyword argument of ``FactoryEnv`` (or ``gymnasium.make``) that was refused."""


class UnknownNameError(EnvArgumentError, KeyError):
    """An unknown task or robot name; also a ``KeyError``, which those raised before."""

    __str__ = BaseException.__str__  # the message, not KeyError's quoted repr of it


# ----------------------------------------------------------------------------- actions


def checked_action(action: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``action`` as an array after checking that it is finite real numbers of ``shape``.

    An ndarray is returned as it is; anything else (a list, a tuple) is converted to float32,
    as the env always did. A finite value too large for float32 becomes +-inf there, which the
    arm clips to the action bounds like any other out-of-range value.

    Raises:
        ValueError: Naming the non-finite entries (index and value), or the dtype and shape
            that came and the ones allowed.
    """
    try:
        array = np.asarray(action)
    except (TypeError, ValueError):  # ragged nesting, or an object numpy cannot read
        raise ValueError(_describe_bad_action(action, None, shape)) from None
    if array.shape == shape and array.dtype.kind in REAL_KINDS and np.isfinite(array).all():
        return array if array is action else array.astype(np.float32)
    raise ValueError(_describe_bad_action(action, array, shape))


def _describe_bad_action(action: Any, array: np.ndarray | None, shape: tuple[int, ...]) -> str:
    """Why ``checked_action`` refused ``action`` (built only on failure)."""
    allowed = f"action must be real numbers (float or int) of shape {shape}"
    if array is None:
        return f"{allowed}; got {type(action).__name__} {_repr.repr(action)}, not one array"
    kind = array.dtype.kind
    if kind not in REAL_KINDS:
        what = _KIND_NAMES.get(kind, "values")
        return f"{allowed}; got {what} (dtype {array.dtype}) of shape {array.shape}"
    if array.shape != shape:
        return f"{allowed}; got shape {array.shape}"
    bad = np.flatnonzero(~np.isfinite(array))
    named = ", ".join(f"action[{i}]={array[i].item()!r}" for i in bad[:_MAX_LISTED])
    more = f" (and {len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else ""
    return f"{named}{more}: actions must be finite (no NaN or inf)"


# ----------------------------------------------------------------------------- keyword arguments


@dataclass(frozen=True)
class ArgCheck:
    """The check of one keyword argument of ``FactoryEnv``.

    Attributes:
        name: The keyword argument.
        valid: ``valid(value, args)``: whether ``value`` is accepted; ``args`` holds all the
            keyword arguments, those of earlier checks already valid.
        allowed: ``allowed(args)``: what is accepted, for the message of a refusal.
        error: The exception raised on refusal.
    """

    name: str
    valid: Callable[[Any, Mapping[str, Any]], bool]
    allowed: Callable[[Mapping[str, Any]], str]
    error: type[EnvArgumentError] = EnvArgumentError


def _choice(
    name: str,
    choices: Callable[[Mapping[str, Any]], Collection[Any]],
    error: type[EnvArgumentError] = EnvArgumentError,
    note: Callable[[Mapping[str, Any]], str] = lambda args: "",
) -> ArgCheck:
    """The check that a value is one of ``choices(args)`` (strings, and None where listed)."""
    return ArgCheck(
        name,
        lambda value, args: (value is None or isinstance(value, str)) and value in choices(args),
        lambda args: f"choose one of {list(choices(args))}{note(args)}",
        error,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool | np.bool_)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


@cache
def task_option_types(task: str) -> dict[str, Any]:
    """The options a task accepts in ``task_options``: name -> type hint (``Any`` if none).

    They are the keyword-only parameters of the ``__init__`` methods of the task's class and
    of its bases below ``Task`` (whose own parameters the env passes itself).
    """
    options: dict[str, Any] = {}
    for cls in task_entry(task).load_task_class().__mro__:
        if cls is Task:
            break
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except (NameError, TypeError):  # an annotation that does not resolve: no type check
            hints = {}
        for p in inspect.signature(init).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                options.setdefault(p.name, hints.get(p.name, Any))
    return options


def _fits(value: Any, hint: Any) -> bool:
    """Whether an option value has the type of its hint (only plain classes are checked)."""
    if hint is float:
        return isinstance(value, Real) and not _is_bool(value)
    if hint is int:
        return _is_int(value)
    if hint is bool:
        return _is_bool(value)
    return not isinstance(hint, type) or isinstance(value, hint)


def _task_options_ok(value: Any, args: Mapping[str, Any]) -> bool:
    if value is None:
        return True
    if not isinstance(value, Mapping):
        return False
    options = task_option_types(args["task"])
    return all(k in options and _fits(v, options[k]) for k, v in value.items())


def _task_options_allowed(args: Mapping[str, Any]) -> str:
    task, options = args["task"], task_option_types(args["task"])
    if not options:
        return f"task {task!r} takes no options; pass None or {{}}"
    listed = ", ".join(f"{k}: {getattr(h, '__name__', h)}" for k, h in options.items())
    return f"pass None or a dict of the options of task {task!r}: {{{listed}}}"


def _finite_fields(config: Any) -> bool:
    """Whether every numeric field of a dataclass is finite (PhysicsConfig lets NaN through)."""
    values = [getattr(config, f.name) for f in dataclasses.fields(config)]
    return all(math.isfinite(v) for v in values if isinstance(v, Real))


def _control_modes(args: Mapping[str, Any]) -> tuple[str, ...]:
    return get_robot_spec(args["robot"]).control_modes


ENV_ARG_CHECKS: tuple[ArgCheck, ...] = (
    _choice("task", lambda a: [*TASKS, *BY_ENV_ID], UnknownNameError),
    _choice("robot", lambda a: robot_names(), UnknownNameError),
    _choice("control", _control_modes, note=lambda a: f" (robot {a['robot']!r})"),
    _choice("reward", lambda a: REWARD_TYPES),
    _choice("obs_mode", lambda a: OBS_MODES),
    _choice("render_mode", lambda a: [None, *RENDER_MODES]),
    ArgCheck(
        "image_size",
        lambda v, a: _is_int(v) and IMAGE_SIZE_RANGE[0] <= v <= IMAGE_SIZE_RANGE[1],
        lambda a: "use an int from {} to {} (pixels; not a bool or a float)".format(
            *IMAGE_SIZE_RANGE
        ),
    ),
    ArgCheck("randomize", lambda v, a: _is_bool(v), lambda a: "use True or False (a bool)"),
    ArgCheck(
        "camera_depth",
        lambda v, a: _is_bool(v) and (not v or a["obs_mode"] == "camera"),
        lambda a: (
            "use True or False (a bool); True adds depth to the images of obs_mode='camera' "
            f"only (obs_mode={a['obs_mode']!r}; for one RGB-D cell camera use obs_mode='rgbd')"
        ),
    ),
    ArgCheck(
        "physics",
        lambda v, a: v is None or (isinstance(v, PhysicsConfig) and _finite_fields(v)),
        lambda a: (
            "pass None (the defaults) or a factoryfloor.sim.backend.PhysicsConfig of finite "
            "values, e.g. PhysicsConfig(substeps=6)"
        ),
    ),
    ArgCheck("task_options", _task_options_ok, _task_options_allowed),
    ArgCheck("perturb", lambda v, a: check_perturb(v), lambda a: perturb_allowed()),
)


def check_env_args(args: Mapping[str, Any]) -> None:
    """Check the keyword arguments of ``FactoryEnv`` against ``ENV_ARG_CHECKS``, in order.

    Raises:
        EnvArgumentError: For the first refused argument: its name, the value and what is
            allowed (``UnknownNameError``, also a ``KeyError``, for a task or robot name).
    """
    for check in ENV_ARG_CHECKS:
        value = args[check.name]
        if not check.valid(value, args):
            raise check.error(
                f"{check.name}={_repr.repr(value)} is not supported; {check.allowed(args)}"
            )
