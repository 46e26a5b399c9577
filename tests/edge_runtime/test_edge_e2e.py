"""End to end over loopback TCP: a served policy drives the simulated controller, and faults
injected into the server process are met as the fault model requires."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import ControllerRuntime
from factoryfloor.edge_runtime.safety import State
from factoryfloor.edge_runtime.served import BundleServedPolicy
from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig
from factoryfloor.policies.evaluate import evaluate
from factoryfloor.stack.served_expert import ExpertServedPolicy
from factoryfloor.stack.sim_cell import SimController, run_sim

PICK_PLACE = "factoryfloor/PickPlace-v0"
BUNDLE = str(files("factoryfloor.policies") / "pretrained" / "pick_place_panda.ffpolicy")
SEED = 5_000_000
PERIOD_S, HOLD_S = 0.04, 0.02  # PickPlace runs at 25 Hz; the default hold window


def serve_in_thread(policy):
    server = PolicyServer(policy, ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(
    ("task", "policy", "episodes"),
    [
        (PICK_PLACE, "bundle", 3),
        ("factoryfloor/Reach-v0", "expert", 5),
    ],
)
def test_served_policy_drives_the_sim_as_in_process_evaluation_does(task, policy, episodes):
    served = (
        BundleServedPolicy(load_bundle(BUNDLE)) if policy == "bundle" else ExpertServedPolicy(task)
    )
    server, thread = serve_in_thread(served)
    try:
        # the action range as the rate limit: the wire alone, which must change nothing
        report = run_sim(task, server.endpoint, episodes, seed=SEED, max_change=np.full(4, 2.0))
    finally:
        server.stop_event.set()
        thread.join(5)
        server.close()
    local = evaluate(task, BUNDLE if policy == "bundle" else "expert", episodes, seed=SEED)
    assert report["state"] == "RUNNING" and report["safety"]["held"] == 0
    assert [e["success"] for e in report["episodes"]] == list(local.successes)
    assert [e["steps"] for e in report["episodes"]] == list(local.episode_lengths)
    assert report["loop"]["rate_hz"] == pytest.approx(1 / PERIOD_S if task == PICK_PLACE else 25)


def start_server_process(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    ready = tmp_path / "ready"
    cmd = [
        sys.executable, "-m", "factoryfloor.cli", "edge", "serve", "--policy", BUNDLE,
        "--bind", "tcp://127.0.0.1:0", "--ready-file", str(ready), "--report-every", "60",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    return proc, ready.read_text().strip()


def run_until_fault(runtime: ControllerRuntime, max_cycles: int = 200) -> None:
    for _ in range(max_cycles):
        if runtime.cycle().state is State.FAULT:
            return
    raise AssertionError(f"no FAULT after {max_cycles} cycles: {runtime.safety.state}")


def connected_runtime(endpoint: str) -> tuple[ControllerRuntime, SimController]:
    controller = SimController(PICK_PLACE, episodes=100, seed=SEED)
    runtime = ControllerRuntime(controller, EdgeClient(endpoint), hold_window_s=HOLD_S)
    runtime.rearm()
    for _ in range(15):  # mid-episode, arm moving
        assert runtime.cycle().state is State.RUNNING
    return runtime, controller


def test_server_killed_mid_episode_controller_holds_brakes_and_latches_fault(tmp_path):
    proc, endpoint = start_server_process(tmp_path)
    runtime, controller = connected_runtime(endpoint)
    try:
        speed_before = float(np.linalg.norm(controller._tcp_velocity()))
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        run_until_fault(runtime)
        report = runtime.report(0)
        assert report.state == "FAULT" and "hold window" in report.reason
        # braking starts once the hold window past the missing action's due time is spent
        assert PERIOD_S + HOLD_S <= report.fault_detected_after_s <= PERIOD_S + HOLD_S + 0.03
        assert report.standstill_after_s is not None and report.standstill_after_s < 1.0
        assert speed_before > 0.01 and controller.status().standstill
        assert runtime.cycle().state is State.FAULT  # latched
    finally:
        runtime.client.close()
        controller.close()
        proc.kill()


def test_server_stopped_then_continued_fault_stays_latched_until_rearm(tmp_path):
    proc, endpoint = start_server_process(tmp_path)
    runtime, controller = connected_runtime(endpoint)
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        run_until_fault(runtime)
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.2)  # the server answers again (the observations queued while stopped)
        for _ in range(5):
            assert runtime.cycle().state is State.FAULT  # fresh actions do not un-latch
        runtime.rearm()  # the operator's explicit re-arm: a new session
        states = {runtime.cycle().state for _ in range(10)}
        assert states == {State.RUNNING}
    finally:
        runtime.client.close()
        controller.close()
        proc.kill()


def test_cli_serve_expert_and_run_sim_with_reports(tmp_path, capsys):
    from factoryfloor.cli import main

    ready = tmp_path / "ready"
    cmd = [
        sys.executable, "-m", "factoryfloor.cli", "edge", "serve", "--policy", "expert",
        "--task", "factoryfloor/Reach-v0", "--bind", "tcp://127.0.0.1:0",
        "--ready-file", str(ready), "--metrics-jsonl", str(tmp_path / "server.jsonl"),
    ]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        jsonl = tmp_path / "sim.jsonl"
        code = main([
            "edge", "run-sim", "--task", "factoryfloor/Reach-v0", "--connect",
            ready.read_text().strip(), "--episodes", "3", "--report-every", "0.2",
            "--metrics-jsonl", str(jsonl),
        ])  # fmt: skip
        assert code == 0
        out = capsys.readouterr().out
        assert "3 episodes, success rate 1.0, state RUNNING" in out
        reports = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert len(reports) >= 2 and reports[-1]["controller"]["episodes"] == 3
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0  # a clean stop on SIGTERM
    snapshot = json.loads((tmp_path / "server.jsonl").read_text().splitlines()[-1])
    assert snapshot["counters"]["actions_sent"] == reports[-1]["safety"]["fresh"]
