"""Run a bundle over the robustness grid, as the edge runtime would run it.

Every cell runs the same seeded episodes (``seed .. seed + episodes - 1``: a paired comparison
with the nominal cell) in ``SimController``, the simulated cell of the edge demo. Each control
cycle the bundle answers through ``BundleServedPolicy`` (the server's own adapter), the answer
crosses a ``SimulatedLink`` (the client's hold and age rules on a simulated clock) and the
runtime's ``SafetyLayer`` decides what the cell applies. An episode whose safety layer brakes
ends as a failure, counted as a fault: on a real cell the runtime would latch FAULT there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from factoryfloor.edge_runtime.bundle import BundlePolicy, load_bundle
from factoryfloor.edge_runtime.controller import safety_config
from factoryfloor.edge_runtime.safety import Decision, SafetyLayer, State
from factoryfloor.edge_runtime.served import BundleServedPolicy
from factoryfloor.stack.robustness.axes import Axis, Cell
from factoryfloor.stack.robustness.link import SimulatedLink
from factoryfloor.stack.sim_cell import SimController, cell_kwargs

LINK_STREAM = 7_919  # second word of each episode's link generator seed: [episode seed, this]
MAX_BRAKE_CYCLES = 100  # braking this long without standstill also ends the episode


@dataclass(frozen=True)
class LinkSettings:
    """The runtime settings the grid runs under (the edge runtime's defaults).

    Attributes:
        hold_window_s: The controller's hold window (s; ``run-sim --hold-window-ms``).
        max_age_s: The server's max action age (s; ``ServerConfig.max_action_age_ms``).
    """

    hold_window_s: float = 0.020
    max_age_s: float = 0.050


@dataclass
class CellResult:
    """One cell's episodes.

    Attributes:
        axis: Axis name ("nominal" for the unperturbed cell).
        level: The axis level (None for nominal).
        successes: Per episode, in seed order.
        faults: Episodes the safety layer ended by braking.
        fault_reasons: Why it braked (the safety layer's reason, numbers as N) -> episodes.
        steps: Control steps per episode.
        link: Answers sent, lost, stale, too old and taken.
        wall_s: Wall time of the cell (s).
    """

    axis: str
    level: float | None
    successes: list[bool] = field(default_factory=list)
    faults: int = 0
    fault_reasons: dict[str, int] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    link: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def success_rate(self) -> float:
        """Fraction of successful episodes."""
        return float(np.mean(self.successes)) if self.successes else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "success_rate": self.success_rate}


def _act(served: BundleServedPolicy, obs: Any, images: bool) -> np.ndarray:
    batch = {k: v[None] for k, v in obs.items()} if images else obs[None]
    return np.asarray(served.act_batch([0], batch)[0], dtype=np.float32)


def run_cell(
    bundle: BundlePolicy,
    axis: str,
    level: float | None,
    cell: Cell,
    episodes: int,
    seed: int,
    settings: LinkSettings,
) -> CellResult:
    """Run ``episodes`` episodes of the bundle's task in one cell of the grid."""
    manifest = bundle.manifest
    env_kwargs = {**cell_kwargs(manifest), **({"perturb": cell.perturb} if cell.perturb else {})}
    controller = SimController(
        manifest["task_id"], manifest["robot"], episodes, seed, env_kwargs=env_kwargs,
        wrap=cell.wrap,
    )  # fmt: skip
    served = BundleServedPolicy(bundle)
    desc = controller.description
    period = 1.0 / desc.control_rate_hz
    safety = SafetyLayer(safety_config(desc, None, desc.control_rate_hz, settings.hold_window_s,
                                       False))  # fmt: skip
    images = any(f["dtype"] == "uint8" for f in desc.observation)
    result, began, now = CellResult(axis, level), time.perf_counter(), 0.0
    link: SimulatedLink | None = None
    braking = 0
    try:
        while not controller.status().finished:
            obs, _ = controller.read_state()
            if link is None:  # an episode starts: re-armed, a fresh session
                safety.rearm(now)
                rng = np.random.default_rng([seed + len(controller.results), LINK_STREAM])
                link = SimulatedLink(cell.link, safety, period, settings.max_age_s, rng)
                braking = 0
            ended = len(controller.results)
            if safety.state in (State.BRAKING, State.FAULT):  # the wire is not used
                decision = safety.decide(now, None)
            else:
                action, at = link.exchange(now, _act(served, obs, images))
                decision = safety.decide(at, action)
            _apply(controller, decision)
            if decision.command is None:
                braking += 1
                if controller.status().standstill or braking >= MAX_BRAKE_CYCLES:
                    safety.standstill(now)
                    controller.abort_episode(decision.reason)
            if len(controller.results) > ended:
                _add(result.link, link.counts)
                link = None
            now += period
    finally:
        controller.close()
    for r in controller.results:
        result.successes.append(bool(r["success"]))
        result.steps.append(int(r["steps"]))
        if "fault" in r:
            result.faults += 1
            reason = re.sub(r"\d+(\.\d+)?", "N", str(r["fault"]))
            result.fault_reasons[reason] = result.fault_reasons.get(reason, 0) + 1
    result.wall_s = time.perf_counter() - began
    return result


def _apply(controller: SimController, decision: Decision) -> None:
    """What ``ControllerRuntime`` does with a decision: apply, hold or brake."""
    if decision.command is None:
        controller.brake()
    elif decision.state is State.RUNNING:
        controller.apply_action(decision.command)
    else:  # HOLD, ARMED
        controller.hold(decision.command)


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


def grid_cells(axes: Sequence[Axis], period_s: float) -> list[tuple[str, float | None, Cell]]:
    """The nominal cell, then each axis's levels in order."""
    cells: list[tuple[str, float | None, Cell]] = [("nominal", None, Cell())]
    for axis in axes:
        cells += [(axis.name, level, axis.cell(level, period_s)) for level in axis.levels]
    return cells


def run_grid(
    path: Path,
    axes: Sequence[Axis],
    episodes: int,
    seed: int,
    settings: LinkSettings,
    on_cell: Callable[[int, int, CellResult], None] | None = None,
) -> list[CellResult]:
    """Every cell of ``grid_cells`` for the bundle at ``path``, in this process."""
    bundle = load_bundle(path)
    period = 1.0 / float(bundle.manifest["control_rate_hz"])
    cells = grid_cells(axes, period)
    results = []
    for i, (name, level, cell) in enumerate(cells):
        results.append(run_cell(bundle, name, level, cell, episodes, seed, settings))
        if on_cell is not None:
            on_cell(i + 1, len(cells), results[-1])
    return results
