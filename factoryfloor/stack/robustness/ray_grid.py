"""``factoryfloor robustness ... --ray``: the grid's cells spread over Ray tasks.

The bundle travels to the workers as bytes (no shared file system needed); each worker
verifies it again (``load_bundle``), runs its cell and returns the ``CellResult``. The cells
are deterministic, so the report is the one a single process would write.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import ray

from factoryfloor.stack.robustness.axes import resolve_axes
from factoryfloor.stack.robustness.run import CellResult, LinkSettings, grid_cells, run_cell


def _cell_task(
    data: bytes, name: str, axis_names: list[str], measured_ms: tuple[float, float] | None,
    index: int, episodes: int, seed: int, settings: LinkSettings,
) -> CellResult:  # fmt: skip
    import factoryfloor  # noqa: F401  (registers the envs in the worker)
    from factoryfloor.edge_runtime.bundle import load_bundle

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        bundle = load_bundle(path)
    period = 1.0 / float(bundle.manifest["control_rate_hz"])
    axes = resolve_axes(axis_names, measured_ms, period)
    axis, level, cell = grid_cells(axes, period)[index]
    return run_cell(bundle, axis, level, cell, episodes, seed, settings)


def run_grid_on_ray(
    path: Path,
    axis_names: Sequence[str],
    measured_ms: tuple[float, float] | None,
    episodes: int,
    seed: int,
    settings: LinkSettings,
    on_cell: Callable[[int, int, CellResult], None] | None = None,
) -> list[CellResult]:
    """``run.run_grid`` with one Ray task per cell (Ray must be initialised).

    The axes travel as their names and the measured latency as two numbers: plain data.
    """
    if not ray.is_initialized():
        raise RuntimeError("run_grid_on_ray needs Ray: call ray.init() (or pass --ray) first")
    n = len(grid_cells(resolve_axes(axis_names, measured_ms, 1.0), 1.0))
    names = list(axis_names)
    data = ray.put(path.read_bytes())
    remote = ray.remote(num_cpus=1)(_cell_task)
    args = (names, measured_ms)
    refs = [remote.remote(data, path.name, *args, i, episodes, seed, settings) for i in range(n)]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[CellResult | None] = [None] * n
    pending, done = list(refs), 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        i = index[ready[0]]
        results[i] = ray.get(ready[0])
        done += 1
        if on_cell is not None:
            on_cell(done, n, results[i])
    return [r for r in results if r is not None]
