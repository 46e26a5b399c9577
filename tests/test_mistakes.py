"""The first hour's mistakes: each input gets one line on stderr, exit status 2, no traceback.

Every row runs the real command line in a subprocess, as a new user would type it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from factoryfloor.edge_runtime.auth import keygen
from factoryfloor.edge_runtime.serve import make_server
from factoryfloor.edge_runtime.served import BundleServedPolicy
from factoryfloor.edge_runtime.server import ServerConfig
from factoryfloor.sim.registry import task_entry

PICK_PLACE = "factoryfloor/PickPlace-v0"
BUNDLE = task_entry(PICK_PLACE).pretrained_path("panda")


def factoryfloor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "factoryfloor.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def truncated_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert BUNDLE is not None
    path = tmp_path_factory.mktemp("bundles") / "truncated.ffpolicy"
    data = BUNDLE.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# (what a new user typed, what the one line must say)
MISTAKES = {
    "demo-missing": (["demo", "--policy", "missing.ffpolicy"], ["no policy bundle at"]),
    "demo-robot": (["demo", "--robot", "ur5"], ["unknown robot 'ur5'", "panda", "xarm6"]),
    "demo-episodes": (["demo", "--episodes", "-1"], ["--episodes", "below 1"]),
    "demo-zero": (["demo", "--episodes", "0"], ["--episodes", "below 1"]),
    "run-sim-episodes": (["edge", "run-sim", "--episodes", "-2"], ["--episodes", "below 1"]),
    "eval-ray-missing": (
        ["eval", PICK_PLACE, "--policy", "missing.ffpolicy", "--ray"],
        ["no policy bundle at"],
    ),
    "eval-task": (["eval", "factoryfloor/Nope-v0"], ["unknown task", "factoryfloor/Reach-v0"]),
    "train-robot": (["train", "factoryfloor/Reach-v0", "--robot", "ur5"], ["unknown robot"]),
    "demos-episodes": (
        ["demos", "record", "factoryfloor/Reach-v0", "--episodes", "0", "--out", "x"],
        ["below 1"],
    ),
    "demos-obs": (
        ["demos", "record", "factoryfloor/Reach-v0", "--episodes", "1", "--obs", "rgb"],
        ["--obs", "invalid choice", "camera"],
    ),
    "demos-dataset-id": (
        ["demos", "record", "factoryfloor/Reach-v0", "--episodes", "1", "--dataset-id", "../up"],
        ["not a Minari id", "factoryfloor/reach-panda-state-v0"],
    ),
    "train-demos-id": (
        ["train", "factoryfloor/Reach-v0", "--demos", "factoryfloor/nope-v0"],
        ["no Minari dataset 'factoryfloor/nope-v0'", "demos record"],
    ),
    "train-demos-path": (
        ["train", "factoryfloor/Reach-v0", "--demos", "demos/pp"],
        ["neither a dataset folder nor a Minari dataset id"],
    ),
    "demo-no-bundle": (["demo", "--robot", "xarm6"], ["no pretrained bundle", "--policy"]),
}


@pytest.mark.parametrize(("args", "needles"), MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_gets_one_line_and_exit_2(args, needles, tmp_path):
    assert_refused(factoryfloor(*args, cwd=tmp_path), *needles)
    assert not (tmp_path / "out").exists()  # nothing was started or written


def test_a_truncated_bundle_is_one_line(truncated_bundle, tmp_path):
    line = assert_refused(factoryfloor("demo", "--policy", str(truncated_bundle), cwd=tmp_path))
    assert str(truncated_bundle) in line


def test_a_bundle_for_another_task_says_which(tmp_path):
    reach = task_entry("factoryfloor/Reach-v0").pretrained_path("panda")
    assert_refused(
        factoryfloor("demo", "--policy", str(reach), cwd=tmp_path), "--task factoryfloor/Reach-v0"
    )


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[str]:
    keygen(tmp_path / "keys", ["robot1"])
    assert BUNDLE is not None
    config = ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10)
    server, security = make_server(BundleServedPolicy(load(BUNDLE)), config, tmp_path / "keys")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.endpoint
    finally:
        server.stop_event.set()
        thread.join(5)
        server.close()
        assert security is not None
        security.stop()


def load(path: Path):
    from factoryfloor.edge_runtime.bundle import load_bundle

    return load_bundle(path)


def test_a_keyless_controller_against_a_keyed_server_is_told_so(keyed_server):
    result = factoryfloor("edge", "run-sim", "--connect", keyed_server, "--episodes", "1")
    assert_refused(result, "security mechanism", "--keys DIR --client-name")
    assert "is the server running" not in result.stderr


def test_version_and_help_of_every_subcommand():
    from factoryfloor import __version__
    from factoryfloor.cli import COMMANDS, build_parser

    version = factoryfloor("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"factoryfloor {__version__}"
    parser = build_parser()
    listing = parser.format_help()
    for name, command in COMMANDS.items():
        assert name in listing and command.description[:30] in " ".join(listing.split())
    demo_help = factoryfloor("demo", "--help").stdout
    assert "(default: 20)" in demo_help and "(default: factoryfloor/PickPlace-v0)" in demo_help


def test_help_is_not_cut_mid_word_at_80_columns():
    import os

    env = {**os.environ, "COLUMNS": "80"}
    for args in (["--help"], ["train", "--help"], ["demo", "--help"], ["edge", "serve", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "factoryfloor.cli", *args], capture_output=True, text=True,
            env=env, check=True,
        ).stdout  # fmt: skip
        assert max(len(line) for line in out.splitlines()) <= 80, args
