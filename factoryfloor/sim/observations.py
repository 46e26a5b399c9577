"""What a policy may see: the observation vector as named segments, each real-cell or sim-only.

Every part of an observation is declared as data where it is produced: the arm lists the
segments of its state (``Arm.obs_segments``), each task the segments of its object state
(``Task.obs_segments``) and where its goals come from (``Task.goal_sources``). ``obs_layout``
reads them into one ``ObsLayout``, the single place the env asks what is privileged:

* ``Source.REAL``: a real cell has it (joint encoders, the TCP from forward kinematics, the
  gripper opening, the belt drive's speed, poses fixed by the cell layout, camera images).
* ``Source.PRIVILEGED``: it exists only in simulation (true part poses and velocities, the
  identity of the part on the table, an achieved goal that is a part's position).

``KEY_LAYOUTS`` maps each observation mode to the Dict keys it builds from the layout; in
``"camera"`` mode the actor's keys hold only real-cell entries and the privileged ones move to
``privileged`` (and ``achieved_goal``, which HER needs), for a critic or for relabelling.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class Source(enum.Enum):
    """Where an observation entry would come from in a real cell."""

    REAL = "real"
    PRIVILEGED = "privileged"


@dataclass(frozen=True)
class ObsSegment:
    """A named run of entries of the state observation vector.

    Attributes:
        name: Segment name, unique in the vector (e.g. ``"part_position"``).
        size: Number of floats.
        source: ``Source.REAL`` or ``Source.PRIVILEGED``.
        units: Units and frame, for manifests (e.g. ``"m, world"``).
        visible: Whether one camera frame shows it (a position, which part it is); a camera
            policy's estimator learns the visible sim-only entries, not rates such as a
            velocity, which a single frame cannot hold.
    """

    name: str
    size: int
    source: Source
    units: str
    visible: bool = True


def real(name: str, size: int, units: str) -> ObsSegment:
    """A segment a real cell measures."""
    return ObsSegment(name, size, Source.REAL, units)


def privileged(name: str, size: int, units: str, visible: bool = True) -> ObsSegment:
    """A segment that exists only in simulation (``visible``: one camera frame shows it)."""
    return ObsSegment(name, size, Source.PRIVILEGED, units, visible)


@dataclass(frozen=True)
class GoalSources:
    """Where the goal vectors come from.

    Attributes:
        achieved_goal: ``PRIVILEGED`` when it is a part's true position, ``REAL`` when it is
            the TCP.
        desired_goal: ``REAL`` when known from the cell layout (a bin, a commanded target).
    """

    achieved_goal: Source
    desired_goal: Source


@dataclass(frozen=True)
class ObsLayout:
    """The state observation vector (arm segments, then task segments) and the goal sources.

    Attributes:
        segments: In vector order.
        goals: Sources of ``achieved_goal`` and ``desired_goal``.
    """

    segments: tuple[ObsSegment, ...]
    goals: GoalSources

    @property
    def size(self) -> int:
        """Length of the full state vector."""
        return sum(s.size for s in self.segments)

    def names(self, source: Source) -> tuple[str, ...]:
        """Names of the segments from ``source``, in vector order."""
        return tuple(s.name for s in self.segments if s.source is source)

    def indices(self, source: Source) -> np.ndarray:
        """Indices (into the full state vector) of the entries from ``source``, int64 (n,)."""
        out: list[int] = []
        start = 0
        for s in self.segments:
            if s.source is source:
                out.extend(range(start, start + s.size))
            start += s.size
        return np.array(out, dtype=np.int64)

    def visible_privileged(self) -> np.ndarray:
        """Indices, into the ``privileged`` vector, of the entries one camera frame shows."""
        out: list[int] = []
        start = 0
        for s in self.segments:
            if s.source is Source.PRIVILEGED:
                if s.visible:
                    out.extend(range(start, start + s.size))
                start += s.size
        return np.array(out, dtype=np.int64)

    def slices(self, source: Source) -> dict[str, slice]:
        """Segment name -> its slice in the vector that holds only the ``source`` entries."""
        out: dict[str, slice] = {}
        start = 0
        for s in self.segments:
            if s.source is source:
                out[s.name] = slice(start, start + s.size)
                start += s.size
        return out


def obs_layout(
    robot_segments: Sequence[ObsSegment], task_segments: Sequence[ObsSegment], goals: GoalSources
) -> ObsLayout:
    """The one reading of the declared segments (arm first, then task, as in the vector).

    Raises:
        ValueError: For a segment name used twice.
    """
    segments = (*robot_segments, *task_segments)
    names = [s.name for s in segments]
    if len(set(names)) != len(names):
        raise ValueError(f"observation segment names must be unique, got {names}")
    return ObsLayout(segments, goals)


# ----------------------------------------------------------------------------- Dict keys


def goal_source(key: str, layout: ObsLayout) -> Source:
    """The source of a goal key under ``layout``."""
    return getattr(layout.goals, key)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ModeKeys:
    """The Dict keys of one observation mode.

    Attributes:
        split: Whether the state vector is split into ``observation`` (real-cell entries) and
            ``privileged`` (sim-only entries); else it is one ``observation``.
        image_keys: The uint8 image keys, in order (``image``: the fixed cell camera,
            ``wrist_image``: the camera on the wrist).
    """

    split: bool
    image_keys: tuple[str, ...]


MODE_KEYS: dict[str, ModeKeys] = {
    "state": ModeKeys(split=False, image_keys=()),
    "rgb": ModeKeys(split=False, image_keys=("image",)),
    "rgbd": ModeKeys(split=False, image_keys=("image",)),
    "camera": ModeKeys(split=True, image_keys=("image", "wrist_image")),
}


def key_segments(obs_mode: str, layout: ObsLayout) -> dict[str, dict[str, slice]]:
    """Vector key -> segment name -> its slice in that key's array."""
    if not MODE_KEYS[obs_mode].split:
        start, out = 0, {}
        for s in layout.segments:
            out[s.name] = slice(start, start + s.size)
            start += s.size
        return {"observation": out}
    split = {
        "observation": layout.slices(Source.REAL),
        "privileged": layout.slices(Source.PRIVILEGED),
    }
    return {k: v for k, v in split.items() if v}


def vector_keys(obs_mode: str, layout: ObsLayout) -> list[tuple[str, Source, int]]:
    """The float32 keys of a mode: (name, source, length), empty ones left out.

    Unsplit modes keep the one ``observation`` vector, privileged when any segment is.
    """
    goals = [(k, goal_source(k, layout), 3) for k in ("achieved_goal", "desired_goal")]
    if not MODE_KEYS[obs_mode].split:
        mixed = Source.PRIVILEGED if layout.names(Source.PRIVILEGED) else Source.REAL
        return [("observation", mixed, layout.size), *goals]
    parts = [
        ("observation", Source.REAL, len(layout.indices(Source.REAL))),
        ("privileged", Source.PRIVILEGED, len(layout.indices(Source.PRIVILEGED))),
    ]
    return [p for p in parts if p[2] > 0] + goals


def split_keys(
    keys: Sequence[tuple[str, Source, int]], image_keys: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(actor_keys, privileged_keys)``: images are real-cell, vectors by their source."""
    actor = tuple(k for k, s, _ in keys if s is Source.REAL) + tuple(image_keys)
    return actor, tuple(k for k, s, _ in keys if s is Source.PRIVILEGED)
