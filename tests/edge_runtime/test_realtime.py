"""Real-time scheduling of the control loop: SCHED_FIFO inside the block, restored after, a clear
error with the fix when the system refuses, and ControllerRuntime.run under it."""

from __future__ import annotations

import os

import pytest
from edge_helpers import LinearPolicy, running_server
from test_runtime import RecordingRobot

from factoryfloor.edge_runtime import realtime
from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import ControllerRuntime
from factoryfloor.edge_runtime.protocol import EdgeError


def _fifo_allowed() -> bool:
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        return False
    os.sched_setscheduler(0, *before)
    return True


needs_fifo = pytest.mark.skipif(
    not _fifo_allowed(), reason="this machine refuses SCHED_FIFO (no CAP_SYS_NICE)"
)


def test_the_default_scheduler_is_reported_and_none_changes_nothing():
    assert realtime.scheduling_policy() == "SCHED_OTHER"
    with realtime.realtime_priority(None):
        assert realtime.scheduling_policy() == "SCHED_OTHER"


@needs_fifo
def test_fifo_inside_the_block_and_the_old_policy_after_it():
    with realtime.realtime_priority(7):
        assert realtime.scheduling_policy() == "SCHED_FIFO 7"
    assert realtime.scheduling_policy() == "SCHED_OTHER"


@needs_fifo
def test_the_old_policy_comes_back_when_the_block_raises():
    with pytest.raises(KeyError), realtime.realtime_priority(3):
        raise KeyError("boom")
    assert realtime.scheduling_policy() == "SCHED_OTHER"


def test_a_priority_out_of_range_says_the_range():
    with pytest.raises(ValueError, match=r"1\.\.99"):
        realtime.set_realtime_priority(0)
    assert realtime.scheduling_policy() == "SCHED_OTHER"


def test_a_refused_priority_says_how_to_allow_it(monkeypatch):
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with pytest.raises(EdgeError, match="CAP_SYS_NICE") as info:
        realtime.set_realtime_priority(80)
    assert "ulimit -r" in str(info.value) and "without a real-time priority" in str(info.value)


@needs_fifo
def test_the_controller_loop_runs_under_fifo_and_gives_it_back():
    seen: list[str] = []

    class Robot(RecordingRobot):
        def apply_action(self, action):
            seen.append(realtime.scheduling_policy())
            super().apply_action(action)

    robot = Robot()
    with running_server(LinearPolicy()) as server:
        client = EdgeClient(server.endpoint)
        runtime = ControllerRuntime(robot, client, hold_window_s=0.02, rt_priority=11)
        runtime.rearm()
        report = runtime.run(max_cycles=20)
        client.close()
    assert report.state == "RUNNING" and len(seen) >= 15
    assert set(seen) == {"SCHED_FIFO 11"}
    assert realtime.scheduling_policy() == "SCHED_OTHER"


def test_a_bad_priority_is_refused_when_the_runtime_is_made_not_after_the_handshake():
    client = EdgeClient("tcp://127.0.0.1:9")  # nothing listens: a handshake would time out
    with pytest.raises(ValueError, match=r"use 1\.\.99"):
        ControllerRuntime(RecordingRobot(), client, rt_priority=100)
    client.close()


def test_run_sim_cli_says_what_priorities_are_allowed(capsys):
    from factoryfloor.cli import main

    code = main([
        "edge", "run-sim", "--task", "factoryfloor/Reach-v0", "--connect",
        "tcp://127.0.0.1:9", "--episodes", "1", "--rt-priority", "0",
    ])  # fmt: skip
    assert code == 2
    assert "real-time priority 0: use 1..99" in capsys.readouterr().err


def test_serve_cli_refuses_a_bad_priority_before_loading_anything(capsys):
    from factoryfloor.cli import main

    code = main(["edge", "serve", "--policy", "missing.ffpolicy", "--rt-priority", "100"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "real-time priority 100: use 1..99" in err[0]


IO_THREADS = """
import os, zmq
from factoryfloor.edge_runtime import realtime
import time
socket = zmq.Context.instance().socket(zmq.DEALER)
names = lambda: [open(f"/proc/self/task/{t}/comm").read() for t in os.listdir("/proc/self/task")]
deadline = time.monotonic() + 5
while not any(n.startswith("ZMQbg/IO") for n in names()) and time.monotonic() < deadline:
    time.sleep(0.01)  # the I/O thread names itself once it runs
print(realtime.realtime_io_threads(11))
for tid in sorted(os.listdir("/proc/self/task")):
    name = open(f"/proc/self/task/{tid}/comm").read().strip()
    print(name, os.sched_getscheduler(int(tid)) & 0xFF, os.sched_getparam(int(tid)).sched_priority)
"""


@needs_fifo
def test_a_real_time_loop_takes_its_zeromq_io_thread_with_it():
    """Else any busy process delays the messages the loop waits for (a priority inversion)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", IO_THREADS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    count, *threads = done.stdout.strip().splitlines()
    assert int(count) == 1
    rows = [line.rsplit(" ", 2) for line in threads]
    assert [(n, int(pol), int(pri)) for n, pol, pri in rows if n.startswith("ZMQbg/IO")] == [
        ("ZMQbg/IO/0", os.SCHED_FIFO, 11)
    ]
    assert all(int(pol) == os.SCHED_OTHER for n, pol, _ in rows if not n.startswith("ZMQbg/IO"))


@needs_fifo
def test_serve_runs_every_thread_real_time_when_asked(tmp_path):
    import subprocess
    import sys
    import time
    from importlib.resources import files

    bundle = files("factoryfloor.policies") / "pretrained" / "pick_place_panda.ffpolicy"
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "factoryfloor.cli", "edge", "serve", "--policy", str(bundle),
         "--bind", "tcp://127.0.0.1:0", "--ready-file", str(ready), "--rt-priority", "12"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read().decode() if proc.poll() is not None else ""
        tids = os.listdir(f"/proc/{proc.pid}/task")
        policies = {(os.sched_getscheduler(int(t)) & 0xFF, os.sched_getparam(int(t)).sched_priority)
                    for t in tids}  # fmt: skip
        assert policies == {(os.SCHED_FIFO, 12)} and len(tids) >= 2  # the I/O thread too
    finally:
        proc.terminate()
        proc.wait(10)
