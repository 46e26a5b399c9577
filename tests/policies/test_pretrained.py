"""The pretrained bundles shipped in the package load without torch and do their job."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib.resources import files

import pytest

from factoryfloor.policies.evaluate import evaluate

PRETRAINED = files("factoryfloor.policies") / "pretrained"
BUNDLES = sorted(p.name for p in PRETRAINED.iterdir() if p.name.endswith(".ffpolicy"))


# bundle -> (task, success rate it must reach: the training issue's targets)
EXPECTED = {
    "reach_panda.ffpolicy": ("factoryfloor/Reach-v0", 0.95),
    "pick_place_panda.ffpolicy": ("factoryfloor/PickPlace-v0", 0.9),
    "pick_place_panda_camera.ffpolicy": ("factoryfloor/PickPlace-v0", 0.9),
    "conveyor_pick_panda_camera.ffpolicy": ("factoryfloor/ConveyorPick-v0", 0.9),
}


def test_the_reach_and_pick_place_bundles_ship():
    assert set(EXPECTED) <= set(BUNDLES)


@pytest.mark.parametrize("name", BUNDLES)
def test_shipped_bundle_is_small_and_documents_how_it_was_made(name):
    path = PRETRAINED / name
    assert len(path.read_bytes()) < 2 * 1024 * 1024
    with zipfile.ZipFile(str(path)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["command"]["train"][1:3] == ["train", manifest["task_id"]]
    assert manifest["command"]["export"][:2] == ["factoryfloor", "export"]
    assert manifest["training"]["seed"] == 0
    task, target = EXPECTED[name]
    assert manifest["task_id"] == task
    assert manifest["metrics"]["checkpoint_evaluation"]["success_rate"] >= target
    check = manifest["export_check"]  # numpy and onnxruntime; a camera bundle: onnxruntime
    camera = not manifest["actor"]["numpy"]
    assert check["tolerance"] == (5e-5 if camera else 1e-5)  # export.CAMERA_PARITY_TOLERANCE
    diffs = check["max_abs_diff"]
    assert diffs and all(d <= check["tolerance"] for d in diffs.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundle_succeeds_on_seeds_it_was_not_trained_on(name):
    """Seeds far from those of training, its demonstrations and its evaluations."""
    task, target = EXPECTED[name]
    result = evaluate(task, str(PRETRAINED / name), 20, seed=5_000_000)
    assert result.success_rate >= target


def test_reach_bundle_runs_without_torch_or_sb3():
    code = (
        "import sys, gymnasium as gym, factoryfloor\n"
        "from importlib.resources import files\n"
        "from factoryfloor.edge_runtime.bundle import load_bundle\n"
        "root = files('factoryfloor.policies') / 'pretrained'\n"
        "p = load_bundle(str(root / 'reach_panda.ffpolicy'))\n"
        "env = gym.make('factoryfloor/Reach-v0'); obs, _ = env.reset(seed=3)\n"
        "for _ in range(20):\n"
        "    obs, r, term, trunc, info = env.step(p.act(obs))\n"
        "    if term: break\n"
        "print(info['is_success'], 'torch' in sys.modules, 'stable_baselines3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True False False"


@pytest.mark.parametrize("name", [n for n in sorted(EXPECTED) if "camera" in n])
def test_camera_bundle_reads_only_what_a_real_cell_has(name):
    """Its inputs are the camera env's actor keys: no privileged key, images uint8 HWC."""
    import gymnasium as gym

    with zipfile.ZipFile(str(PRETRAINED / name)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    env = gym.make(EXPECTED[name][0], obs_mode="camera").unwrapped
    keys = manifest["observation"]["keys"]
    assert set(keys) == set(env.actor_keys)
    assert not set(keys) & set(env.privileged_keys)
    assert "privileged" not in keys and "achieved_goal" not in keys
    for key in ("image", "wrist_image"):
        entry = manifest["observation"]["spaces"][key]
        assert entry["dtype"] == "uint8" and entry["channel_order"] == "HWC"
        assert entry["shape"] == [84, 84, 3] and entry["camera"]["width"] == 84
    env.close()
