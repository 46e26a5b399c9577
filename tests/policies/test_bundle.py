"""`factoryfloor export` and the `.ffpolicy` bundle: parity, backends, no torch, tampering, eval.

One tiny Reach SAC run (a few hundred env steps) is trained per module and exported once.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from factoryfloor.cli import main
from factoryfloor.edge_runtime import bundle as bd
from factoryfloor.policies import export as ex
from factoryfloor.policies.train import train
from factoryfloor.policies.train_config import TrainConfig, load_config

REACH = "factoryfloor/Reach-v0"
TINY = {
    "timesteps": 300,
    "seed": 2,
    "learning_starts": 100,
    "buffer_size": 20_000,
    "batch_size": 64,
    "eval_every_steps": 150,
    "eval_episodes": 2,
    "checkpoint_every_steps": 0,
    "progress_bar": False,
    "tensorboard": False,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundle")
    cfg = load_config(REACH)
    return train(TrainConfig(**{**cfg.to_dict(), **TINY, "out": str(folder / "run")}))


@pytest.fixture(scope="module")
def exported(run_dir) -> tuple[Path, dict]:
    path = run_dir.parent / "reach.ffpolicy"
    return path, ex.export_run(run_dir, path)


@pytest.fixture(scope="module")
def observations() -> dict[str, np.ndarray]:
    return ex.parity_observations(REACH, {}, n=200, seed=7)


def test_export_parity_is_checked_and_recorded(exported):
    path, manifest = exported
    check = manifest["export_check"]
    assert check["observations"] == 1000 and check["tolerance"] == 1e-5
    assert set(check["max_abs_diff"]) == {"onnxruntime", "numpy"}
    assert all(d < 1e-5 for d in check["max_abs_diff"].values()), check
    assert path.is_file() and manifest["bytes"] == path.stat().st_size
    assert not list(path.parent.glob(".*.tmp"))  # written through a temporary file


def test_manifest_describes_the_policy(exported, run_dir):
    path, _ = exported
    policy = bd.load_bundle(path)
    m = policy.manifest
    assert m["format"] == "factoryfloor-policy" and m["format_version"] == 1
    assert m["task_id"] == REACH and m["robot"] == "panda" and m["control_rate_hz"] == 25.0
    assert m["observation"]["keys"] == ["achieved_goal", "desired_goal", "observation"]
    assert m["observation"]["spaces"]["observation"]["shape"] == [7]
    assert m["action"]["shape"] == [4] and m["action"]["low"] == [-1.0] * 4
    assert m["normalization"]["type"] == "VecNormalize"
    assert m["training"]["algo"] == "sac" and m["training"]["seed"] == 2
    assert m["metrics"]["checkpoint"] == "best" and m["metrics"]["last_evaluation"]
    assert m["command"]["train"] and m["command"]["export"]
    with zipfile.ZipFile(path) as zf:
        onnx = zf.read(bd.ONNX)
        assert set(zf.namelist()) == {bd.MANIFEST, bd.ONNX, bd.NPZ}
    assert m["files"][bd.ONNX]["sha256"] == bd.sha256_hex(onnx)


def test_both_backends_agree_with_each_other(exported, observations):
    path, _ = exported
    onnx = bd.load_bundle(path, backend="onnxruntime")
    numpy = bd.load_bundle(path, backend="numpy")
    assert (onnx.backend, numpy.backend) == ("onnxruntime", "numpy")
    a, b = onnx.act_batch(observations), numpy.act_batch(observations)
    assert a.shape == (200, 4) and a.dtype == np.float32
    assert np.max(np.abs(a - b)) < 1e-5
    single = {k: v[3] for k, v in observations.items()}
    np.testing.assert_allclose(numpy.act(single), a[3], atol=1e-5)
    assert np.all(np.abs(a) <= 1.0)


@pytest.mark.parametrize("backend", ["onnxruntime", "numpy"])
def test_act_flat_on_wire_order_rows_equals_act_batch(exported, observations, backend):
    """The edge server's path: one float32 row per robot, keys concatenated in bundle order."""
    policy = bd.load_bundle(exported[0], backend=backend)
    flat = np.concatenate([observations[k].reshape(200, -1) for k in policy.keys], axis=1)
    assert flat.shape == (200, policy.obs_size)
    np.testing.assert_array_equal(policy.act_flat(flat), policy.act_batch(observations))
    np.testing.assert_array_equal(policy.act_flat(flat[5:6]), policy.act_batch(
        {k: v[5:6] for k, v in observations.items()}
    ))  # fmt: skip
    with pytest.raises(ValueError, match=f"expected \\(batch, {policy.obs_size}\\)"):
        policy.act_flat(flat[:, :-1])


def test_bundle_matches_the_sb3_model_on_fresh_observations(exported, run_dir, observations):
    model, vecnorm, _, _ = ex.load_run_model(run_dir, "best")
    for backend in ("onnxruntime", "numpy"):
        policy = bd.load_bundle(exported[0], backend=backend)
        assert ex.measure_parity(model, vecnorm, policy, observations) < 1e-5


def test_loading_and_running_a_bundle_imports_neither_torch_nor_sb3(exported):
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from factoryfloor.edge_runtime.bundle import load_bundle
        for backend in ("onnxruntime", "numpy"):
            policy = load_bundle({str(exported[0])!r}, backend=backend)
            spaces = policy.manifest["observation"]["spaces"]
            obs = {{k: np.zeros(s["shape"], np.float32) for k, s in spaces.items()}}
            assert policy.act(obs).shape == (4,)
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("torch", "stable_baselines3", "sb3_contrib"))
        print("HEAVY", heavy)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stdout, out.stdout


def _rewrite(path: Path, dest: Path, change) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    change(members)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    dest.write_bytes(buffer.getvalue())


def _flip_onnx_byte(members: dict) -> None:
    data = bytearray(members[bd.ONNX])
    data[len(data) // 2] ^= 0x01
    members[bd.ONNX] = bytes(data)


def _edit_manifest(edit):
    def change(members: dict) -> None:
        manifest = json.loads(members[bd.MANIFEST])
        edit(manifest)
        members[bd.MANIFEST] = json.dumps(manifest).encode()

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_flip_onnx_byte, "actor.onnx does not match its SHA-256"),
        (
            _edit_manifest(lambda m: m.pop("control_rate_hz")),
            "'control_rate_hz' is a required property",
        ),
        (
            _edit_manifest(lambda m: m.update(format_version=99)),
            "format_version 99 is not supported",
        ),
        (_edit_manifest(lambda m: m["action"].pop("low")), "action: 'low' is a required property"),
        (lambda members: members.pop(bd.NPZ), "incomplete or padded: missing ['actor.npz']"),
        (lambda members: members.pop(bd.MANIFEST), "has no manifest.json"),
    ],
)
def test_tampered_or_malformed_bundles_are_refused(exported, tmp_path, change, message):
    bad = tmp_path / "bad.ffpolicy"
    _rewrite(exported[0], bad, change)
    with pytest.raises(bd.BundleError) as info:
        bd.load_bundle(bad)
    assert message in str(info.value)


def test_truncated_and_missing_files_are_refused_without_unpickling(
    exported, tmp_path, monkeypatch
):
    def no_pickle(*args, **kwargs):
        raise AssertionError("a bundle must never be unpickled")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    data = exported[0].read_bytes()
    truncated = tmp_path / "cut.ffpolicy"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(bd.BundleError, match="truncated or corrupted"):
        bd.load_bundle(truncated)
    with pytest.raises(bd.BundleError, match="no policy bundle at"):
        bd.load_bundle(tmp_path / "none.ffpolicy")
    assert bd.load_bundle(exported[0], backend="numpy").act_batch(
        {k: np.zeros((2, *s), np.float32) for k, s in [("achieved_goal", (3,)),
         ("desired_goal", (3,)), ("observation", (7,))]}
    ).shape == (2, 4)  # fmt: skip


def test_wrong_observation_shape_says_what_is_expected(exported):
    policy = bd.load_bundle(exported[0], backend="numpy")
    obs = {"achieved_goal": np.zeros(3), "desired_goal": np.zeros(3), "observation": np.zeros(5)}
    with pytest.raises(ValueError, match=r"observation\['observation'\] has shape \(1, 5\)"):
        policy.act(obs)


def test_failed_parity_check_leaves_no_file(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "PARITY_TOLERANCE", -1.0)
    out = tmp_path / "never.ffpolicy"
    with pytest.raises(ex.ExportError, match="parity check failed"):
        ex.export_run(run_dir, out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_export_prints_the_parity_figure(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.ffpolicy"
    assert main(["export", str(run_dir), "--out", str(out), "--checkpoint", "last"]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff onnxruntime" in printed and "numpy" in printed
    assert bd.load_bundle(out).manifest["metrics"]["checkpoint"] == "last"


def test_cli_export_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "x.ffpolicy"
    assert main(["export", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("factoryfloor export: error: no run folder at")
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("which", ["run", "bundle"])
def test_cli_eval_takes_a_run_folder_or_a_bundle(which, run_dir, exported, capsys):
    policy = str(run_dir if which == "run" else exported[0])
    assert main(["eval", REACH, "--policy", policy, "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["policy"] == policy and result["episodes"] == 2
    assert len(result["successes"]) == 2 and 0.0 <= result["success_rate"] <= 1.0
    for key in ("mean_return", "mean_episode_length", "episode_lengths", "env_steps_per_s"):
        assert key in result


def test_cli_eval_refuses_a_tampered_bundle(exported, tmp_path, capsys):
    bad = tmp_path / "bad.ffpolicy"
    _rewrite(exported[0], bad, _flip_onnx_byte)
    assert main(["eval", REACH, "--policy", str(bad), "--episodes", "1"]) == 2
    assert "does not match its SHA-256" in capsys.readouterr().err


def test_auto_backend_falls_back_to_numpy_without_onnxruntime(exported):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["onnxruntime"] = None  # as if it were not installed
        from factoryfloor.edge_runtime.bundle import load_bundle
        policy = load_bundle({str(exported[0])!r})
        print("BACKEND", policy.backend)
        try:
            load_bundle({str(exported[0])!r}, backend="onnxruntime")
        except ImportError:
            print("NO ORT")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "BACKEND numpy" in out.stdout and "NO ORT" in out.stdout


@pytest.mark.parametrize(("algo", "normalize"), [("td3", True), ("tqc", False)])
def test_other_off_policy_algorithms_export_with_parity(algo, normalize, tmp_path, observations):
    if algo == "tqc":
        pytest.importorskip("sb3_contrib")
    cfg = load_config(REACH, algo)
    fields = {**cfg.to_dict(), **TINY, "timesteps": 150, "normalize": normalize}
    run = train(TrainConfig(**{**fields, "out": str(tmp_path / "run")}))
    manifest = ex.export_run(run, tmp_path / f"{algo}.ffpolicy")
    assert all(d < 1e-5 for d in manifest["export_check"]["max_abs_diff"].values())
    assert (manifest["normalization"] is None) == (not normalize)
    assert manifest["actor"]["algo"] == algo and manifest["actor"]["numpy"] is True


def test_ppo_runs_export_the_clipped_gaussian_mean(tmp_path):
    cfg = load_config(REACH, "ppo")
    fields = {**cfg.to_dict(), **TINY, "timesteps": 128, "batch_size": 32, "n_envs": 1}
    fields["algo_kwargs"] = {"n_steps": 64}
    run = train(TrainConfig(**{**fields, "out": str(tmp_path / "run")}))
    manifest = ex.export_run(run, tmp_path / "ppo.ffpolicy")
    assert manifest["actor"]["output"] == "clip" and manifest["actor"]["activation"] == "tanh"
    assert all(d < 1e-5 for d in manifest["export_check"]["max_abs_diff"].values())
    assert set(manifest["export_check"]["max_abs_diff"]) == {"onnxruntime", "numpy"}
