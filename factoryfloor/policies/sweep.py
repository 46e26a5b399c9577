"""``factoryfloor sweep``: training runs over configs x seeds on Ray Tune.

One trial per (grid config, seed); each trial is a normal ``train`` run with its own run folder
(``OUT/trials/<config>_seed<seed>``) that reports every evaluation's success rate to Tune. ASHA
stops hopeless trials early (on the success rate, at evaluation milestones); a trial that met
its ``target_success`` early holds that result at its remaining milestones, so that the others
are compared with it. The summary, per
config, is the mean +- std over seeds of each trial's best success rate, and the best config;
it is printed and written to ``OUT/summary.json``.

A grid file is YAML mapping TrainConfig fields to lists of values, e.g.::

    learning_rate: [0.001, 0.0003]
    net_arch: [[256, 256], [64, 64]]
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np

from factoryfloor.policies.atomic import atomic_write_json
from factoryfloor.policies.progress import Progress
from factoryfloor.policies.train_config import ConfigError, load_config, read_yaml


def parse_seeds(text: str) -> list[int]:
    """``"0-7"`` -> 0..7; ``"0,3,5"`` -> [0, 3, 5]."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ConfigError(f"--seeds {text!r}: use a range like 0-7 or a list like 0,3,5")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise ConfigError(f"--seeds {text!r}: {low}-{high} is an empty range")
        seeds.extend(range(low, high + 1))
    return seeds


def grid_configs(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (one empty config for an empty grid)."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid {key!r}: give a non-empty list of values, e.g. [1, 2]")
    keys = sorted(grid)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))
    ]


def config_name(config: dict[str, Any]) -> str:
    """A short folder-safe name of a grid config."""
    text = "_".join(f"{k}={v}" for k, v in sorted(config.items())) or "default"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)[:80]


def _trial(tune_config: dict[str, Any]) -> None:
    """One Tune trial: a training run reporting its evaluations."""
    from ray import tune

    params = tune_config["trial"]
    from factoryfloor.policies.train import train

    overrides = {
        **params["config"],
        **params["fixed"],
        "seed": params["seed"],
        "out": params["out"],
    }
    cfg = load_config(params["task"], params["algo"], None, overrides)
    last: dict[str, Any] = {}

    def report(record: dict[str, Any]) -> None:
        last.update(record)
        tune.report(
            {
                "success_rate": record["success_rate"],
                "num_timesteps": record["num_timesteps"],
                "held": False,
            }
        )

    train(cfg, on_evaluation=report)
    for steps in held_milestones(cfg, last):
        tune.report({"success_rate": last["success_rate"], "num_timesteps": steps, "held": True})


def held_milestones(cfg: Any, last: dict[str, Any]) -> list[int]:
    """The evaluation milestones a run that met its target early holds its result at.

    Training stops once an evaluation reaches ``target_success``, so the policy at every later
    milestone of the budget is that one: reporting its success rate there lets ASHA compare
    other trials with it (a trial solved at step 0 would otherwise reach no rung at all, and
    hopeless trials would only ever be compared with each other).

    Args:
        cfg: The trial's TrainConfig.
        last: The run's last evaluation record ({} when there was none).

    Returns:
        Step counts after the last evaluation, every ``eval_every_steps``, up to the budget;
        empty when the run did not stop on its target.
    """
    if not last or not cfg.target_success or last["success_rate"] < cfg.target_success:
        return []
    every = max(1, cfg.eval_every_steps)
    first = (int(last["num_timesteps"]) // every + 1) * every
    return list(range(first, int(cfg.timesteps) + 1, every))


def run_sweep(
    task: str,
    algo: str,
    seeds: list[int],
    grid: dict[str, Any],
    out: Path,
    fixed: dict[str, Any] | None = None,
    early_stop: bool = True,
) -> dict[str, Any]:
    """Run every config x seed as a Tune trial; return (and write) the summary.

    Args:
        task: Gymnasium id.
        algo: Algorithm.
        seeds: Seeds of each config.
        grid: Field -> list of values.
        out: Sweep folder (run folders under ``trials/``, ``summary.json``).
        fixed: Fields set in every trial (e.g. a small ``timesteps``).
        early_stop: Stop hopeless trials with ASHA.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from factoryfloor.policies.ray_start import start_ray

    configs = grid_configs(grid)
    fixed = {"progress_bar": False, "tensorboard": False, **(fixed or {})}
    base = load_config(task, algo, None, {**fixed, "seed": seeds[0]})  # validates the fields
    out = out.resolve()
    trials = [
        {
            "task": task, "algo": algo, "config": config, "fixed": fixed, "seed": seed,
            "name": config_name(config),
            "out": str(out / "trials" / f"{config_name(config)}_seed{seed}"),
        }
        for config in configs for seed in seeds
    ]  # fmt: skip
    start_ray()
    bar = Progress(f"sweep of {task} ({algo})", len(trials), "trials")
    scheduler = None
    if early_stop:
        every = max(1, base.eval_every_steps)
        scheduler = ASHAScheduler(
            time_attr="num_timesteps", max_t=base.timesteps, grace_period=every, reduction_factor=2
        )
    tuner = tune.Tuner(
        tune.with_resources(_trial, {"cpu": 1}),
        param_space={"trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(metric="success_rate", mode="max", scheduler=scheduler),
        run_config=tune.RunConfig(
            name="sweep", storage_path=str(out / "tune"), verbose=0,
            callbacks=[_trial_progress(bar)],
        ),
    )  # fmt: skip
    with bar:
        results = tuner.fit()
    summary = summarize(results, trials)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _trial_progress(bar: Progress) -> Any:
    """A Ray Tune callback advancing ``bar`` as each trial ends (done, stopped or failed)."""
    from ray.tune import Callback

    class TrialProgress(Callback):  # type: ignore[misc]
        def on_trial_complete(
            self, iteration: int, trials: list[Any], trial: Any, **_: Any
        ) -> None:
            bar.advance(note=f"last: {trial.trial_id}")

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **_: Any) -> None:
            bar.advance(note=f"{trial.trial_id} failed")

    return TrialProgress()


def summarize(results: Any, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per config: best success rate of each seed's trial, mean +- std; the best config."""
    rows: dict[str, dict[str, Any]] = {}
    budgets = {t["name"]: _timesteps(t) for t in trials}  # one config load per config
    for result in results:
        trial = result.config["trial"]
        best, steps, held = _history(result.metrics_dataframe)
        row = rows.setdefault(trial["name"], {"config": trial["config"], "seeds": {}})
        row["seeds"][str(trial["seed"])] = {
            "best_success_rate": best, "num_timesteps": steps, "run": trial["out"],
            "reached_target": held,
            "stopped_early": not held and steps < budgets[trial["name"]],
        }  # fmt: skip
    for row in rows.values():
        values = [s["best_success_rate"] for s in row["seeds"].values()]
        row["mean"], row["std"] = float(np.mean(values)), float(np.std(values))
    best = max(rows, key=lambda k: (rows[k]["mean"], -rows[k]["std"]))
    return {"trials": len(trials), "configs": rows, "best": {"name": best, **rows[best]}}


def _history(history: Any) -> tuple[float, int, bool]:
    """(best success rate, steps trained, met its target early) of one trial's reports."""
    if history is None or not len(history):
        return 0.0, 0, False
    held = history["held"].astype(bool) if "held" in history else np.zeros(len(history), bool)
    trained = history["num_timesteps"][~held]
    steps = int(trained.max()) if len(trained) else 0
    return float(history["success_rate"].max()), steps, bool(held.any())


def _timesteps(trial: dict[str, Any]) -> int:
    overrides = {**trial["config"], **trial["fixed"]}  # as _trial resolves them
    return int(load_config(trial["task"], trial["algo"], None, overrides).timesteps)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a text table."""
    lines = [f"{'config':<50} {'success (best per seed)':>24} {'seeds':>6}"]
    for name, row in sorted(summary["configs"].items(), key=lambda kv: -kv[1]["mean"]):
        lines.append(
            f"{name:<50} {row['mean']:>12.2f} +- {row['std']:<8.2f} {len(row['seeds']):>6}"
        )
    best = summary["best"]
    lines.append(f"best: {best['name']} ({best['mean']:.2f} +- {best['std']:.2f})")
    return "\n".join(lines)


def load_grid(path: Path | None) -> dict[str, Any]:
    """The grid of a YAML file, or an empty grid."""
    return read_yaml(path) if path is not None else {}
