"""The robustness report: a terminal table, a JSON document and a heat map.

"Retains" is a cell's success rate over the nominal cell's (the same seeds, so a paired
comparison); an axis retains the least of its levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from factoryfloor.stack.robustness.axes import Axis
from factoryfloor.stack.robustness.run import CellResult, LinkSettings

FORMAT = "factoryfloor-robustness"
VERSION = 1


def retained(rate: float, nominal: float) -> float | None:
    """``rate`` as a fraction of ``nominal`` (None when the nominal success is 0)."""
    return rate / nominal if nominal > 0 else None


def build_report(
    bundle: dict[str, Any],
    axes: Sequence[Axis],
    results: Sequence[CellResult],
    episodes: int,
    seed: int,
    settings: LinkSettings,
) -> dict[str, Any]:
    """The JSON document of one run (``results`` as ``run.grid_cells`` orders them)."""
    nominal = results[0]
    by_axis: dict[str, list[CellResult]] = {}
    for r in results[1:]:
        by_axis.setdefault(r.axis, []).append(r)
    rows = []
    for axis in axes:
        cells = by_axis.get(axis.name, [])
        levels = [
            {**c.as_dict(), "retained": retained(c.success_rate, nominal.success_rate)}
            for c in cells
        ]
        kept = [lv["retained"] for lv in levels if lv["retained"] is not None]
        rows.append({
            "name": axis.name, "unit": axis.unit, "kind": axis.kind, "doc": axis.doc,
            "levels": levels, "retained_min": min(kept) if kept else None,
        })  # fmt: skip
    return {
        "format": FORMAT, "version": VERSION, "bundle": bundle, "episodes": episodes,
        "seeds": [seed, seed + episodes - 1],
        "runtime": {"hold_window_ms": settings.hold_window_s * 1e3,
                    "max_action_age_ms": settings.max_age_s * 1e3},
        "nominal": nominal.as_dict(), "axes": rows,
        "wall_time_s": round(sum(r.wall_s for r in results), 2),
    }  # fmt: skip


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def table(report: dict[str, Any]) -> str:
    """The report as aligned text: one row per axis and level."""
    nominal = report["nominal"]
    lines = [
        f"{report['bundle']['name']}: {report['bundle']['task_id']} ({report['bundle']['robot']}),"
        f" {report['episodes']} episodes per cell, seeds {report['seeds'][0]}.."
        f"{report['seeds'][1]}; hold window {report['runtime']['hold_window_ms']:g} ms, max "
        f"action age {report['runtime']['max_action_age_ms']:g} ms",
        f"{'axis':<22}{'level':>12}  {'success':>8}{'retains':>9}{'faults':>8}",
        f"{'nominal':<22}{'-':>12}  {_pct(nominal['success_rate']):>8}{'100%':>9}"
        f"{nominal['faults']:>8}",
    ]
    for axis in report["axes"]:
        for lv in axis["levels"]:
            level = f"{lv['level']:g} {axis['unit']}"
            lines.append(
                f"{axis['name']:<22}{level:>12}  {_pct(lv['success_rate']):>8}"
                f"{_pct(lv['retained']):>9}{lv['faults']:>8}"
            )
    reasons: dict[str, int] = {}
    for axis in report["axes"]:
        for lv in axis["levels"]:
            for reason, n in lv["fault_reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + n
    if reasons:
        lines.append("faults by reason: " + "; ".join(f"{r} ({n})" for r, n in reasons.items()))
    lines.append("retains (worst level): " + ", ".join(
        f"{a['name']} {_pct(a['retained_min'])}" for a in report["axes"]
    ))  # fmt: skip
    return "\n".join(lines)


def heat_map(report: dict[str, Any], path: Path) -> None:
    """A PNG: one row per axis, one column per level, coloured by success (annotated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from factoryfloor.policies.atomic import atomic_write

    axes = report["axes"]
    width = max([len(a["levels"]) for a in axes] + [1])
    grid = [[math.nan] * width for _ in axes]
    for i, axis in enumerate(axes):
        for j, lv in enumerate(axis["levels"]):
            grid[i][j] = lv["success_rate"]
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * width, 1.0 + 0.45 * max(len(axes), 1)))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    for i, axis in enumerate(axes):
        for j, lv in enumerate(axis["levels"]):
            text = f"{lv['level']:g} {axis['unit']}\n{100 * lv['success_rate']:.0f}%"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(axes)), [a["name"] for a in axes], fontsize=8)
    ax.set_xticks(range(width), [f"level {j + 1}" for j in range(width)], fontsize=8)
    nominal = 100 * report["nominal"]["success_rate"]
    ax.set_title(f"{report['bundle']['name']}: success per perturbation (nominal {nominal:.0f}%)",
                 fontsize=9)  # fmt: skip
    fig.colorbar(image, ax=ax, label="success rate")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
