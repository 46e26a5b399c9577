"""``factoryfloor demo``, short mode: the whole stack, its outputs and its exit status."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from factoryfloor.cli import main
from factoryfloor.stack.demo import DemoOptions, demo_policy


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # other tests run beside it in CI: a generous hold window keeps a stall from faulting
    status = main(["demo", "--episodes", "2", "--video-episodes", "1", "--out", str(out),
                   "--hold-window-ms", "200"])  # fmt: skip
    return status, out


def test_demo_passes_and_reports(demo_run):
    status, out = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "factoryfloor/PickPlace-v0"
    assert metrics["policy"].endswith("pick_place_panda.ffpolicy")
    assert metrics["episodes"] == 2 and metrics["server_ok"] and metrics["faults"] == 0
    assert status == (0 if metrics["success_rate"] >= 0.9 else 1)
    assert metrics["round_trip_ms"]["p50"] > 0 and metrics["loop"]["cycles"] > 0
    assert len(metrics["round_trip_samples_ms"]) == metrics["safety"]["fresh"]
    server = [json.loads(line) for line in (out / "server_metrics.jsonl").read_text().splitlines()]
    assert server[-1]["counters"]["actions_sent"] >= metrics["safety"]["fresh"]


def test_demo_video_shows_the_arm_moving_parts(demo_run):
    _, out = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    video = cv2.VideoCapture(str(out / "demo.mp4"))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == metrics["video"]["frames"] > 10 and frames[0].shape == (360, 480, 3)
    # the scene below the overlay changes a lot between the first and the last frame
    change = np.abs(frames[0][60:].astype(int) - frames[-1][60:].astype(int)).mean()
    assert change > 2.0, change


def test_demo_charts_are_images(demo_run):
    _, out = demo_run
    for name, shape in (("latency_histogram.png", (360, 640, 3)),
                        ("success_per_episode.png", (240, 640, 3))):  # fmt: skip
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape == shape
    assert not list(out.glob("*.tmp*")) and not list(out.glob("tmp*"))


def test_demo_without_a_pretrained_bundle_says_how_to_go_on():
    with pytest.raises(ValueError, match="--policy"):
        demo_policy(DemoOptions(task="factoryfloor/ConveyorPick-v0"))
    assert demo_policy(DemoOptions(task="factoryfloor/ConveyorPick-v0", policy="expert")) == (
        "expert"
    )


def test_gui_without_a_display_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    status = main(["demo", "--task", "factoryfloor/Reach-v0", "--episodes", "2", "--gui",
                   "--video-episodes", "1", "--out", str(tmp_path)])  # fmt: skip
    assert status == 0
    assert "no display" in capsys.readouterr().out
    assert os.environ.get("DISPLAY") is None
