"""The axes of the robustness report: what is perturbed, in which unit, at which levels.

Three kinds of axis, one registry (``AXES``):

* ``sim``: the cell's physics, through ``gymnasium.make(..., perturb=...)``
  (``factoryfloor.sim.perturbation``; its ranges bound the levels);
* ``sensor``: what the policy is given (``sensors.py`` wrappers);
* ``link``: latency and lost answers on the wire (``link.LinkModel``), through the runtime's
  own hold and age rules.

An axis may exist only for camera bundles (images) or only for state bundles (a part pose the
policy reads). ``measured_latency_axis`` builds the latency axis from the edge runtime's own
metrics (``--latency-from``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from factoryfloor.sim.perturbation import SIM_AXES
from factoryfloor.stack.robustness import sensors
from factoryfloor.stack.robustness.link import LinkModel

Wrap = Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]
LATENCY_JITTER_PERIODS = 0.25  # uniform extra latency on the latency axis (control periods)
MAX_METRICS_BYTES = 64 * 2**20
MEASURED_LATENCY = "measured_latency_ms"


@dataclass(frozen=True)
class Cell:
    """How one (axis, level) cell of the grid is run.

    Attributes:
        perturb: ``gymnasium.make``'s ``perturb`` (sim axes).
        wrap: A wrapper around the env (sensor axes), or None.
        link: When answers arrive (link axes; the default: at once, none lost).
    """

    perturb: dict[str, float] = field(default_factory=dict)
    wrap: Wrap | None = None
    link: LinkModel = field(default_factory=LinkModel)


@dataclass(frozen=True)
class Axis:
    """One axis of the report.

    Attributes:
        name: Axis name (the report's row).
        unit: Unit of its levels.
        levels: The levels run, in order of severity.
        doc: What a level means.
        kind: ``"sim"``, ``"sensor"`` or ``"link"``.
        images: True: camera bundles only; False: state bundles only; None: both.
        cell: The cell of a level, given the control period (s).
    """

    name: str
    unit: str
    levels: tuple[float, ...]
    doc: str
    kind: str
    cell: Callable[[float, float], Cell]
    images: bool | None = None

    def applies(self, has_images: bool) -> bool:
        """Whether the axis exists for a bundle with (or without) images."""
        return self.images is None or self.images == has_images


def _sim(name: str, levels: tuple[float, ...], images: bool | None = None) -> Axis:
    sim = SIM_AXES[name]
    return Axis(
        name, sim.unit, levels, sim.doc, "sim",
        lambda level, period: Cell(perturb={name: level}), images,
    )  # fmt: skip


def _latency_cell(periods: float, period_s: float) -> Cell:
    return Cell(link=LinkModel(periods * period_s, LATENCY_JITTER_PERIODS * period_s))


AXES: dict[str, Axis] = {
    axis.name: axis
    for axis in (
        _sim("part_mass_scale", (0.5, 2.0, 4.0)),
        _sim("part_friction", (0.5, 0.3, 0.15)),
        _sim("actuator_gain", (0.7, 0.4, 0.2)),
        _sim("camera_offset_m", (0.01, 0.02, 0.04), images=True),
        Axis(
            "position_noise_m", "m", (0.002, 0.005, 0.01),
            "Gaussian noise (sigma) on every measured position the policy reads, each step",
            "sensor", lambda s, p: Cell(wrap=lambda env: sensors.PositionNoise(env, s)),
        ),
        Axis(
            "part_pose_error_m", "m", (0.005, 0.01, 0.02),
            "constant horizontal error on the part positions the policy reads, per episode",
            "sensor", lambda e, p: Cell(wrap=lambda env: sensors.PartPoseError(env, e)),
            images=False,
        ),
        Axis(
            "light_gain", "x", (0.8, 0.6, 1.4),
            "scene brightness: the images' RGB times this",
            "sensor", lambda g, p: Cell(wrap=lambda env: sensors.ImageLight(env, g)),
            images=True,
        ),
        Axis(
            "colour_jitter", "-", (0.05, 0.1, 0.2),
            "white balance: each RGB channel times 1 +- this (random sign per episode)",
            "sensor", lambda c, p: Cell(wrap=lambda env: sensors.ColourJitter(env, c)),
            images=True,
        ),
        Axis(
            "latency_periods", "periods", (1.0, 2.0, 3.0),
            "observation-to-answer latency in control periods, plus uniform jitter of "
            f"{LATENCY_JITTER_PERIODS} period",
            "link", _latency_cell,
        ),
        Axis(
            "drop_rate", "-", (0.05, 0.1, 0.25),
            "fraction of the server's answers that never arrive",
            "link", lambda r, p: Cell(link=LinkModel(drop_rate=r)),
        ),
    )
}  # fmt: skip


def _round_trip(record: Any) -> dict[str, Any] | None:
    """The ``round_trip`` summary (µs) of a metrics snapshot or of a runtime report's client."""
    if not isinstance(record, dict):
        return None
    for holder in (record, record.get("client")):
        latency = holder.get("latency_us") if isinstance(holder, dict) else None
        if isinstance(latency, dict) and isinstance(latency.get("round_trip"), dict):
            return latency["round_trip"]  # type: ignore[no-any-return]
    return None


def read_round_trip(path: Path) -> tuple[float, float]:
    """The p50 and p99 round trip (ms) of the last line of a metrics JSON lines file that has one.

    ``edge run-sim --metrics-jsonl`` writes runtime reports (``client.latency_us.round_trip``,
    µs); a bare client metrics snapshot (``latency_us.round_trip``) is read too.

    Raises:
        ValueError: When the file is missing, too large, not JSON lines, or has no round trip.
    """
    if not path.is_file():
        raise ValueError(f"no metrics file at {path}: run `factoryfloor edge run-sim "
                         "--metrics-jsonl FILE` (or the demo) to measure one")  # fmt: skip
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise ValueError(f"{path} is over {MAX_METRICS_BYTES // 2**20} MiB: not a metrics file")
    last: Any = None
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError(f"{path} line {n + 1} is not a JSON object") from None
        rtt = _round_trip(record)
        if rtt is not None:
            last = rtt
    if last is None:
        raise ValueError(f"{path} holds no round_trip latency (a controller's metrics file)")
    try:
        p50, p99 = float(last["p50"]) / 1e3, float(last["p99"]) / 1e3
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: its round_trip latency has no numeric p50 and p99") from None
    if not (math.isfinite(p99) and 0 <= p50 <= p99 < 10_000):
        raise ValueError(f"{path}: round_trip p50 {p50} ms and p99 {p99} ms are not plausible")
    return p50, p99


def measured_latency_axis(p50_ms: float, p99_ms: float, period_s: float) -> Axis:
    """A latency axis at the edge runtime's measured p50, p99, and p99 + one period of jitter.

    Levels in ms; the jitter is uniform over one control period ``period_s`` (s).
    """
    jitter_ms = period_s * 1e3

    def cell(level_ms: float, period: float) -> Cell:
        if level_ms > p99_ms + jitter_ms / 2:  # the third level (levels are rounded to 1 µs)
            return Cell(link=LinkModel(p99_ms / 1e3, jitter_ms / 1e3))
        return Cell(link=LinkModel(level_ms / 1e3))

    return Axis(
        MEASURED_LATENCY, "ms",
        (round(p50_ms, 3), round(p99_ms, 3), round(p99_ms + jitter_ms, 3)),
        "latency the edge runtime measured: its p50, its p99, p99 + one period of jitter",
        "link", cell,
    )  # fmt: skip


def resolve_axes(
    names: Sequence[str], measured_ms: tuple[float, float] | None, period_s: float
) -> list[Axis]:
    """The axes named (``AXES``), then the measured latency axis when given (p50, p99 ms)."""
    axes = [AXES[n] for n in names]
    if measured_ms is not None:
        axes.append(measured_latency_axis(*measured_ms, period_s))
    return axes
