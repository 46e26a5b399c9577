"""What a camera policy costs on the edge, against its peers measured in the same run.

1. **Inference**: the camera bundle's ``act`` on one observation (real-cell state plus two
   uint8 84x84x3 images), p50/p99 on one CPU thread, against bare onnxruntime running the same
   graph on the same inputs (one thread, ``InferenceSession.run``). Target: p99 <= 5 ms.
2. **Edge round trip at 25 Hz**: ``factoryfloor edge serve`` in its own process serving the
   camera bundle, a controller sending real camera-mode observations (uint8 image payloads) at
   25 Hz and waiting for each action; a deadline miss is an action not back within the period
   (40 ms). The same loop against the shipped state-only PickPlace bundle is the peer; the two
   take turns (``--rounds``), so that the machine's noise falls on both alike. Target: 0 misses
   over >= 2 minutes of camera loop.
3. **Env steps/s**: PickPlace in ``obs_mode="camera"`` against ``obs_mode="state"``
   (``camera_render.py`` has every task and each camera alone).

The camera bundle is ``--bundle``, or, without it, one exported from a few-step camera
training run made here (latency depends on the graph, not on its weights). The machine's
calibration line (``../shared/tools/calibrate.py``) is recorded with the figures.

Usage::

    python benchmarks/camera_policy.py --out bench_results/camera_policy.json
    python benchmarks/camera_policy.py --edge-seconds 10 --rounds 2  # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import onnxruntime as ort

import factoryfloor  # registers the envs
from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.metrics import LatencyStats
from factoryfloor.edge_runtime.served import BundleServedPolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from camera_render import best_rates, env_stepper
from edge_slowdown import machine_calibration

TASK = "factoryfloor/PickPlace-v0"
STATE_BUNDLE = Path(factoryfloor.__file__).parent / "policies" / "pretrained"
STATE_BUNDLE = STATE_BUNDLE / "pick_place_panda.ffpolicy"
RATE_HZ = 25.0
P99_TARGET_MS = 5.0
TINY_RUN = {
    "timesteps": 8, "demo_episodes": 1, "bc_epochs": 1, "bc_batch_size": 16,
    "critic_pretrain_steps": 1, "batch_size": 16, "buffer_size": 400, "eval_every_steps": 1000,
    "eval_episodes": 1, "progress_bar": False, "tensorboard": False,
}  # fmt: skip


def make_camera_bundle(folder: Path) -> Path:
    """A camera bundle exported from a few-step ``train --obs camera`` run in ``folder``."""
    import yaml

    from factoryfloor.cli import main

    config, run, out = folder / "tiny.yaml", folder / "run", folder / "camera.ffpolicy"
    config.write_text(yaml.safe_dump(TINY_RUN))
    args = ["train", TASK, "--obs", "camera", "--out", str(run), "--config", str(config),
            "--no-progress"]  # fmt: skip
    if main(args) != 0 or main(["export", str(run), "--out", str(out), "--checkpoint", "last"]):
        raise SystemExit("could not make a camera bundle; pass --bundle")
    return out


def camera_observations(keys: list[str], n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` camera-mode observations of random-action PickPlace episodes (the actor's keys)."""
    env = gym.make(TASK, obs_mode="camera")
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(n):
        out.append({k: obs[k] for k in keys})
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return out


def timed(call: Any, inputs: list[Any], seconds: float) -> dict[str, float]:
    """p50/p99/max (ms) of ``call(x)`` cycling over ``inputs`` for ``seconds``."""
    for x in inputs[:20]:
        call(x)  # warm-up
    samples = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter_ns()
        call(inputs[i % len(inputs)])
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        i += 1
    a = np.asarray(samples)
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}  # fmt: skip


def inference(bundle: Path, obs: list[dict[str, np.ndarray]], seconds: float) -> dict[str, Any]:
    """The bundle's ``act`` against bare onnxruntime on its graph, one thread each."""
    policy = load_bundle(bundle, backend="onnxruntime")
    keys = list(policy.manifest["observation"]["keys"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    graph = bundle_graph(bundle)
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    feeds = [{k: o[k][None] for k in keys} for o in obs]
    ours = timed(lambda o: policy.act(o), obs, seconds)
    bare = timed(lambda f: session.run(None, f), feeds, seconds)
    return {"bundle_act": ours, "bare_onnxruntime": bare,
            "p99_ratio": ours["p99_ms"] / bare["p99_ms"]}  # fmt: skip


def bundle_graph(bundle: Path) -> bytes:
    """The ONNX member of a bundle (a zip)."""
    import zipfile

    from factoryfloor.edge_runtime import bundle as bd

    with zipfile.ZipFile(bundle) as archive:
        return archive.read(bd.ONNX)


def start_server(bundle: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``factoryfloor edge serve`` of ``bundle`` in its own process; its endpoint."""
    ready = folder / f"ready-{bundle.stem}"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "factoryfloor.cli", "edge", "serve", "--policy", str(bundle),
           "--bind", "tcp://127.0.0.1:0", "--ready-file", str(ready),
           "--report-every", "3600"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the policy server for {bundle} did not start")
        time.sleep(0.05)
    return proc, ready.read_text().strip()


class Loop:
    """A 25 Hz controller against one server: one observation per tick, its action awaited."""

    def __init__(self, bundle: Path, endpoint: str, obs: list[dict[str, np.ndarray]]) -> None:
        served = BundleServedPolicy(load_bundle(bundle, backend="auto"))
        self.endpoint, self.spec = endpoint, served.spec
        self.obs, self.i = obs, 0
        self.trips, self.misses, self.cycles = LatencyStats(window=1_000_000), 0, 0
        self.payload_bytes = served.spec.obs_bytes

    def run(self, seconds: float) -> None:
        """``seconds`` of ticks at ``RATE_HZ``; a miss is an action not back by the next tick.

        Each turn is a session of its own (handshake untimed): while the other loop takes its
        turn this one sends nothing, and the server ends idle sessions.
        """
        self.client = EdgeClient(self.endpoint)
        self.client.handshake(self.spec.hello("bench", 40.0, self.spec.model_sha256))
        self.i = 0
        try:
            self._ticks(seconds)
        finally:
            self.client.close()

    def _ticks(self, seconds: float) -> None:
        period = 1.0 / RATE_HZ
        due = time.perf_counter()
        for _ in range(int(seconds * RATE_HZ)):
            due += period
            t0 = time.perf_counter()
            self.client.send_observation(self.obs[self.i % len(self.obs)], self.i == 0)
            action = self.client.receive_action(max(due - time.perf_counter(), 0.0))
            took = time.perf_counter() - t0
            self.cycles += 1
            if action is None or time.perf_counter() > due:
                self.misses += 1
            else:
                self.trips.add(took)
            self.i += 1
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            else:
                due = time.perf_counter()  # a late tick starts a new grid (counted above)

    def summary(self) -> dict[str, Any]:
        """Cycles, misses and round-trip percentiles (us)."""
        return {"cycles": self.cycles, "deadline_misses": self.misses,
                "payload_bytes": self.payload_bytes,
                "round_trip_us": self.trips.summary_us()}  # fmt: skip


def edge(camera: Path, obs: list[dict[str, np.ndarray]], seconds: float, rounds: int,
         folder: Path) -> dict[str, Any]:  # fmt: skip
    """The 25 Hz loop against the camera bundle and the state bundle, taking turns."""
    state_obs = state_observations(STATE_BUNDLE, len(obs))
    servers = {"camera": start_server(camera, folder), "state": start_server(STATE_BUNDLE, folder)}
    try:
        loops = {
            "camera": Loop(camera, servers["camera"][1], obs),
            "state": Loop(STATE_BUNDLE, servers["state"][1], state_obs),
        }
        for r in range(rounds):
            for loop in loops.values():
                loop.run(seconds / rounds)
            print(f"  edge round {r + 1}/{rounds} done", flush=True)
        return {name: loop.summary() for name, loop in loops.items()}
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)


def state_observations(bundle: Path, n: int) -> list[dict[str, np.ndarray]]:
    """``n`` state-mode PickPlace observations (the state bundle's keys)."""
    keys = list(load_bundle(bundle, backend="numpy").manifest["observation"]["keys"])
    env = gym.make(TASK)
    env.action_space.seed(1)
    obs, _ = env.reset(seed=1)
    out = []
    for _ in range(n):
        out.append({k: obs[k] for k in keys})
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return out


def env_rates(seconds: float) -> dict[str, float]:
    """PickPlace env steps/s in camera and state mode (best of 3 interleaved windows)."""
    envs = {mode: env_stepper(TASK, mode, 84) for mode in ("camera", "state")}
    rates = best_rates({m: step for m, (_, step) in envs.items()}, seconds, 3)
    for env, _ in envs.values():
        env.close()
    return {**rates, "camera_over_state": rates["camera"] / rates["state"]}


def table(r: dict[str, Any]) -> str:
    """The results as a text table."""
    inf, e, s = r["inference"], r["edge"], r["env_steps_per_s"]
    lines = [
        f"calibration: {json.dumps(r['calibration'])}",
        f"{'measure':44} {'camera':>14} {'peer':>14} {'ratio':>7}",
        f"{'inference p50 (ms), peer: bare onnxruntime':44} {inf['bundle_act']['p50_ms']:14.2f} "
        f"{inf['bare_onnxruntime']['p50_ms']:14.2f} "
        f"{inf['bundle_act']['p50_ms'] / inf['bare_onnxruntime']['p50_ms']:7.2f}",
        f"{'inference p99 (ms), target <= 5':44} {inf['bundle_act']['p99_ms']:14.2f} "
        f"{inf['bare_onnxruntime']['p99_ms']:14.2f} {inf['p99_ratio']:7.2f}",
    ]
    for q in ("p50", "p99"):
        c, p = e["camera"]["round_trip_us"][q], e["state"]["round_trip_us"][q]
        lines.append(f"{'edge round trip ' + q + ' (us), peer: state bundle':44} {c:14.0f} "
                     f"{p:14.0f} {c / p if p else float('nan'):7.2f}")  # fmt: skip
    lines.append(
        f"{'25 Hz deadline misses / cycles':44} "
        f"{e['camera']['deadline_misses']:>6}/{e['camera']['cycles']:<7} "
        f"{e['state']['deadline_misses']:>6}/{e['state']['cycles']:<7}"
    )
    lines.append(f"{'observation payload (bytes)':44} {e['camera']['payload_bytes']:14,} "
                 f"{e['state']['payload_bytes']:14,}")  # fmt: skip
    lines.append(f"{'env steps/s, peer: state mode':44} {s['camera']:14.0f} {s['state']:14.0f} "
                 f"{s['camera_over_state']:7.3f}")  # fmt: skip
    lines.append("verdict: " + ", ".join(f"{k} {'met' if v else 'MISSED'}"
                                         for k, v in r["targets"].items()))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, help="camera bundle (default: one made here)")
    p.add_argument("--inference-seconds", type=float, default=10.0)
    p.add_argument("--edge-seconds", type=float, default=120.0, help="camera loop, in all")
    p.add_argument("--rounds", type=int, default=4, help="turns of camera and state loops")
    p.add_argument("--env-seconds", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=Path("bench_results/camera_policy.json"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results: dict[str, Any] = {"calibration": machine_calibration()}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or make_camera_bundle(Path(tmp))
        keys = list(load_bundle(bundle, backend="onnxruntime").manifest["observation"]["keys"])
        obs = camera_observations(keys, 200)
        print("inference ...", flush=True)
        results["inference"] = inference(bundle, obs, args.inference_seconds)
        print(f"edge loops at 25 Hz ({args.edge_seconds:.0f} s each) ...", flush=True)
        results["edge"] = edge(bundle, obs, args.edge_seconds, args.rounds, Path(tmp))
    results["env_steps_per_s"] = env_rates(args.env_seconds)
    results["bundle"] = str(args.bundle) if args.bundle else "made by this run (few steps)"
    results["targets"] = {
        "inference p99 <= 5 ms": results["inference"]["bundle_act"]["p99_ms"] <= P99_TARGET_MS,
        "0 deadline misses at 25 Hz": results["edge"]["camera"]["deadline_misses"] == 0,
        "edge loop >= 2 min": args.edge_seconds >= 120,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
