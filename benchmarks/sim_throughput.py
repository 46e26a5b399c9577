"""Simulation throughput of factoryfloor, measured against peers in the same run.

Every measurement runs for ``--seconds`` of wall time, split into ``--repeats`` windows that are
interleaved round-robin across all measurements (so a noisy spell of the machine hits every
measurement alike); the best window (the minimum-time-per-step rate) is reported. Because the
machine is noisy, targets are ratios between measurements taken in this same run:

* envs: env steps/s of every registered factoryfloor env (random actions, seeded; resets
  included, through the ``TimeLimit`` wrapper that ``gymnasium.make`` adds).
* raw: the bare physics advance of the same scene at rest (``sim.step()`` of the backend, no env
  logic) and raw ``pybullet.stepSimulation`` calls.
* env overhead (target <= 15%): while the envs section steps each env, the time spent inside the
  physics advance (``sim.step()``) is clocked too; overhead % = time outside it / time inside it.
  This compares the env with the physics of the very states it visits (an arm moving under random
  actions costs more physics than the same scene at rest, which the raw rate measures).
* panda_gym: PandaReach-v3 and PandaPickAndPlace-v3, same protocol; factoryfloor should step
  >= 2x faster than its panda-gym counterpart.
* camera: factoryfloor/PickPlace-v0 with 84x84 RGB observations versus TinyRenderer frames/s of a
  plain Panda scene; target >= 2x. Sample frames are saved beside the JSON.

Usage::

    python benchmarks/sim_throughput.py --seconds 5 --out bench_results/sim_throughput.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

import factoryfloor  # noqa: F401  (registers the factoryfloor envs)
from factoryfloor.sim.camera import CameraConfig
from factoryfloor.sim.registry import ENV_IDS

SECTIONS = ("envs", "raw", "panda_gym", "camera")
SEED = 0
IMAGE_SIZE = 84
UPSCALE = 4
OVERHEAD_TARGET_PCT = 15.0
PEER_RATIO_TARGET = 2.0
CAMERA_RATIO_TARGET = 2.0
PANDA_PEERS = {  # factoryfloor env id -> panda-gym peer id
    "factoryfloor/Reach-v0": "PandaReach-v3",
    "factoryfloor/PickPlace-v0": "PandaPickAndPlace-v3",
}
CAMERA_ENV_ID = "factoryfloor/PickPlace-v0"
# Peer camera: the factoryfloor cell camera's placement and optics (see CameraConfig).
_CELL_CAMERA = CameraConfig()
PEER_CAMERA_EYE, PEER_CAMERA_TARGET = _CELL_CAMERA.eye_m, _CELL_CAMERA.target_m
PEER_CAMERA_FOV_DEG, PEER_CAMERA_NEAR_M = _CELL_CAMERA.fov_deg, _CELL_CAMERA.near_m
PEER_CAMERA_FAR_M = _CELL_CAMERA.far_m


# --------------------------------------------------------------------------------- workloads
class Workload:
    """Something timed by advancing it one unit (a step or a frame) at a time.

    Attributes:
        key: Unique id of the measurement (used in the JSON).
        label: Human-readable name for the table.
        section: The CLI section it belongs to.
        unit_name: What one unit is ("steps", "frames").
        batch: Units run between two clock reads (amortises ``perf_counter`` for cheap units).
        info: Extra facts recorded with the measurement (control rate, substeps, ...).
    """

    key: str
    label: str
    section: str
    unit_name: str = "steps"
    batch: int = 1

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def unit(self) -> None:
        """Advance by one unit."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workload's resources."""


def _control_hz(env: gym.Env[Any, Any]) -> float:
    """Control rate (Hz) of a factoryfloor or panda-gym env."""
    sim = env.unwrapped.sim  # type: ignore[attr-defined]
    if hasattr(sim, "physics"):  # factoryfloor's PyBullet facade
        return 1.0 / float(sim.physics.control_dt_s)
    return 1.0 / (float(sim.timestep) * int(sim.n_substeps))  # panda-gym's PyBullet


class EnvStepping(Workload):
    """Random-action env steps, resetting whenever an episode ends.

    Args:
        key: Measurement id.
        env_id: Gymnasium id.
        section: CLI section.
        seed: Seeds the first reset and the action space.
        **make_kwargs: Passed to ``gymnasium.make``.
    """

    def __init__(self, key: str, env_id: str, section: str, seed: int, **make_kwargs: Any) -> None:
        super().__init__()
        self.key, self.section = key, section
        suffix = ", ".join(f"{k}={v}" for k, v in make_kwargs.items() if k != "render_mode")
        self.label = f"{env_id} env.step" + (f" ({suffix})" if suffix else "")
        self.env = gym.make(env_id, **make_kwargs)
        self.env.reset(seed=seed)
        # Actions are drawn up front: Box.sample() costs tens of microseconds, which would be
        # timed as if it were the env's (for both sides of each comparison alike).
        space = self.env.action_space
        rng = np.random.default_rng(seed)
        self.actions = rng.uniform(space.low, space.high, (4096, *space.shape)).astype(space.dtype)
        self.action_index = 0
        self.episodes = 1
        control_hz = _control_hz(self.env)
        self.info = {
            "env_id": env_id,
            "make_kwargs": {k: str(v) for k, v in make_kwargs.items()},
            "control_hz": control_hz,
            "max_episode_steps": self.env.spec.max_episode_steps if self.env.spec else None,
        }
        self.physics_s, self.total_s = 0.0, 0.0
        sim = getattr(self.env.unwrapped, "sim", None)
        if hasattr(sim, "physics"):  # a factoryfloor backend: clock its physics advance
            physics_step = sim.step

            def timed_step() -> None:
                t0 = time.perf_counter()
                physics_step()
                self.physics_s += time.perf_counter() - t0

            sim.step = timed_step
        self.clock_physics = hasattr(sim, "physics")

    def unit(self) -> None:
        """One env step with a random action; resets on termination or truncation."""
        t0 = time.perf_counter()
        self.action_index = (self.action_index + 1) % len(self.actions)
        _, _, terminated, truncated, _ = self.env.step(self.actions[self.action_index])
        if terminated or truncated:
            self.env.reset()
            self.episodes += 1
        self.total_s += time.perf_counter() - t0

    def close(self) -> None:
        """Close the env (and record the physics share of the stepping time)."""
        self.info["episodes_started"] = self.episodes
        if self.clock_physics and self.physics_s > 0:
            self.info["physics_s"] = self.physics_s
            outside = self.total_s - self.physics_s
            self.info["outside_physics_s"] = outside
            self.info["in_run_overhead_pct"] = 100.0 * outside / self.physics_s
        self.env.close()


def _step_calls_per_control(sim: Any, engine: dict[str, Any]) -> int:
    """``stepSimulation`` calls per control step of a factoryfloor backend.

    The backend's own ``raw_steps_per_control_step`` wins when it has one; otherwise the count
    follows from the engine: a control step lasts ``physics.control_dt_s`` and each call
    advances ``fixedTimeStep`` (which already spans all internal steps under ``numSubSteps``).
    """
    if hasattr(sim, "raw_steps_per_control_step"):
        return int(sim.raw_steps_per_control_step)
    return max(1, round(float(sim.physics.control_dt_s) / float(engine["fixedTimeStep"])))


class RawPhysics(Workload):
    """The bare physics of a factoryfloor env's scene, without any env logic.

    Args:
        key: Measurement id.
        env_id: Factoryfloor gymnasium id whose scene is stepped.
        seed: Seed of the one ``env.reset`` that sets the scene up.
        mode: "control" times the backend's ``sim.step()`` (one control step of physics);
            "step_simulation" times raw ``pybullet.stepSimulation`` calls.
    """

    def __init__(self, key: str, env_id: str, seed: int, mode: str) -> None:
        super().__init__()
        self.key, self.section = key, "raw"
        self.env = gym.make(env_id)
        self.env.reset(seed=seed)
        self.sim = self.env.unwrapped.sim  # type: ignore[attr-defined]
        engine = pybullet.getPhysicsEngineParameters(physicsClientId=self.sim.client._client)
        self.info = {
            "env_id": env_id,
            "stepSimulation_calls_per_control_step": _step_calls_per_control(self.sim, engine),
            "engine_fixed_timestep_s": engine["fixedTimeStep"],
            "engine_num_substeps": engine["numSubSteps"],
            "control_hz": 1.0 / float(self.sim.physics.control_dt_s),
        }
        if mode == "control":
            self.label = f"{env_id} raw sim.step()"
            self._advance: Callable[[], None] = self.sim.step
            self.batch = 2
        elif mode == "step_simulation":
            self.label = f"{env_id} raw stepSimulation"
            self.unit_name = "stepSimulation calls"
            client_id = self.sim.client._client

            def advance() -> None:
                pybullet.stepSimulation(physicsClientId=client_id)

            self._advance = advance
            self.batch = 20
        else:
            raise ValueError(f"unknown raw mode {mode!r}")

    def unit(self) -> None:
        """One control step (``sim.step()``) or one ``stepSimulation`` call."""
        self._advance()

    def close(self) -> None:
        """Close the env."""
        self.env.close()


class TinyRendererPeer(Workload):
    """TinyRenderer frames of a plain Panda scene (panda.urdf, a table box and a 4 cm cube).

    Args:
        size: Side of the square image (pixels).
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.key, self.section = "camera/peer_tiny_renderer", "camera"
        self.label = f"TinyRenderer {size}x{size} Panda scene"
        self.unit_name = "frames"
        self.size = size
        self.client = BulletClient(connection_mode=pybullet.DIRECT)
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.client.loadURDF("franka_panda/panda.urdf", [0, 0, 0], useFixedBase=True)
        table_half = [0.4, 0.4, 0.02]
        self.client.createMultiBody(
            0.0,
            self.client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=table_half),
            self.client.createVisualShape(
                pybullet.GEOM_BOX, halfExtents=table_half, rgbaColor=[0.6, 0.45, 0.3, 1]
            ),
            [0.4, 0.0, -0.02],
        )
        cube_half = [0.02, 0.02, 0.02]
        self.client.createMultiBody(
            0.1,
            self.client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=cube_half),
            self.client.createVisualShape(
                pybullet.GEOM_BOX, halfExtents=cube_half, rgbaColor=[0.85, 0.2, 0.15, 1]
            ),
            [0.5, 0.0, 0.02],
        )
        self.view = self.client.computeViewMatrix(PEER_CAMERA_EYE, PEER_CAMERA_TARGET, [0, 0, 1])
        self.projection = self.client.computeProjectionMatrixFOV(
            PEER_CAMERA_FOV_DEG, 1.0, PEER_CAMERA_NEAR_M, PEER_CAMERA_FAR_M
        )
        self.info = {"urdf": "franka_panda/panda.urdf", "renderer": "ER_TINY_RENDERER"}

    def frame(self) -> np.ndarray:
        """Render one frame; RGB uint8 of shape (size, size, 3)."""
        _, _, rgba, _, _ = self.client.getCameraImage(
            self.size,
            self.size,
            self.view,
            self.projection,
            renderer=pybullet.ER_TINY_RENDERER,
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(self.size, self.size, 4)[:, :, :3]

    def unit(self) -> None:
        """Render one frame."""
        self.frame()

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


# --------------------------------------------------------------------------------- timing
@dataclass
class Measurement:
    """Rates of one workload over its timing windows."""

    key: str
    label: str
    section: str
    unit_name: str
    windows_per_s: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best_per_s(self) -> float:
        """Best window rate (the minimum time per unit)."""
        return max(self.windows_per_s)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "label": self.label,
            "section": self.section,
            "unit": f"{self.unit_name}/s",
            "best_per_s": self.best_per_s,
            "median_per_s": statistics.median(self.windows_per_s),
            "windows_per_s": self.windows_per_s,
            **self.info,
        }


def time_window(unit: Callable[[], None], seconds: float, batch: int) -> float:
    """Run ``unit`` in batches for at least ``seconds`` of wall time; returns units per second."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        for _ in range(batch):
            unit()
        count += batch
        now = time.perf_counter()
    return count / (now - start)


def run_round_robin(
    workloads: Sequence[Workload], seconds: float, repeats: int, warmup: int = 3
) -> dict[str, Measurement]:
    """Time every workload for ``seconds`` in ``repeats`` windows interleaved across workloads."""
    for workload in workloads:
        for _ in range(warmup * workload.batch):
            workload.unit()
    measurements = {
        w.key: Measurement(w.key, w.label, w.section, w.unit_name, info=w.info) for w in workloads
    }
    window = seconds / repeats
    for _ in range(repeats):
        for workload in workloads:
            rate = time_window(workload.unit, window, workload.batch)
            measurements[workload.key].windows_per_s.append(rate)
    return measurements


# --------------------------------------------------------------------------------- sections
def env_key(env_id: str) -> str:
    """Measurement id of a factoryfloor env's env.step rate."""
    return f"envs/{env_id}"


def raw_key(env_id: str, mode: str) -> str:
    """Measurement id of a factoryfloor scene's raw physics rate."""
    return f"raw/{env_id}/{mode}"


def build_workloads(sections: set[str], seed: int) -> tuple[list[Workload], dict[str, str]]:
    """Create the workloads of the selected sections.

    Returns:
        The workloads and, per skipped section, the reason it was skipped.
    """
    workloads: list[Workload] = []
    skipped: dict[str, str] = {}
    if "envs" in sections:
        workloads += [EnvStepping(env_key(i), i, "envs", seed) for i in ENV_IDS]
    if "raw" in sections:
        for env_id in ENV_IDS:
            workloads.append(RawPhysics(raw_key(env_id, "control"), env_id, seed, "control"))
            workloads.append(
                RawPhysics(raw_key(env_id, "step_simulation"), env_id, seed, "step_simulation")
            )
    if "panda_gym" in sections:
        try:
            import panda_gym  # noqa: F401  (registers the Panda envs)
        except ImportError as err:
            skipped["panda_gym"] = f"panda_gym is not importable ({err}); pip install panda-gym"
        else:
            workloads += [
                EnvStepping(f"panda_gym/{peer}", peer, "panda_gym", seed)
                for peer in PANDA_PEERS.values()
            ]
    if "camera" in sections:
        workloads.append(
            EnvStepping(
                "camera/factoryfloor_rgb",
                CAMERA_ENV_ID,
                "camera",
                seed,
                obs_mode="rgb",
                image_size=IMAGE_SIZE,
                render_mode="rgb_array",
            )
        )
        workloads.append(TinyRendererPeer(IMAGE_SIZE))
    return workloads, skipped


# --------------------------------------------------------------------------------- comparisons
@dataclass
class Comparison:
    """A subject measurement against a peer: ``ratio = subject / peer`` must be >= ``min_ratio``.

    ``overhead`` comparisons (env vs its own raw physics) also report the overhead in percent,
    (peer / subject - 1) * 100, and state their target as a maximum overhead.
    """

    name: str
    subject: str
    peer: str
    min_ratio: float
    overhead: bool = False

    def evaluate(self, m: dict[str, Measurement]) -> dict[str, Any]:
        """Ratio, paired-window ratio and pass/fail; ``None`` values when a side is missing."""
        result: dict[str, Any] = {
            "name": self.name,
            "subject": self.subject,
            "peer": self.peer,
            "target": self.target_text(),
            "min_ratio": self.min_ratio,
            "ratio": None,
            "paired_median_ratio": None,
            "ok": None,
        }
        if self.overhead:
            result["max_overhead_pct"] = OVERHEAD_TARGET_PCT
            result["overhead_pct"] = None
        if self.subject not in m or self.peer not in m:
            return result
        subject, peer = m[self.subject], m[self.peer]
        if self.overhead and "in_run_overhead_pct" in subject.info:
            pct = float(subject.info["in_run_overhead_pct"])
            result.update(overhead_pct=pct, ok=bool(pct <= OVERHEAD_TARGET_PCT))
            result["ratio"] = subject.best_per_s / peer.best_per_s
            return result
        ratio = subject.best_per_s / peer.best_per_s
        paired = [s / p for s, p in zip(subject.windows_per_s, peer.windows_per_s, strict=True)]
        result.update(ratio=ratio, paired_median_ratio=statistics.median(paired))
        if self.overhead:
            result["overhead_pct"] = (1.0 / ratio - 1.0) * 100.0
            result["ok"] = bool(result["overhead_pct"] <= OVERHEAD_TARGET_PCT)
        else:
            result["ok"] = bool(ratio >= self.min_ratio)
        return result

    def target_text(self) -> str:
        """The target as shown in the table."""
        if self.overhead:
            return f"overhead <= {OVERHEAD_TARGET_PCT:g}%"
        return f">= {self.min_ratio:g}x"


def comparisons() -> list[Comparison]:
    """Every target of the benchmark."""
    overhead_ratio = 1.0 / (1.0 + OVERHEAD_TARGET_PCT / 100.0)
    result = [
        Comparison(
            f"{env_id} env overhead",
            env_key(env_id),
            raw_key(env_id, "control"),
            overhead_ratio,
            overhead=True,
        )
        for env_id in ENV_IDS
    ]
    result += [
        Comparison(f"{env_id} vs {peer}", env_key(env_id), f"panda_gym/{peer}", PEER_RATIO_TARGET)
        for env_id, peer in PANDA_PEERS.items()
    ]
    result.append(
        Comparison(
            "camera vs TinyRenderer",
            "camera/factoryfloor_rgb",
            "camera/peer_tiny_renderer",
            CAMERA_RATIO_TARGET,
        )
    )
    return result


# --------------------------------------------------------------------------------- output
def machine_info() -> dict[str, Any]:
    """Platform, interpreter, library versions, CPUs and load."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "pybullet": version("pybullet"),
        "pybullet_api": pybullet.getAPIVersion(),
        "gymnasium": version("gymnasium"),
        "numpy": version("numpy"),
        "panda_gym": version("panda-gym"),
        "factoryfloor": version("factoryfloor"),
        "cpu_count": os.cpu_count(),
        "git": _git_state(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = list(os.getloadavg())
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_state() -> dict[str, Any] | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(path: Path, rgb: np.ndarray) -> str:
    """Save an RGB uint8 image as PNG (atomically); returns the path as a string."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    atomic_write_bytes(path, encoded.tobytes())
    return str(path)


def save_sample_frames(workloads: Sequence[Workload], out: Path, seed: int) -> dict[str, str]:
    """Save the camera section's sample frames beside ``out``; returns name -> path."""
    images: dict[str, str] = {}
    for workload in workloads:
        if isinstance(workload, EnvStepping) and workload.key == "camera/factoryfloor_rgb":
            obs, _ = workload.env.reset(seed=seed)
            image = obs["image"]
            big = cv2.resize(
                image,
                (image.shape[1] * UPSCALE, image.shape[0] * UPSCALE),
                interpolation=cv2.INTER_NEAREST,
            )
            h, w = image.shape[:2]
            images["obs_rgb"] = save_png(out.with_name(f"{out.stem}_obs_{w}x{h}.png"), image)
            images["obs_rgb_upscaled"] = save_png(
                out.with_name(f"{out.stem}_obs_{w}x{h}_x{UPSCALE}.png"), big
            )
            frame = workload.env.render()
            if frame is not None:
                fh, fw = frame.shape[:2]
                images["render"] = save_png(
                    out.with_name(f"{out.stem}_render_{fw}x{fh}.png"), frame
                )
        elif isinstance(workload, TinyRendererPeer):
            images["peer_tiny_renderer"] = save_png(
                out.with_name(f"{out.stem}_peer_tiny_{workload.size}.png"), workload.frame()
            )
    return images


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(result: dict[str, Any]) -> str:
    if result["ratio"] is None:
        return "n/a"
    text = f"{result['ratio']:.2f}x"
    if "overhead_pct" in result:
        text += f" (ovh {result['overhead_pct']:+.1f}%)"
    return text


def _fmt_ok(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def table_rows(m: dict[str, Measurement], results: list[dict[str, Any]]) -> list[list[str]]:
    """Rows (what, steps/s, peer, peer steps/s, ratio, target, ok): targets, then the rest."""
    rows: list[list[str]] = []
    shown: set[str] = set()
    for r in results:
        if r["subject"] not in m:
            continue
        peer = m.get(r["peer"])
        rows.append(
            [
                m[r["subject"]].label,
                _fmt_rate(m[r["subject"]].best_per_s),
                peer.label if peer else f"{r['peer']} (not measured)",
                _fmt_rate(peer.best_per_s if peer else None),
                _fmt_ratio(r),
                r["target"],
                _fmt_ok(r["ok"]),
            ]
        )
        shown.update({r["subject"], r["peer"]})
    for key, meas in m.items():
        if key not in shown:
            rows.append([meas.label, _fmt_rate(meas.best_per_s), "-", "-", "-", "-", "-"])
    return rows


def print_table(rows: list[list[str]], title: str) -> None:
    """Print the table with ``rich`` when it is importable, else as aligned plain text."""
    headers = ["what", "steps/s", "peer", "peer steps/s", "ratio", "target", "ok"]
    numeric = (1, 3)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        print(title)
        for row in [headers, ["-" * w for w in widths], *rows]:
            cells = [
                cell.rjust(w) if i in numeric else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            print("  ".join(cells).rstrip())
        return
    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if i in numeric else "left")
    styles = {"PASS": "green", "FAIL": "bold red"}
    for row in rows:
        table.add_row(*row, style=styles.get(row[-1]))
    Console(width=max(200, Console().width)).print(table)


# --------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="wall time per measurement (default 5)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="windows per measurement, interleaved across measurements; best is kept (default 3)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_results/sim_throughput.json"),
        help="JSON result path; sample PNG frames are written beside it",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma list of sections to run, of {', '.join(SECTIONS)} (default: all); "
        "a ratio needs both of its sides (overhead: envs+raw; peers: envs+panda_gym)",
    )
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown or not sections:
        parser.error(f"--only takes a comma list of {', '.join(SECTIONS)}; got {args.only!r}")
    if args.seconds <= 0 or args.repeats < 1:
        parser.error("--seconds must be > 0 and --repeats >= 1")
    args.sections = sections
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON; returns the exit status."""
    args = parse_args(argv)
    info = machine_info()
    workloads, skipped = build_workloads(args.sections, SEED)
    for section, reason in skipped.items():
        print(f"[skipped] {section}: {reason}", file=sys.stderr)
    try:
        measurements = run_round_robin(workloads, args.seconds, args.repeats)
        images = save_sample_frames(workloads, args.out, SEED)
    finally:
        for workload in workloads:
            workload.close()
    results = [c.evaluate(measurements) for c in comparisons()]
    evaluated = [r["ok"] for r in results if r["ok"] is not None]
    report = {
        "benchmark": "sim_throughput",
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "config": {
            "seconds": args.seconds,
            "repeats": args.repeats,
            "sections": [s for s in SECTIONS if s in args.sections],
            "seed": SEED,
            "image_size": IMAGE_SIZE,
            "timer": "time.perf_counter; best of the interleaved windows",
        },
        "targets": {
            "env_overhead_max_pct": OVERHEAD_TARGET_PCT,
            "panda_gym_min_ratio": PEER_RATIO_TARGET,
            "camera_min_ratio": CAMERA_RATIO_TARGET,
        },
        "skipped": skipped,
        "measurements": {k: v.to_json() for k, v in measurements.items()},
        "comparisons": results,
        "all_ok": all(evaluated) if evaluated else None,
        "images": images,
    }
    print_table(
        table_rows(measurements, results),
        f"sim throughput ({args.seconds:g} s x {len(measurements)} measurements)",
    )
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {args.out}" + "".join(f"\nwrote {p}" for p in images.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
