"""Training configs are validated where they enter: every audit row is one ConfigError line.

Each row of the audit (a value that crashed, hung or exhausted the machine, or a file accepted
without a word) is a YAML file here; ``load_config`` must refuse it with a ``ConfigError`` that
names the field, the value, what is allowed and the file, and ``factoryfloor train --config``
must print that as one line and exit 2, before any run folder, env or model exists.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from factoryfloor.cli import main
from factoryfloor.policies import train_config_checks as checks
from factoryfloor.policies.train_config import ConfigError, TrainConfig, load_config, read_yaml

REACH = "factoryfloor/Reach-v0"
DEEP = "env_kwargs: " + "[" * 5000 + "]" * 5000 + "\n"  # RecursionError in PyYAML's composer

# audit row -> (YAML text, substrings the message must hold besides the file's name)
ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "image_size 0 (ZeroDivisionError)": (
        "env_kwargs: {obs_mode: rgb, image_size: 0}\n",
        ("env_kwargs.image_size=0", "allowed [36, 512]"),
    ),
    "image_size 100000": ("env_kwargs: {image_size: 100000}\n", ("image_size=100000", "[36, 512]")),
    "image_size as text": ("env_kwargs: {image_size: big}\n", ("image_size must be int", "'big'")),
    "deep nesting (RecursionError)": (DEEP, ("nests mappings/lists more than 8 deep",)),
    "deep nesting of mappings": (
        "env_kwargs: " + "{a: " * 20 + "1" + "}" * 20 + "\n",
        ("more than 8 deep",),
    ),
    "batch_size 1e9 (text to YAML)": (
        "batch_size: 1e9\n",
        ("batch_size must be int", "1000000000"),
    ),
    "batch_size 1.0e+9 (a float)": (
        "batch_size: 1.0e+9\n",
        ("batch_size must be int", "(float)", "whole number"),
    ),
    "batch_size 1000000000 (26 GiB)": (
        "batch_size: 1000000000\n",
        ("batch_size=1000000000", "allowed [1, 65536]"),
    ),
    "batch_size true": ("batch_size: true\n", ("batch_size must be int", "True (bool)")),
    "net_arch [1e8] (5.5 GB)": ("net_arch: [1e8]\n", ("net_arch must be list", "'1e8'")),
    "net_arch [100000000]": ("net_arch: [100000000]\n", ("net_arch=[100000000]", "[1, 4096]")),
    "net_arch too deep": ("net_arch: [8, 8, 8, 8, 8, 8, 8, 8, 8]\n", ("1 to 8 hidden layer",)),
    "net_arch [64.0]": ("net_arch: [64.0]\n", ("net_arch must be list", "[64.0]")),
    "net_arch via policy_kwargs": (
        "policy_kwargs: {net_arch: [100000000]}\n",
        ("policy_kwargs.net_arch is not allowed",),
    ),
    "torch_threads 100000 (15k threads)": (
        "torch_threads: 100000\n",
        ("torch_threads=100000", "allowed [0, 1024]"),
    ),
    "torch_threads above 2 x the CPUs": ("torch_threads: 64\n", ("torch_threads=64", "[0, 4]")),
    "torch_threads -1": ("torch_threads: -1\n", ("torch_threads=-1", "[0, 1024]")),
    "n_envs past the CPUs": ("n_envs: 100\nlearning_starts: 5000\n", ("n_envs=100", "[1, 8]")),
    "n_envs 0": ("n_envs: 0\n", ("n_envs=0", "[1, 4096]")),
    "buffer_size past the memory": (
        "buffer_size: 100000000\nenv_kwargs: {obs_mode: rgb}\n",
        ("estimated", "GiB of memory", "GiB available", "lower buffer_size"),
    ),
    "buffer_size above 1e8": ("buffer_size: 1000000000\n", ("buffer_size=1000000000", "[1, 1")),
    "checkpoint_every_steps -1": ("checkpoint_every_steps: -1\n", ("checkpoint_every_steps=-1",)),
    "checkpoint_every_steps every 10 steps": (
        "checkpoint_every_steps: 10\n",
        ("checkpoint_every_steps=10", ">= 1000"),
    ),
    "eval_every_steps 0": ("eval_every_steps: 0\n", ("eval_every_steps=0", "[1, 10000000000]")),
    "timesteps 1e11": ("timesteps: 100000000000\n", ("timesteps=100000000000", "[1, ")),
    "learning_rate nan": ("learning_rate: .nan\n", ("learning_rate=nan", "finite", "(0, 1)")),
    "learning_rate inf": ("learning_rate: .inf\n", ("learning_rate=inf", "finite")),
    "learning_rate 0": ("learning_rate: 0\n", ("learning_rate=0.0", "(0, 1)")),
    "bc_learning_rate -1": ("bc_learning_rate: -1.0\n", ("bc_learning_rate=-1.0", "(0, 1)")),
    "gamma 2": ("gamma: 2\n", ("gamma=2.0", "(0, 1]")),
    "max_wall_time_s inf": ("max_wall_time_s: .inf\n", ("max_wall_time_s=inf", "finite")),
    "n_critics 1000": ("policy_kwargs: {n_critics: 1000}\n", ("n_critics=1000", "[1, 16]")),
    "empty file": ("", ("is empty", "give at least one field or leave out --config")),
    "only a comment": ("# nothing here\n", ("is empty",)),
    "an empty mapping": ("{}\n", ("is empty",)),
    "task differs from the command line": (
        "task: factoryfloor/PickPlace-v0\n",
        ("factoryfloor/PickPlace-v0", "factoryfloor/Reach-v0", "remove task:"),
    ),
    "unknown key": ("learnig_rate: 0.001\n", ("unknown field 'learnig_rate'", "did you mean")),
    "unknown env_kwargs key": ("env_kwargs: {imagesize: 64}\n", ("['imagesize']", "env_kwargs")),
    "a YAML alias": ("env_kwargs: &a {reward: dense}\npolicy_kwargs: *a\n", ("alias",)),
    "not a mapping": ("[1, 2]\n", ("must hold a mapping",)),
    "two documents": ("seed: 1\n---\nseed: 2\n", ("cannot read config file",)),
    "not UTF-8": ("seed: \udcff\n", ("cannot read config file",)),
    "an int of 5000 digits": ("seed: " + "9" * 5000 + "\n", ("cannot read config file",)),
    "a python object tag": ("seed: !!python/object:os.system x\n", ("cannot read config",)),
}


@pytest.fixture(autouse=True)
def small_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-CPU machine with 16 GiB free, whatever runs the tests."""
    monkeypatch.setattr(checks, "usable_cpus", lambda: 2)
    monkeypatch.setattr(checks, "available_memory", lambda: 16 * checks.GIB)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


@pytest.mark.parametrize("row", list(ROWS))
def test_each_audit_row_is_refused_naming_the_field_and_the_file(tmp_path, row):
    text, expected = ROWS[row]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(REACH, config_file=path)
    message = str(info.value)
    assert str(path) in message, message
    for part in expected:
        assert part in message, (part, message)
    assert "\n" not in message and len(message) < 1000


@pytest.mark.parametrize("row", ["image_size 0 (ZeroDivisionError)", "batch_size 1.0e+9 (a float)",
                                 "torch_threads 100000 (15k threads)", "net_arch [100000000]",
                                 "deep nesting (RecursionError)", "empty file",
                                 "task differs from the command line",
                                 "buffer_size past the memory"])  # fmt: skip
def test_cli_prints_one_line_and_exits_2_before_making_the_run(tmp_path, capsys, row):
    path, run = write(tmp_path, ROWS[row][0]), tmp_path / "run"
    assert main(["train", REACH, "--config", str(path), "--out", str(run)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("factoryfloor train: error: ") and str(path) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not out
    assert not run.exists()  # refused before any folder, env or model was made


def test_the_file_named_is_where_the_value_came_from(tmp_path):
    path = write(tmp_path, "seed: 3\n")
    with pytest.raises(ConfigError, match=r"batch_size=0 .*\(set in the command-line options\)"):
        load_config(REACH, None, path, {"batch_size": 0})
    with pytest.raises(ConfigError, match=rf"seed=-1 .*\(set in {re.escape(str(path))}\)"):
        load_config(REACH, None, write(tmp_path, "seed: -1\n"))
    run = tmp_path / "config.yaml"  # a run's own config.yaml, read back on --resume/export
    run.write_text(TrainConfig(task=REACH).to_yaml().replace("batch_size: 256", "batch_size: -5"))
    with pytest.raises(ConfigError, match=rf"batch_size=-5 .*\(in {re.escape(str(run))}\)"):
        TrainConfig.from_yaml(run)


def test_python_api_values_are_checked_too():
    deep: dict = {}
    node = deep
    for _ in range(50):
        node["a"] = {}
        node = node["a"]
    for fields, part in (
        ({"env_kwargs": deep}, "env_kwargs is nested"),
        ({"batch_size": 1e9}, "batch_size must be int"),
        ({"timesteps": True}, "timesteps must be int"),
        ({"learning_rate": math.nan}, "learning_rate=nan"),
        ({"net_arch": [0]}, "net_arch=[0]"),
        ({"gradient_steps": 0}, "gradient_steps=0 is not valid: allowed [1, 10000] or -1"),
    ):
        with pytest.raises(ConfigError) as info:
            TrainConfig(task=REACH, **fields)
        assert part in str(info.value) and info.value.field == next(iter(fields))


def test_huge_files_are_refused_before_they_are_parsed(tmp_path, monkeypatch):
    path = write(tmp_path, "seed: 1\n" + "#" * (checks.MAX_YAML_BYTES + 1) + "\n")
    parsed = []
    monkeypatch.setattr(checks.yaml, "safe_load", lambda text: parsed.append(text))
    with pytest.raises(ConfigError, match=r"is [\d,]+ bytes, over 262,144"):
        read_yaml(path)
    assert not parsed


def test_limits_leave_the_shipped_configs_and_sane_values_alone(tmp_path, repo_root):
    for path in sorted((repo_root / "factoryfloor/policies/configs").glob("*.yaml")):
        cfg = TrainConfig(**read_yaml(path))
        checks.check_resources(cfg, cfg.off_policy)  # and they fit the 16 GiB, 2-CPU machine
    ok = "torch_threads: 4\nn_envs: 8\nlearning_starts: 400\ncheckpoint_every_steps: 0\n"
    cfg = load_config(REACH, config_file=write(tmp_path, ok + "env_kwargs: {image_size: 36}\n"))
    assert (cfg.torch_threads, cfg.n_envs, cfg.env_kwargs["image_size"]) == (4, 8, 36)
    cluster = {"n_envs": 100, "ray": True, "learning_starts": 5000}
    assert load_config(REACH, None, None, cluster).n_envs == 100  # a cluster: no CPU limit
    parts = checks.estimate_memory(load_config("factoryfloor/PickPlace-v0", "sac"), True)
    assert 0.5 * checks.GIB < sum(parts.values()) < 2 * checks.GIB  # 1e6 x ~572 B + networks


@pytest.mark.parametrize(
    ("env_kwargs", "image_bytes"),
    [
        ({}, 0),
        ({"obs_mode": "rgb"}, 3 * 84 * 84),
        ({"obs_mode": "rgbd", "image_size": 64}, 4 * 64 * 64),
        ({"obs_mode": "camera"}, 2 * 3 * 84 * 84),  # the cell and the wrist camera
        ({"obs_mode": "camera", "camera_depth": True}, 2 * 4 * 84 * 84),
    ],
)
def test_the_memory_estimate_counts_every_camera_of_the_mode(env_kwargs, image_bytes):
    base = TrainConfig(**{**load_config(REACH).to_dict(), "env_kwargs": {}})
    cfg = TrainConfig(**{**base.to_dict(), "env_kwargs": env_kwargs})
    stored = cfg.buffer_size
    plain = sum(v for k, v in checks.estimate_memory(base, True).items() if "transitions" in k)
    ours = sum(v for k, v in checks.estimate_memory(cfg, True).items() if "transitions" in k)
    assert ours - plain == stored * 2 * image_bytes  # observation and next observation
