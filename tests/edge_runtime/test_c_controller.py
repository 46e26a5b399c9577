"""The reference C controller (examples/c_controller) against the Python policy server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from importlib.resources import files

import pytest

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.edge_runtime.served import BundleServedPolicy
from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig

BUNDLE = str(files("factoryfloor.policies") / "pretrained" / "reach_panda.ffpolicy")
pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)


@pytest.fixture(scope="module")
def c_controller(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("c") / "ffep_controller"
    build = repo_root / "examples" / "c_controller" / "build.py"
    subprocess.run([sys.executable, str(build), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture
def server():
    policy = BundleServedPolicy(load_bundle(BUNDLE))
    srv = PolicyServer(policy, ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=5))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.stop_event.set()
    thread.join(5)
    srv.close()


def hello_file(tmp_path, spec, **overrides):
    hello = {
        "protocol_version": 1, "controller": "c-reference", "robot": spec.robot,
        "task_id": spec.task_id, "observation": spec.observation, "action": spec.action,
        "control_rate_hz": spec.control_rate_hz, "hold_window_ms": 20.0,
        "schema_sha256": spec.schema_sha256, "model_sha256": spec.model_sha256, **overrides,
    }  # fmt: skip
    path = tmp_path / "hello.json"
    path.write_bytes(p.encode_json(hello))
    return path


def run_c(c_controller, server, hello, cycles, rate_hz, hold_ms=50):
    spec = server.spec
    cmd = [str(c_controller), server.endpoint, str(hello), str(spec.obs_size),
           str(spec.action_size), str(cycles), str(rate_hz), str(hold_ms)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_c_controller_runs_1000_cycles_against_the_python_server(c_controller, server, tmp_path):
    # The C side says it runs at the policy's rate in its HELLO, then loops at 200 Hz to show
    # the protocol's own speed (the policy is stateless; the rate is checked at the handshake).
    hello = hello_file(tmp_path, server.spec)
    done = run_c(c_controller, server, hello, 1_000, 200)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["session_id"] != 0 and result["fault"] is False
    assert result["cycles"] == 1_000 and result["fresh"] >= 900  # a few held on a busy machine
    assert result["rejected"] == 0
    assert 0 < result["rtt_us"]["p50"] < 20_000
    assert server.metrics.counters["actions_sent"] >= 900


def test_c_controller_handshake_refused_on_a_model_mismatch(c_controller, server, tmp_path):
    hello = hello_file(tmp_path, server.spec, model_sha256="00" * 32)
    done = run_c(c_controller, server, hello, 10, 100)
    assert done.returncode == 2
    assert "code 11" in done.stderr and "MODEL" not in done.stdout  # MODEL_MISMATCH = 11


def test_c_controller_latches_a_fault_when_the_server_goes_silent(c_controller, server, tmp_path):
    hello = hello_file(tmp_path, server.spec)
    answer = server.policy.act_batch

    def silent_then_late(sessions, obs):
        time.sleep(0.2)  # far beyond the 20 ms hold window
        return answer(sessions, obs)

    server.policy.act_batch = silent_then_late
    done = run_c(c_controller, server, hello, 100, 100, hold_ms=20)
    assert done.returncode == 3
    assert json.loads(done.stdout)["fault"] is True
