"""The task registry: every entry carries a task class, an expert, configs and its bundles."""

from __future__ import annotations

import gymnasium as gym
import pytest

from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.policies.scripted import ScriptedExpert
from factoryfloor.policies.train_config import ALGORITHMS, load_config, shipped_config
from factoryfloor.sim.registry import BY_ENV_ID, TASKS, TaskEntry, task_entry
from factoryfloor.sim.tasks.base import Task

ENTRIES = list(TASKS.values())


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_names_real_classes_and_registers_its_env(entry: TaskEntry):
    assert issubclass(entry.load_task_class(), Task)
    assert issubclass(entry.load_expert(), ScriptedExpert)
    assert gym.registry[entry.env_id].max_episode_steps == entry.max_episode_steps
    assert task_entry(entry.name) is task_entry(entry.env_id) is entry


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_default_algo_has_a_shipped_config_which_train_picks(entry: TaskEntry):
    assert entry.default_algo in ALGORITHMS
    assert shipped_config(entry, entry.default_algo) is not None
    assert load_config(entry.env_id).algo == entry.default_algo


@pytest.mark.parametrize(
    ("entry", "robot"),
    [(e, r) for e in ENTRIES for r in e.pretrained],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_pretrained_bundles_exist_and_match_their_entry(entry: TaskEntry, robot: str):
    path = entry.pretrained_path(robot)
    assert path is not None and path.is_file()
    manifest = load_bundle(path, backend="numpy").manifest
    assert manifest["task_id"] == entry.env_id and manifest["robot"] == robot


def test_an_unknown_task_lists_names_and_ids():
    with pytest.raises(KeyError) as info:
        task_entry("palletize")
    for entry in ENTRIES:
        assert entry.name in str(info.value) and entry.env_id in str(info.value)
    assert set(BY_ENV_ID) == {e.env_id for e in ENTRIES}


@pytest.mark.parametrize(
    "kwargs",
    [{"env_id": "Reach-v0"}, {"env_id": "factoryfloor/Reach"}, {"max_episode_steps": 0}],
)
def test_a_malformed_entry_is_refused(kwargs):
    base = {"name": "x", "env_id": "factoryfloor/X-v0", "task_class": "m:C",
            "max_episode_steps": 10, "expert": "m:E", "default_algo": "sac"}  # fmt: skip
    with pytest.raises(ValueError):
        TaskEntry(**{**base, **kwargs})
