"""Export a training run to a one-file policy bundle (``factoryfloor export``).

``export_run(run, out)`` loads the run's SB3 model through ``checkpoint.json``, wraps its
deterministic actor (SAC/TQC: the tanh-squashed mean; TD3: the actor) with the flattening of
the Dict observation, the VecNormalize statistics and the action scaling in one torch module,
exports it to ONNX and, for MLP actors, to NumPy arrays, and writes the bundle atomically.
Before the file appears, the bundle checks itself: on ``PARITY_OBSERVATIONS`` observations (real
env observations from random-action episodes plus perturbations of them) the actions of both
backends must equal SB3's ``model.predict(obs, deterministic=True)`` within ``PARITY_TOLERANCE``
(``CAMERA_PARITY_TOLERANCE`` for a CNN actor: see there).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch import nn

import factoryfloor  # registers the envs
from factoryfloor.edge_runtime import bundle as bd
from factoryfloor.edge_runtime.spec import manifest_sections, space_fields
from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies.model_files import channels_first, load_model
from factoryfloor.policies.rollout import run_episode
from factoryfloor.policies.run_files import load_vecnormalize
from factoryfloor.policies.train_config import TrainConfig
from factoryfloor.sim.env import OBS_UNITS

PARITY_OBSERVATIONS = 1000
PARITY_TOLERANCE = 1e-5
# A trained camera actor's float32 convolutions and spatial softmax round differently in torch
# and onnxruntime: on the PickPlace camera bundle torch's own float32 actions are 1.4e-5 from
# the same actor run in float64, onnxruntime's 1.9e-5, so 1e-5 between them is below what
# float32 holds; 5e-5 keeps a margin and still catches any real mismatch (a wrong input order,
# normalisation or channel order moves actions by 1e-2 and more).
CAMERA_PARITY_TOLERANCE = 5e-5
OPSET = 17
SQUASHED_MEAN = ("sac", "tqc")  # actor's Gaussian mean through tanh, scaled to the bounds
DIRECT_ACTOR = ("td3",)  # actor(obs) is already the tanh output, scaled to the bounds
CLIPPED_MEAN = ("ppo",)  # the Gaussian mean in action units, clipped to the bounds
EXPORTABLE = (*SQUASHED_MEAN, *DIRECT_ACTOR, *CLIPPED_MEAN)
ACTIVATION_NAMES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.ELU: "elu"}
_SMALL_BUFFER = {"buffer_size": 1}


# the bundles export makes are checked as files, whatever trust store the environment names
UNTRUSTING = bd.TrustStore()


class ExportError(ValueError):
    """The run cannot be exported, or the exported bundle failed its parity check."""


class DeployedActor(nn.Module):
    """Raw Dict observation (one tensor per key) -> env action, for ONNX export."""

    def __init__(self, model: BaseAlgorithm, algo: str, norm: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.policy: Any = model.policy
        self.actor: Any = getattr(model.policy, "actor", None)  # SAC/TQC/TD3 policies
        self.algo = algo
        space = model.observation_space
        assert isinstance(space, gym.spaces.Dict)
        self.keys = list(space.spaces)
        self.shapes = [tuple(space[k].shape or ()) for k in self.keys]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.norm_mean: torch.Tensor
        self.norm_std: torch.Tensor
        self.norm_low: torch.Tensor
        self.norm_high: torch.Tensor
        self.low: torch.Tensor
        self.high: torch.Tensor
        for name, value in norm.items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float64))
        box = model.action_space
        assert isinstance(box, gym.spaces.Box)
        self.register_buffer("low", torch.as_tensor(box.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(box.high, dtype=torch.float32))

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        """Actions ``(batch, *action_shape)`` in the env's action space."""
        flat = torch.cat([o.reshape(o.shape[0], -1) for o in obs], dim=1).double()
        x = (flat - self.norm_mean) / self.norm_std
        x = torch.max(torch.min(x, self.norm_high), self.norm_low).float()
        parts = torch.split(x, self.sizes, dim=1)
        named = {
            k: p.reshape(-1, *s) for k, p, s in zip(self.keys, parts, self.shapes, strict=True)
        }
        if self.algo in CLIPPED_MEAN:  # PPO: predict() clips the mean to the bounds
            features = self.policy.extract_features(named, self.policy.pi_features_extractor)
            mean = self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))
            return torch.max(torch.min(mean, self.high), self.low)
        if self.algo in SQUASHED_MEAN:
            mean, _, _ = self.actor.get_action_dist_params(named)
            scaled = torch.tanh(mean)
        else:
            scaled = self.actor(named)
        return self.low + 0.5 * (scaled + 1.0) * (self.high - self.low)


def load_run_model(
    run: Path, which: str = "best"
) -> tuple[BaseAlgorithm, VecNormalize | None, TrainConfig, ckpt.Checkpoint]:
    """The SB3 model and VecNormalize of a run's ``best`` or ``last`` checkpoint (CPU).

    Nothing of the run folder is unpickled (``model_files.load_model``, ``run_files``): a run
    folder received from someone else can be exported or evaluated.

    Raises:
        ExportError: When ``run`` is not a run folder.
        CheckpointError: When the checkpoint is missing or corrupted.
    """
    if not (run / "config.yaml").is_file():
        raise ExportError(f"{run} is not a run folder (no config.yaml); train one first")
    cfg = TrainConfig.from_yaml(run / "config.yaml")
    if cfg.algo not in EXPORTABLE:
        raise ExportError(f"export supports {', '.join(EXPORTABLE)} runs, not {cfg.algo!r}")
    checkpoint = ckpt.read_checkpoint(run / "checkpoints" / which)
    venv = channels_first(DummyVecEnv([lambda: gym.make(cfg.task, **cfg.make_kwargs())]))
    vecnorm = None
    try:  # HER models need an env to load; the replay buffer is not needed
        if "vecnormalize" in checkpoint.paths:
            vecnorm = ckpt.load_file(
                checkpoint, "vecnormalize", lambda p: load_vecnormalize(p, venv)
            )
            vecnorm.training = False
        model = load_model(checkpoint, cfg, vecnorm or venv, "cpu", **_SMALL_BUFFER)
    finally:
        venv.close()
    return model, vecnorm, cfg, checkpoint


def key_normalization(
    vecnorm: VecNormalize | None, key: str, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One key's ``n`` elements: mean, std (sqrt(var + eps)), clip low/high (float64).

    A key VecNormalize does not normalise gets the identity (0, 1, -inf, inf).
    """
    rms = vecnorm.obs_rms.get(key) if vecnorm is not None and vecnorm.norm_obs else None
    if vecnorm is not None and key in (vecnorm.norm_obs_keys or []) and rms is not None:
        return (
            np.asarray(rms.mean, np.float64).reshape(-1),
            np.sqrt(np.asarray(rms.var, np.float64) + vecnorm.epsilon).reshape(-1),
            np.full(n, -vecnorm.clip_obs),
            np.full(n, vecnorm.clip_obs),
        )
    return np.zeros(n), np.ones(n), np.full(n, -np.inf), np.full(n, np.inf)


def normalization_arrays(model: BaseAlgorithm, vecnorm: VecNormalize | None) -> dict[str, Any]:
    """Per flattened element: mean, std (sqrt(var + eps)), clip low/high (float64)."""
    space = model.observation_space
    assert isinstance(space, gym.spaces.Dict)
    per_key = [
        key_normalization(vecnorm, key, int(np.prod(sub.shape or ())))
        for key, sub in space.spaces.items()
    ]
    columns = [np.concatenate(c) for c in zip(*per_key, strict=True)]
    return dict(zip(("norm_mean", "norm_std", "norm_low", "norm_high"), columns, strict=True))


def _check_flatten_features(model: BaseAlgorithm) -> None:
    policy: Any = model.policy
    actor = getattr(policy, "actor", None)
    extractor = actor.features_extractor if actor is not None else policy.pi_features_extractor
    subs = getattr(extractor, "extractors", None)
    if subs is None or not all(isinstance(m, nn.Flatten) for m in subs.values()):
        raise ExportError(
            f"export supports Dict observations of vectors (CombinedExtractor of Flatten), "
            f"not {type(extractor).__name__}"
        )


def onnx_bytes(module: Any) -> bytes:
    """The ONNX graph of ``module`` (batch dimension dynamic; its ``dummy_inputs`` if any)."""
    dummies = getattr(module, "dummy_inputs", None)
    dummy = dummies() if dummies else tuple(torch.zeros(1, *s) for s in module.shapes)
    axes = {k: {0: "batch"} for k in [*module.keys, "action"]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            dummy,
            buffer,  # type: ignore[arg-type]
            input_names=module.keys,
            output_names=["action"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def mlp_arrays(model: BaseAlgorithm, algo: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Linear layers of an MLP actor as arrays, and its manifest description.

    Returns empty arrays and ``{"numpy": False}`` when the actor is not a plain MLP.
    """
    actor: Any = getattr(model.policy, "actor", None)
    squash: str | None
    output = "scale"  # [-1, 1] -> [low, high]
    if algo in CLIPPED_MEAN:
        policy: Any = model.policy
        modules = [*policy.mlp_extractor.policy_net, policy.action_net]
        squash, output = None, "clip"
    elif algo in SQUASHED_MEAN:
        modules = [*actor.latent_pi, actor.mu]
        squash = "tanh"
    else:
        modules = list(actor.mu)
        squash = "tanh" if isinstance(modules[-1], nn.Tanh) else None
        modules = modules[:-1] if squash else modules
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    acts = {ACTIVATION_NAMES.get(type(m)) for m in modules if not isinstance(m, nn.Linear)}
    plain = len(linears) + max(len(linears) - 1, 0) == len(modules) and None not in acts
    if not plain or len(acts) > 1 or getattr(actor or model.policy, "use_sde", False):
        return {}, {"numpy": False}
    arrays = {}
    for i, layer in enumerate(linears):
        arrays[f"w{i}"] = layer.weight.detach().cpu().numpy().T.astype(np.float32)
        arrays[f"b{i}"] = layer.bias.detach().cpu().numpy().astype(np.float32)
    info = {
        "numpy": True,
        "layers": len(linears),
        "activation": acts.pop() if acts else "relu",
        "squash": squash,
        "output": output,
        "hidden_sizes": [int(layer.out_features) for layer in linears[:-1]],
    }
    return arrays, info


def parity_observations(
    task: str, env_kwargs: dict[str, Any], n: int = PARITY_OBSERVATIONS, seed: int = 0
) -> dict[str, np.ndarray]:
    """``n`` observations: random-action episodes, then Gaussian perturbations of them."""
    env = gym.make(task, **env_kwargs)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    parts: list[dict[str, np.ndarray]] = []
    try:
        while (got := sum(len(p["actions"]) + 1 for p in parts)) < n // 4:
            parts.append(
                run_episode(
                    env, lambda _: env.action_space.sample(), seed + len(parts), keep=True,
                    max_steps=n // 4 - got - 1,
                ).arrays()
            )  # fmt: skip
    finally:
        env.close()
    keys = [k.removeprefix("obs/") for k in parts[0] if k.startswith("obs/")]
    base = {k: np.concatenate([p[f"obs/{k}"] for p in parts]) for k in keys}
    real = base[keys[0]]
    picks = rng.integers(0, len(real), n - len(real))
    out = {}
    for key, arr in base.items():
        if arr.dtype == np.uint8:  # images: pixel noise of +-32 levels, kept in 0..255
            noise = rng.integers(-32, 33, arr[picks].shape)
            noisy = np.clip(arr[picks].astype(np.int16) + noise, 0, 255).astype(np.uint8)
            out[key] = np.concatenate([arr, noisy])
            continue
        arr = arr.astype(np.float32)
        scale = 0.1 * np.abs(arr[picks]) + 0.05
        noisy = arr[picks] + scale * rng.standard_normal(arr[picks].shape)
        out[key] = np.concatenate([arr, noisy.astype(np.float32)])
    return out


def measure_parity(
    model: BaseAlgorithm,
    vecnorm: VecNormalize | None,
    policy: bd.BundlePolicy,
    obs: dict[str, np.ndarray],
) -> float:
    """Max abs difference between the bundle's and SB3's deterministic actions."""
    normalized = vecnorm.normalize_obs(obs) if vecnorm is not None else obs
    expected, _ = model.predict(normalized, deterministic=True)
    return float(np.max(np.abs(policy.act_batch(obs) - expected)))


def export_run(run: Path, out: Path, which: str = "best", secret_key: Any = None) -> dict[str, Any]:
    """Export ``run``'s ``which`` checkpoint to the bundle ``out``; return its manifest.

    Args:
        run: The run folder.
        out: The bundle to write.
        which: ``best`` or ``last``.
        secret_key: A publisher's Ed25519 secret key (``signing.load_secret_key``) to sign the
            bundle with, or None for an unsigned bundle.

    Raises:
        ExportError: For an unsupported run or a failed parity check (no file is left).
        CheckpointError: For a missing or corrupted checkpoint.
    """
    from factoryfloor.policies.export_camera import CameraDeployedActor, is_camera_model

    model, vecnorm, cfg, checkpoint = load_run_model(run, which)
    arrays: dict[str, np.ndarray] = {}
    if is_camera_model(model):  # CNN actor: ONNX only, uint8 images in, no privileged key
        module: Any = CameraDeployedActor(model, vecnorm).eval()
        actor_info: dict[str, Any] = {"numpy": False}
        norm: dict[str, Any] = {}
    else:
        _check_flatten_features(model)
        norm = normalization_arrays(model, vecnorm)
        module = DeployedActor(model, cfg.algo, norm).eval()
        arrays, actor_info = mlp_arrays(model, cfg.algo)
    members = {bd.ONNX: onnx_bytes(module)}
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **norm, **arrays)  # type: ignore[arg-type]
        members[bd.NPZ] = buffer.getvalue()
    manifest = build_manifest(run, out, cfg, checkpoint, model, vecnorm, actor_info, which)
    obs = parity_observations(cfg.task, cfg.make_kwargs())
    diffs = {}
    for backend in ("onnxruntime", "numpy") if arrays else ("onnxruntime",):
        data = bd.pack_bundle(manifest, members)
        loaded = bd.bundle_from_bytes(data, backend, trust=UNTRUSTING)
        diffs[backend] = measure_parity(model, vecnorm, loaded, obs)
    worst = max(diffs.values())
    tolerance = CAMERA_PARITY_TOLERANCE if is_camera_model(model) else PARITY_TOLERANCE
    if not worst <= tolerance:
        raise ExportError(
            f"export parity check failed: max |bundle - SB3 predict| = {worst:.3g} > "
            f"{tolerance:g} ({diffs}); no bundle written"
        )
    manifest["export_check"] = {
        "observations": len(next(iter(obs.values()))),
        "tolerance": tolerance,
        "max_abs_diff": diffs,
    }
    data = bd.pack_bundle(manifest, members, secret_key)
    final = bd.bundle_from_bytes(data, "auto", trust=UNTRUSTING)  # the final bytes verify
    signer = final.signer.key_id if final.signer is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write(out, lambda p: p.write_bytes(data))
    result: dict[str, Any] = json.loads(
        json.dumps({**manifest, "bytes": len(data), "signer": signer})
    )
    return result


def _read_provenance(path: Path) -> dict[str, Any]:
    """The run's ``environment.json`` (versions and machine), checked to be a JSON object."""
    try:
        provenance = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ExportError(
            f"{path} cannot be read ({str(exc)[:120]}); train the run again"
        ) from None
    if not isinstance(provenance, dict):
        raise ExportError(f"{path} is not a JSON object; train the run again")
    return provenance


def build_manifest(
    run: Path,
    out: Path,
    cfg: TrainConfig,
    checkpoint: ckpt.Checkpoint,
    model: BaseAlgorithm,
    vecnorm: VecNormalize | None,
    actor_info: dict[str, Any],
    which: str = "best",
) -> dict[str, Any]:
    """Every manifest field but ``files`` (see ``factoryfloor.edge_runtime.bundle``)."""
    from factoryfloor.policies.export_camera import camera_observation_fields, is_camera_model

    env = gym.make(cfg.task, **cfg.make_kwargs())
    try:
        unwrapped: Any = env.unwrapped
        rate_hz = 1.0 / float(unwrapped.sim.physics.control_dt_s)
        control = str(unwrapped.robot.control)
        camera_info = unwrapped.camera_info()
    finally:
        env.close()
    observation, action = space_fields(model.observation_space, model.action_space, OBS_UNITS)
    sections = manifest_sections(observation, action, control)
    if is_camera_model(model):  # the actor's keys only, images with their camera
        sections["observation"] = camera_observation_fields(model, camera_info, OBS_UNITS)
    evaluations, _ = ckpt.read_evaluations(run)
    provenance = _read_provenance(run / "environment.json")
    return {
        "format": bd.FORMAT,
        "format_version": bd.FORMAT_VERSION,
        "task_id": cfg.task,
        "robot": cfg.robot,
        "control_rate_hz": rate_hz,
        **sections,
        "normalization": None
        if vecnorm is None
        else {
            "type": "VecNormalize",
            "keys": list(vecnorm.norm_obs_keys or []),
            "epsilon": vecnorm.epsilon,
            "clip_obs": vecnorm.clip_obs,
            "in_graph": True,
        },
        "actor": {"algo": cfg.algo, "onnx_opset": OPSET, "net_arch": cfg.net_arch, **actor_info},
        "training": cfg.to_dict(),
        "metrics": {
            "checkpoint": checkpoint.folder.name,
            "num_timesteps": checkpoint.num_timesteps,
            "checkpoint_evaluation": checkpoint.manifest.get("evaluation"),
            "last_evaluation": evaluations[-1] if evaluations else None,
        },
        "command": {
            "train": provenance.get("command"),
            "export": [
                "factoryfloor",
                "export",
                str(run),
                "--out",
                str(out),
                "--checkpoint",
                which,
            ],
        },
        "factoryfloor_version": factoryfloor.__version__,
    }
