"""``factoryfloor demo``, short mode: the whole stack, its outputs and its exit status."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from factoryfloor.cli import main
from factoryfloor.stack.demo import DemoOptions, demo_policy
from factoryfloor.stack.demo_media import BAND_PX, HOLD_S, VIDEO_SIZE, hold_frames


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


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = (stream.codec_context.name, stream.codec_context.pix_fmt, stream.average_rate)
        frames = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(stream)]
    return codec, frames


def test_demo_video_is_h264_and_shows_the_arm_moving_parts(demo_run):
    _, out = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    (codec, pix_fmt, _), frames = _decode(out / "demo.mp4")
    assert codec == "h264" and pix_fmt == "yuv420p"  # what browsers play
    assert len(frames) == metrics["video"]["frames"] > 10
    width, height = VIDEO_SIZE
    assert frames[0].shape == (BAND_PX + height, width, 3)  # the text band sits above the camera
    # the camera image below the band changes a lot between the first and the last frame
    change = np.abs(frames[0][BAND_PX:] - frames[-1][BAND_PX:]).mean()
    assert change > 2.0, change


def test_demo_video_holds_the_outcome_for_a_second(demo_run):
    _, out = demo_run
    (_, _, fps), frames = _decode(out / "demo.mp4")
    held = frames[-(hold_frames(float(fps)) + 1) :]  # the one episode's last frame, then copies
    assert len(held) == round(HOLD_S * float(fps)) >= 2
    # identical up to H.264's coding noise (the scene itself changes by > 2 per pixel)
    assert max(np.abs(frame - held[-1]).mean() for frame in held) < 0.5
    band = held[-1][:BAND_PX]
    green = (band[..., 1] > 150) & (band[..., 0] < 120) & (band[..., 2] < 140)
    red = (band[..., 0] > 180) & (band[..., 1] < 120) & (band[..., 2] < 120)
    assert green.sum() + red.sum() > 50  # the outcome label, in green or red


def test_demo_charts_are_images(demo_run):
    _, out = demo_run
    for name, shape in (("latency_histogram.png", (450, 800)),
                        ("success_per_episode.png", (360, 800))):  # fmt: skip
        with Image.open(out / name) as image:
            assert image.format == "PNG" and (image.height, image.width) == shape
            pixels = np.asarray(image.convert("RGB"))
        assert pixels.std() > 10  # something is drawn, not a blank canvas
    assert not list(out.glob("*.tmp*")) and not list(out.glob("tmp*"))
    assert not list(out.glob(".*"))  # no temporary file of the atomic writes left


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


@pytest.mark.parametrize(
    ("rate", "episodes", "needed"),
    [(0.9, 20, 18), (0.9, 6, 5), (0.9, 10, 9), (0.9, 2, 1), (0.9, 1, 1), (0.0, 5, 0), (1.0, 7, 7)],
)
def test_a_short_run_needs_what_the_rate_permits(rate, episodes, needed):
    from factoryfloor.stack.demo_report import required_successes

    assert required_successes(rate, episodes) == needed


def test_camera_cell_video_shows_what_the_policy_saw_beside_the_cell_view():
    import cv2
    import gymnasium as gym

    from factoryfloor.stack.demo_media import DEMO_VIEW, Camera, _replay_episode

    kwargs = {"obs_mode": "camera", "image_size": 40}
    commands = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32)
    episode = {"seed": 3, "commands": commands, "success": False}
    frames: list[np.ndarray] = []

    class Frames:
        def write(self, frame: np.ndarray) -> None:
            frames.append(frame)

    env = gym.make("factoryfloor/PickPlace-v0", **kwargs)
    _replay_episode(env, Camera(env.unwrapped.sim, DEMO_VIEW), episode, (0, 1), [], Frames())
    obs, _ = env.reset(seed=3)
    width, height = VIDEO_SIZE
    for frame, command in zip(frames, commands, strict=True):
        assert frame.shape == (BAND_PX + height, width + height // 2, 3)
        column = frame[BAND_PX:, width:]
        for i, key in enumerate(("image", "wrist_image")):  # the images this command came from
            seen = cv2.resize(obs[key], (height // 2, height // 2), interpolation=cv2.INTER_NEAREST)
            assert np.array_equal(column[i * height // 2 : (i + 1) * height // 2], seen)
        obs, *_ = env.step(command)
    env.close()
