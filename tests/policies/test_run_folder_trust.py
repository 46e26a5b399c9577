"""A run folder from someone else is data, never code; every corrupt one is refused in one line.

Audit rows: VecNormalize statistics, the replay buffer and the random states were pickles, and
so were entries of SB3's model zip, so ``eval --policy RUN``, ``export RUN`` and
``train --resume`` ran code from the folder; ``num_timesteps`` edited to 0 or -5 was accepted
and resume deleted the evaluation history; a partial last line of ``evaluations.jsonl`` failed
resume without naming the file; ``files=[]`` gave an AttributeError; a run killed before its
first checkpoint could be neither resumed nor trained again.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import random
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv
from test_train import REACH, _wait_for, evaluations, tiny_config

from factoryfloor.cli import main
from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies import run_files
from factoryfloor.policies import train as train_module
from factoryfloor.policies.export import load_run_model
from factoryfloor.policies.model_files import SUPPLIED, model_zip_data
from factoryfloor.policies.train import train
from factoryfloor.policies.train_callback import RunCallback
from factoryfloor.policies.train_config import TrainConfig, load_config

FAST = {
    "eval_every_steps": 1000, "eval_episodes": 1, "tensorboard": False, "device": "cpu",
    "n_envs": 1,
}  # fmt: skip


def small_config(tmp_path: Path, out: Path, timesteps: int = 120, **fields: Any) -> TrainConfig:
    cfg = load_config(REACH, fields.pop("algo", None), tiny_config(tmp_path, **FAST, **fields))
    return TrainConfig(**{**cfg.to_dict(), "timesteps": timesteps, "out": str(out)})


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-step HER SAC run: "last" and "best" (its final evaluation) at step 120."""
    tmp = tmp_path_factory.mktemp("pristine")
    return train(small_config(tmp, tmp / "run"))


@pytest.fixture
def run(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "run"))


class Boom:
    """An object whose unpickling writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def payload(marker: Path) -> bytes:
    """A pickle that, when loaded, writes ``marker``."""
    return pickle.dumps(Boom(marker))


def test_the_payload_runs_when_unpickled(tmp_path):
    marker = tmp_path / "marker"
    pickle.loads(payload(marker))  # what SB3 / VecNormalize.load / pickle.load used to do
    assert marker.read_text() == "ran"


def manifest_of(run: Path, which: str) -> tuple[Path, dict[str, Any]]:
    path = run / "checkpoints" / which / ckpt.MANIFEST
    return path, json.loads(path.read_text())


def replace_file(run: Path, which: str, role: str, data: bytes) -> Path:
    """Overwrite a checkpoint's file and re-hash it in checkpoint.json (it then verifies)."""
    path, manifest = manifest_of(run, which)
    target = path.parent / manifest["files"][role]["name"]
    target.write_bytes(data)
    manifest["files"][role].update(bytes=len(data), sha256=ckpt.sha256_of(target))
    path.write_text(json.dumps(manifest))
    return target


def crafted_model(source: Path, artefact: str, marker: Path) -> bytes:
    """The model zip ``source`` with a pickle put in its weights or as a ``data`` entry."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if artefact == "model_weights":
        members["policy.pth"] = pickle.dumps(Boom(marker), protocol=2)  # torch.save's protocol
    else:  # an entry SB3 would unpickle: one factoryfloor does not know, or one it supplies
        data = json.loads(members["data"])
        blob = base64.b64encode(payload(marker)).decode()
        key = "evil" if artefact == "model_unknown_entry" else "policy_class"
        data[key] = {":type:": "<class 'object'>", ":serialized:": blob}
        members["data"] = json.dumps(data).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, member in members.items():
            archive.writestr(name, member)
    return out.getvalue()


def craft(run: Path, artefact: str, marker: Path) -> list[str]:
    """Put the crafted pickle of ``artefact`` in every checkpoint having that file; their names."""
    role = "model" if artefact.startswith("model_") else artefact.removesuffix("_npz")
    names = []
    for which in ("last", "best"):
        files = manifest_of(run, which)[1]["files"]
        if role not in files:
            continue
        source = run / "checkpoints" / which / files[role]["name"]
        if role == "model":
            data = crafted_model(source, artefact, marker)
        elif artefact == "replay_buffer_npz":  # valid but for an object array, pickled inside
            with np.load(source) as npz:
                arrays = {**npz, "actions": np.array([Boom(marker)], dtype=object)}
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            data = buffer.getvalue()
        else:
            data = payload(marker)
        names.append(replace_file(run, which, role, data).name)
    return names


def command(name: str, run: Path, tmp_path: Path) -> list[str]:
    return {
        "eval": ["eval", REACH, "--policy", str(run), "--episodes", "1", "--json"],
        "export": ["export", str(run), "--out", str(tmp_path / "p.ffpolicy")],
        "resume": ["train", REACH, "--out", str(run), "--resume", "--timesteps", "200"],
    }[name]


def one_line_error(capsys: pytest.CaptureFixture[str], name: str) -> str:
    err = capsys.readouterr().err
    prefix = {"resume": "train"}.get(name, name)
    assert err.startswith(f"factoryfloor {prefix}: error: "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# artefact -> why the one line says it was refused
REASONS = {
    "vecnormalize": "it is a pickle, which factoryfloor never loads",
    "replay_buffer": "it is a pickle, which factoryfloor never loads",
    "rng": "it is a pickle, which factoryfloor never loads",
    "replay_buffer_npz": "Object arrays cannot be loaded when allow_pickle=False",
    "model_unknown_entry": "holds pickled entries ['evil'] that factoryfloor does not load",
    "model_weights": "refused them (Unsupported global: GLOBAL exec was not an allowed global",
}
REFUSED = [
    *[(c, "vecnormalize") for c in ("eval", "export", "resume")],
    ("resume", "replay_buffer"),
    ("resume", "replay_buffer_npz"),
    ("resume", "rng"),
    *[(c, "model_unknown_entry") for c in ("eval", "export", "resume")],
    *[(c, "model_weights") for c in ("eval", "export", "resume")],
]


@pytest.mark.parametrize(("name", "artefact"), REFUSED)
def test_a_crafted_pickle_is_refused_and_never_run(run, tmp_path, capsys, name, artefact):
    marker = tmp_path / "marker"
    crafted = craft(run, artefact, marker)
    assert main(command(name, run, tmp_path)) == 2
    err = one_line_error(capsys, name)
    assert any(n in err for n in crafted), err  # names the file
    assert REASONS[artefact] in err, err  # says what is wrong
    assert "restore" in err or "train it again" in err  # and what to do
    assert not marker.exists()
    assert not (tmp_path / "p.ffpolicy").exists()


@pytest.mark.parametrize("name", ["eval", "export", "resume"])
def test_a_pickled_entry_sb3_would_load_is_replaced_not_run(run, pristine, tmp_path, capsys, name):
    marker = tmp_path / "marker"
    craft(run, "model_known_entry", marker)  # policy_class: supplied from the config instead
    assert main(command(name, run, tmp_path)) == 0, capsys.readouterr().err
    assert not marker.exists()
    out = capsys.readouterr().out
    if name == "eval":  # the same policy as the untouched run's, acting the same
        assert main(command(name, pristine, tmp_path)) == 0
        expected = json.loads(capsys.readouterr().out)
        got = json.loads(out)
        for key in ("success_rate", "mean_return", "episode_lengths"):
            assert got[key] == expected[key]
    elif name == "export":
        assert (tmp_path / "p.ffpolicy").stat().st_size > 1000
    else:
        assert ckpt.read_checkpoint(run / "checkpoints" / "last").num_timesteps == 200


@pytest.mark.parametrize("algo", ["sac", "td3", "tqc", "ppo"])
def test_no_algorithm_needs_an_unpickler_to_load_or_resume(algo, tmp_path, monkeypatch):
    if algo == "tqc":
        pytest.importorskip("sb3_contrib")
    extra = {"algo_kwargs": {"n_steps": 64}, "batch_size": 32} if algo == "ppo" else {}
    run = train(
        small_config(tmp_path, tmp_path / "r", 128, algo=algo, action_noise_std=0.1, **extra)
    )
    model = ckpt.read_checkpoint(run / "checkpoints" / "last").paths["model"]
    data = model_zip_data(model.read_bytes())
    serialized = {k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v}
    assert serialized and serialized <= set(SUPPLIED)  # SB3 wrote pickles; each is supplied

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a run folder must never be unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (cloudpickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    loaded, vecnorm, _, _ = load_run_model(run, "best")
    assert loaded.num_timesteps == 128 and vecnorm is not None
    cfg = TrainConfig.from_yaml(run / "config.yaml")
    train(TrainConfig(**{**cfg.to_dict(), "timesteps": 192}), resume=True)
    assert ckpt.read_checkpoint(run / "checkpoints" / "last").num_timesteps == 192


@pytest.mark.parametrize(
    ("which", "name", "value", "message"),
    [
        ("last", "resume", 0, "below the last evaluation it records (last_eval_step 120)"),
        ("last", "resume", -5, "num_timesteps must be an integer >= 0, not -5"),
        ("last", "resume", 5000, "differs from the step in its file names (120)"),
        ("best", "eval", 0, "differs from the step of its evaluation (120)"),
    ],
)
def test_an_edited_counter_is_refused_and_no_evaluation_is_lost(
    run, tmp_path, capsys, which, name, value, message
):
    path, manifest = manifest_of(run, which)
    path.write_text(json.dumps({**manifest, "num_timesteps": value}))
    before = (run / "evaluations.jsonl").read_bytes()
    assert main(command(name, run, tmp_path)) == 2
    err = one_line_error(capsys, name)
    assert str(path) in err and message in err, err
    assert (run / "evaluations.jsonl").read_bytes() == before
    assert not (run / ckpt.SUPERSEDED).exists()


def test_a_counter_edited_everywhere_but_in_the_model_is_refused(run, tmp_path, capsys):
    folder = run / "checkpoints" / "last"
    path, manifest = manifest_of(run, "last")
    for entry in manifest["files"].values():  # rename the files to match, as a careful editor
        new = entry["name"].replace("step120-", "step0-")
        (folder / entry["name"]).rename(folder / new)
        entry["name"] = new
    manifest.update(num_timesteps=0, last_eval_step=0)
    path.write_text(json.dumps(manifest))
    before = (run / "evaluations.jsonl").read_bytes()
    assert main(command("resume", run, tmp_path)) == 2
    err = one_line_error(capsys, "resume")
    assert str(path) in err and "differs from the 120 env steps of its model" in err, err
    assert "set it back to 120" in err
    assert (run / "evaluations.jsonl").read_bytes() == before


LATER = {"num_timesteps": 150, "success_rate": 0.5, "mean_return": -40.0, "episodes": 1}


@pytest.mark.parametrize(
    ("appended", "note"),
    [  # a kill while the line was appended / after an evaluation later than the checkpoint
        ('{"num_timesteps": 20, "success_rate": 0.', "line 2: ignoring an incomplete last record"),
        (json.dumps(LATER) + "\n", "1 record(s) of"),
    ],
)
def test_evaluations_the_resume_redoes_are_kept_aside(run, tmp_path, capsys, appended, note):
    with open(run / "evaluations.jsonl", "a") as f:
        f.write(appended)
    assert main(command("resume", run, tmp_path)) == 0
    err = capsys.readouterr().err
    assert f"{run / 'evaluations.jsonl'}" in err and note in err, err
    assert [e["num_timesteps"] for e in evaluations(run)] == [120, 200]
    assert (run / ckpt.SUPERSEDED).read_text() == appended.rstrip("\n") + "\n"


def test_a_garbled_evaluation_line_is_refused_naming_file_and_line(run, tmp_path, capsys):
    path = run / "evaluations.jsonl"
    path.write_text('{"num_timesteps": 60}\n{"num_timesteps": 9\n' + path.read_text())
    before = path.read_bytes()
    assert main(command("resume", run, tmp_path)) == 2
    err = one_line_error(capsys, "resume")
    assert f"{path}, line 2 is not an evaluation record" in err and "fix or delete" in err
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            {"files": []},
            "files must be a non-empty object of role -> {name, bytes, sha256}, not list",
        ),
        ({"files": {"model": "x.zip"}}, "files['model']: an object {name, bytes, sha256} expected"),
        ({"files": {"model": {"name": "../../x.zip", "bytes": 1, "sha256": "0" * 64}}}, "name"),
        ({"files": {"model": {"name": "m.zip", "bytes": "12", "sha256": "0" * 64}}}, "bytes"),
        ({"files": {"model": {"name": "m.zip", "bytes": 12, "sha256": "abc"}}}, "sha256 must"),
        ({"complete": "yes"}, "complete must be true or false, not 'yes'"),
        ({"best_success_rate": True}, "best_success_rate must be a number"),
        ({"format": 1}, "format 1, not 2 (pickled files of an older factoryfloor, not loaded"),
        ([], "a JSON object expected, not list"),
    ],
)
def test_a_malformed_manifest_is_refused_in_one_line(run, tmp_path, capsys, damage, message):
    path, manifest = manifest_of(run, "last")
    path.write_text(json.dumps({**manifest, **damage} if isinstance(damage, dict) else damage))
    assert main(command("resume", run, tmp_path)) == 2
    err = one_line_error(capsys, "resume")
    assert str(path) in err and message in err, err


def test_a_run_killed_before_its_first_checkpoint_resumes_from_best(tmp_path, capsys):
    run = tmp_path / "run"
    config = tiny_config(tmp_path, **{**FAST, "eval_every_steps": 150, "learning_starts": 100})
    args = [REACH, "--timesteps", "100000", "--out", str(run), "--config", str(config)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "factoryfloor.cli", "train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: (run / "checkpoints" / "best" / ckpt.MANIFEST).is_file(), proc)
        proc.send_signal(signal.SIGKILL)  # no chance to write checkpoints/last
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert not (run / "checkpoints" / "last" / ckpt.MANIFEST).exists()
    step = ckpt.read_checkpoint(run / "checkpoints" / "best").num_timesteps
    assert step >= 150

    assert main(["train", REACH, "--out", str(run), "--config", str(config)]) == 2
    err = one_line_error(capsys, "train")
    assert f"checkpoints/best holds the model of step {step}: pass --resume" in err

    assert (
        main(["train", REACH, "--out", str(run), "--resume", "--timesteps", str(step + 150)]) == 0
    )
    err = capsys.readouterr().err
    assert f"resuming from {run / 'checkpoints' / 'best'}, step {step}" in err
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    assert last.num_timesteps == step + 150 and last.manifest["complete"]
    steps = [e["num_timesteps"] for e in evaluations(run)]
    assert steps[-1] == step + 150 and steps == sorted(set(steps)) and step in steps


def test_a_run_killed_before_any_checkpoint_starts_over_in_place(run, tmp_path, capsys):
    shutil.rmtree(run / "checkpoints" / "best")  # killed before the first evaluation ...
    (run / "checkpoints" / "last" / ckpt.MANIFEST).unlink()  # ... and while writing "last"
    orphans = sorted(p.name for p in (run / "checkpoints" / "last").iterdir())
    (run / "evaluations.jsonl").unlink()
    config = tiny_config(tmp_path, **FAST)

    assert main(command("resume", run, tmp_path)) == 2
    err = one_line_error(capsys, "resume")
    assert "holds no checkpoint" in err and "the same command without --resume" in err

    new = ["train", REACH, "--out", str(run), "--config", str(config), "--timesteps", "120"]
    assert main(new) == 0
    assert f"starting {run} over: it holds no checkpoint" in capsys.readouterr().err
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    assert last.num_timesteps == 120 and [e["num_timesteps"] for e in evaluations(run)] == [120]
    assert not set(orphans) & {p.name for p in (run / "checkpoints" / "last").iterdir()}


def snapshot(model: Any, env_states: list[Any]) -> dict[str, Any]:
    """Copies of the normalisation statistics and random states of a model in training."""
    vecnorm = model.get_vec_normalize_env()
    return {
        "obs_rms": {k: (r.mean.copy(), r.var.copy(), r.count) for k, r in vecnorm.obs_rms.items()},
        "ret_rms": (vecnorm.ret_rms.mean, vecnorm.ret_rms.var, vecnorm.ret_rms.count),
        "settings": [
            getattr(vecnorm, k) for k in ("clip_obs", "gamma", "epsilon", "norm_obs_keys")
        ],
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state().clone(),
        "action_space": model.action_space.np_random.bit_generator.state,
        "envs": env_states,
    }


def buffer_arrays(buffer: Any) -> dict[str, np.ndarray]:
    arrays = {n: v.copy() for n, v in vars(buffer).items() if isinstance(v, np.ndarray)}
    for name, value in vars(buffer).items():
        if isinstance(value, dict):
            arrays |= {
                f"{name}/{k}": v.copy() for k, v in value.items() if isinstance(v, np.ndarray)
            }
    return {n: v for n, v in arrays.items() if v.dtype != object} | {"pos": np.array(buffer.pos)}


def test_resume_restores_normalisation_replay_buffer_and_random_states_exactly(
    tmp_path, monkeypatch
):
    saved: dict[str, Any] = {}
    save_last = RunCallback.save_last

    def spy_save_last(self: RunCallback, interrupted_by: str | None) -> None:
        env_states = [g.bit_generator.state for g in self.model.get_env().get_attr("np_random")]
        saved.update(
            snapshot(self.model, env_states), buffer=buffer_arrays(self.model.replay_buffer)
        )
        save_last(self, interrupted_by)

    monkeypatch.setattr(RunCallback, "save_last", spy_save_last)
    cfg = small_config(tmp_path, tmp_path / "run", 150)
    run = train(cfg)
    last = ckpt.read_checkpoint(run / "checkpoints" / "last")
    for role, suffix in (("vecnormalize", ".json"), ("replay_buffer", ".npz"), ("rng", ".json")):
        assert last.paths[role].suffix == suffix and last.paths[role].read_bytes()[:1] != b"\x80"
    assert {"ep_start", "ep_length", "_current_ep_start", "observations/desired_goal"} <= set(
        run_files.read_replay_buffer(last.paths["replay_buffer"]).arrays
    )

    loaded: dict[str, Any] = {"envs": []}
    restore, set_attr = run_files.restore_replay_buffer, DummyVecEnv.set_attr

    def spy_restore(path: Path, buffer: Any) -> None:
        restore(path, buffer)
        loaded["buffer"] = buffer_arrays(buffer)  # before HER's last episode is ended

    def spy_set_attr(self: DummyVecEnv, name: str, value: Any, indices: Any = None) -> None:
        if name == "np_random":
            loaded["envs"].append(value.bit_generator.state)
        set_attr(self, name, value, indices)

    class StopAfterLoadError(Exception):
        pass

    def load_and_stop(*args: Any) -> Any:
        model, _ = load_last(*args)
        loaded.update(snapshot(model, loaded["envs"]))
        raise StopAfterLoadError

    load_last = train_module._load_last
    monkeypatch.setattr(run_files, "restore_replay_buffer", spy_restore)
    monkeypatch.setattr(DummyVecEnv, "set_attr", spy_set_attr)
    monkeypatch.setattr(train_module, "_load_last", load_and_stop)
    with pytest.raises(StopAfterLoadError):
        train(TrainConfig(**{**cfg.to_dict(), "timesteps": 300}), resume=True)

    assert saved["buffer"]["pos"] == 150 and set(loaded["buffer"]) == set(saved["buffer"])
    for name, array in saved["buffer"].items():
        np.testing.assert_array_equal(loaded["buffer"][name], array, err_msg=name)
    for key, (mean, var, count) in saved["obs_rms"].items():
        np.testing.assert_array_equal(loaded["obs_rms"][key][0], mean)
        np.testing.assert_array_equal(loaded["obs_rms"][key][1], var)
        assert loaded["obs_rms"][key][2] == count > 150  # statistics of the steps trained
    assert loaded["ret_rms"] == saved["ret_rms"] and loaded["settings"] == saved["settings"]
    assert loaded["python"] == saved["python"]
    assert all(np.array_equal(a, b) for a, b in zip(loaded["numpy"], saved["numpy"], strict=True))
    assert torch.equal(loaded["torch"], saved["torch"])
    assert loaded["action_space"] == saved["action_space"]
    assert len(saved["envs"]) == 1 and loaded["envs"] == saved["envs"]


@pytest.mark.parametrize("where", ["mean", "var", "count"])
def test_non_finite_normalisation_statistics_are_refused(run, capsys, where):
    """Python's JSON writes and reads NaN: a NaN statistic would make every observation NaN."""
    path, manifest = manifest_of(run, "last")
    data = json.loads((path.parent / manifest["files"]["vecnormalize"]["name"]).read_text())
    stats = data["obs_rms"]["observation"]
    if where == "count":
        stats["count"] = float("nan")
    else:
        stats[where][0] = float("nan")
    target = replace_file(run, "last", "vecnormalize", json.dumps(data).encode())
    code = main(["train", REACH, "--out", str(run), "--resume", "--timesteps", "130"])
    err = capsys.readouterr().err
    assert code == 2 and ("non-finite" in err or "not finite" in err), err
    assert err.count("\n") == 1 and target.name in err, err
