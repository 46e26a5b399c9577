"""The FFEP/2 conformance kit against the project's own server and controllers, and a liar."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import zmq
from edge_helpers import SPEC, LinearPolicy, running_server

from factoryfloor.edge_runtime import conformance as kit
from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.conformance.runner import spec_from_description

CLI = [sys.executable, "-m", "factoryfloor.cli"]


def _failures(results: list[kit.CheckResult]) -> list[str]:
    return [f"{r.name}: {r.detail}" for r in results if r.status == "failed"]


def test_every_server_check_passes_against_our_server():
    with running_server(LinearPolicy()) as server:
        results = kit.run_checks(kit.SERVER_CHECKS, kit.ServerTarget(server.endpoint))
    assert [r.name for r in results] == list(kit.SERVER_CHECKS)
    assert not _failures(results), _failures(results)


def test_cli_connect_writes_json_and_exits_0(tmp_path):
    out = tmp_path / "report.json"
    with running_server(LinearPolicy()) as server:
        endpoint = server.endpoint
        checks = ["describe_answers", "hello_welcome", "observation_action", "bad_payload"]
        cmd = [*CLI, "edge", "conformance", "--connect", endpoint, "--out", str(out)]
        for name in checks:
            cmd += ["--check", name]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        describe = [*CLI, "edge", "describe", "--connect", endpoint]
        described = subprocess.run(describe, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(described.stdout)["task_id"] == SPEC.task_id
    report = json.loads(out.read_text())
    assert report["protocol"] == "FFEP/2" and report["endpoint"] == endpoint
    assert [c["name"] for c in report["checks"]] == checks
    assert (report["passed"], report["failed"], report["skipped"]) == (4, 0, 0)


def test_cli_refuses_serve_without_controller():
    cmd = [*CLI, "edge", "conformance", "--serve", "--spec", "nothing.json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--controller" in done.stderr


class LyingServer:
    """A bare FFEP/2 server that hashes its specs with json.dumps and never answers BYE."""

    def __init__(self) -> None:
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind("tcp://127.0.0.1:0")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stop = threading.Event()
        text = json.dumps({"action": SPEC.action, "observation": SPEC.observation}, sort_keys=True)
        self.hash = hashlib.sha256(text.encode()).hexdigest()

    def description(self) -> dict:
        desc = {
            "protocol_version": 2, "server": "liar", "task_id": SPEC.task_id, "robot": SPEC.robot,
            "observation": SPEC.observation, "action": SPEC.action, "schema_sha256": self.hash,
            "model_sha256": SPEC.model_sha256, "control_rate_hz": SPEC.control_rate_hz,
            "max_action_age_ms": 50.0, "session_timeout_s": 10.0, "max_sessions": 4,
            "sessions": 0, "max_loop_multiple": 100,
        }  # fmt: skip
        desc["hello"] = {**SPEC.hello("controller", 20.0, SPEC.model_sha256), "protocol_version": 2}
        desc["hello"]["schema_sha256"] = self.hash
        return desc

    def serve(self) -> None:
        while not self.stop.is_set():
            if not self.socket.poll(10):
                continue
            identity, data = self.socket.recv_multipart()[:2]
            msg = p.decode(data)
            reply = self.answer(msg)
            if reply is not None:
                self.socket.send_multipart([identity, p.encode(reply)])

    def answer(self, msg: p.Message) -> p.Message | None:
        if msg.type is p.MsgType.DESCRIBE:
            payload = p.encode_json(self.description())
            return p.Message(
                p.MsgType.DESCRIPTION, 0, 0, msg.seq, 1, msg.t_send_ns, payload=payload
            )
        if msg.type is p.MsgType.HELLO:
            welcome = {**self.description(), "session_id": 7, "loop_rate_hz": 100.0}
            payload = p.encode_json(welcome)
            return p.Message(p.MsgType.WELCOME, 7, 1, msg.seq, 1, msg.t_send_ns, payload=payload)
        if msg.type is p.MsgType.OBSERVATION:
            action = p.encode_floats(np.zeros(2))
            return p.Message(
                p.MsgType.ACTION, 7, msg.seq, msg.seq, 1, msg.t_send_ns, payload=action
            )
        return None  # BYE (and everything else) goes unanswered


def test_a_lying_server_fails_the_named_checks():
    liar = LyingServer()
    thread = threading.Thread(target=liar.serve, daemon=True)
    thread.start()
    try:
        names = ["schema_hash_reproducible", "bye_acknowledged", "observation_action"]
        results = kit.run_checks(kit.SERVER_CHECKS, kit.ServerTarget(liar.endpoint), names)
    finally:
        liar.stop.set()
        thread.join(2)
        liar.socket.close(0)
    status = {r.name: r for r in results}
    assert status["observation_action"].status == "passed", status["observation_action"].detail
    assert status["schema_hash_reproducible"].status == "failed"
    assert "RFC 8785" in status["schema_hash_reproducible"].detail
    assert status["bye_acknowledged"].status == "failed"
    assert "expected BYE, got nothing" in status["bye_acknowledged"].detail


def test_spec_from_description_refuses_missing_keys():
    with pytest.raises(ValueError, match="lacks"):
        spec_from_description({"task_id": "x"}, "spec.json")


def _controller_results(command: str, spec) -> list[kit.CheckResult]:
    target = kit.ControllerTarget(command, spec, hello_timeout_s=30.0)
    return kit.run_checks(kit.CONTROLLER_CHECKS, target)


@pytest.fixture(scope="module")
def reach_spec():
    import gymnasium as gym

    from factoryfloor.stack.sim_cell import describe_env

    env = gym.make("factoryfloor/Reach-v0", robot="panda")
    try:
        return describe_env(env, "factoryfloor/Reach-v0", "panda")
    finally:
        env.close()


def test_every_scenario_passes_against_the_python_controller(reach_spec):
    command = (
        f"{sys.executable} -m factoryfloor.cli edge run-sim --task factoryfloor/Reach-v0 "
        "--robot panda --connect {endpoint} --episodes 100"
    )
    results = _controller_results(command, reach_spec)
    assert not _failures(results), _failures(results)
    skipped = {r.name for r in results if r.status == "skipped"}
    assert skipped <= {"refuses_wrong_model"}


@pytest.fixture(scope="module")
def c_controller(tmp_path_factory, repo_root):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("c") / "ffep_controller"
    build = repo_root / "examples" / "c_controller" / "build.py"
    subprocess.run([sys.executable, str(build), str(out)], check=True, capture_output=True)
    return out


def test_every_scenario_passes_against_the_c_controller(c_controller, reach_spec, tmp_path):
    hello = tmp_path / "hello.json"
    hello.write_bytes(p.encode_json(reach_spec.hello("c-reference", 20.0, None)))
    rate = reach_spec.control_rate_hz
    cycles = int(30 * rate)
    command = (
        f"{c_controller} {{endpoint}} {hello} {reach_spec.obs_size} {reach_spec.action_size} "
        f"{cycles} {rate!r} 20"
    )
    results = _controller_results(command, reach_spec)
    assert not _failures(results), _failures(results)
