"""Smoke tests of the `factoryfloor` command line, with tiny budgets."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2

from factoryfloor.cli import main


def test_eval_json_runs_the_expert_and_prints_one_object(tmp_path):
    video = tmp_path / "eval.mp4"
    out = subprocess.run(
        [sys.executable, "-m", "factoryfloor.cli", "eval", "factoryfloor/Reach-v0",
         "--policy", "expert", "--episodes", "3", "--seed", "5", "--json", "--video", str(video)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["episodes"] == 3 and result["seed"] == 5
    assert result["success_rate"] == 1.0 and result["successes"] == [True] * 3
    assert 1 <= result["mean_episode_length"] <= 50
    assert -50 <= result["mean_return"] <= 0
    frames = cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT)
    assert frames >= 3  # at least the first frame of each recorded episode


def test_eval_takes_robot_and_seed(capsys):
    assert (
        main(["eval", "factoryfloor/Reach-v0", "--robot", "xarm6", "--episodes", "2", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["robot"] == "xarm6" and result["episodes"] == 2


def test_bad_input_gives_one_clear_line_and_exit_2(capsys):
    assert main(["eval", "factoryfloor/Nope-v0"]) == 2
    assert "Nope" in capsys.readouterr().err
    assert main(["eval", "factoryfloor/Reach-v0", "--robot", "ur99"]) == 2
    err = capsys.readouterr().err
    assert "ur99" in err and "panda" in err and "xarm6" in err
    assert main(["eval", "factoryfloor/Reach-v0", "--policy", "magic"]) == 2
    assert "expert" in capsys.readouterr().err
