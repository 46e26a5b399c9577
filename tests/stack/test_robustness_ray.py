"""``robustness --ray``: one Ray task per cell, the same report as one process."""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from factoryfloor.stack.robustness.axes import AXES, measured_latency_axis  # noqa: E402
from factoryfloor.stack.robustness.ray_grid import run_grid_on_ray  # noqa: E402
from factoryfloor.stack.robustness.run import LinkSettings, run_grid  # noqa: E402

PRETRAINED = Path(__file__).resolve().parents[2] / "factoryfloor/policies/pretrained"
BUNDLE = PRETRAINED / "reach_panda.ffpolicy"


def test_cells_on_ray_match_the_cells_in_process():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    names = ["drop_rate", "position_noise_m"]
    settings = LinkSettings(hold_window_s=0.05)
    seen: list[int] = []
    remote = run_grid_on_ray(BUNDLE, names, (0.5, 2.0), 3, 11, settings,
                             lambda done, total, r: seen.append(done))  # fmt: skip
    axes = [AXES[n] for n in names]
    local = run_grid(BUNDLE, [*axes, measured_latency_axis(0.5, 2.0, 0.04)], 3, 11, settings)
    assert seen == list(range(1, len(local) + 1))
    for a, b in zip(remote, local, strict=True):
        assert (a.axis, a.level, a.successes, a.steps, a.link, a.faults) == (
            b.axis, b.level, b.successes, b.steps, b.link, b.faults,
        )  # fmt: skip
