"""Real-time scheduling for a control loop's thread (Linux ``SCHED_FIFO``).

A controller on an edge box runs its loop at a real-time priority so that ordinary processes
cannot delay a cycle (as ``ros2_control`` and vendor controllers do). ``realtime_priority(N)``
puts the calling thread under ``SCHED_FIFO`` at priority ``N`` for the duration of a ``with``
block and restores the previous policy afterwards. ``SCHED_RESET_ON_FORK`` is set, so threads and
processes started meanwhile (ZeroMQ's I/O threads, simulators, viewers) keep the default policy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from factoryfloor.edge_runtime.protocol import EdgeError

_POLICY_NAMES = {
    getattr(os, name): name for name in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH")
    if hasattr(os, name)
}  # fmt: skip

HOW_TO_ALLOW = (
    "run as root, give the interpreter CAP_SYS_NICE (sudo setcap cap_sys_nice+ep "
    "$(readlink -f $(which python3))), or allow the user real-time priorities (an 'rtprio' "
    "line in /etc/security/limits.conf, checked with `ulimit -r`)"
)


def check_priority(priority: int) -> None:
    """Refuse a priority this system cannot give, before anything starts.

    Raises:
        ValueError: For a priority outside the system's ``SCHED_FIFO`` range.
        EdgeError: On a system without ``SCHED_FIFO`` (not Linux).
    """
    if not hasattr(os, "sched_setscheduler"):
        raise EdgeError("real-time priorities need Linux (os.sched_setscheduler)")
    low, high = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not low <= priority <= high:
        raise ValueError(f"real-time priority {priority}: use {low}..{high} (e.g. 80)")


def set_realtime_priority(priority: int) -> None:
    """Put the calling thread under ``SCHED_FIFO`` at ``priority`` (1..99), for good.

    Raises:
        ValueError: For a priority outside the system's ``SCHED_FIFO`` range.
        EdgeError: When the system refuses (with how to allow it) or is not Linux.
    """
    check_priority(priority)
    policy = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except PermissionError:
        raise EdgeError(
            f"SCHED_FIFO priority {priority} was refused; to allow it, {HOW_TO_ALLOW}, or run "
            "without a real-time priority"
        ) from None


def set_threads_realtime(priority: int, pid: int | str = "self", prefix: str = "") -> int:
    """Put threads of process ``pid`` under ``SCHED_FIFO`` at ``priority``, for good.

    Only those whose names start with ``prefix`` (all by default). Returns the threads set.

    Raises:
        ValueError: For a priority outside the system's ``SCHED_FIFO`` range.
        EdgeError: When the system refuses (with how to allow it).
    """
    check_priority(priority)
    done = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if prefix and not Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith(prefix):
                continue
            os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(priority))
            done += 1
        except (ProcessLookupError, FileNotFoundError):  # a thread that ended meanwhile
            continue
        except PermissionError:
            raise EdgeError(f"SCHED_FIFO priority {priority} was refused; {HOW_TO_ALLOW}") from None
    return done


def set_process_realtime(priority: int) -> int:
    """Put every thread this process has now under ``SCHED_FIFO`` at ``priority``, for good.

    For a server whose library threads (ZeroMQ's I/O thread) carry its messages: call it after
    they have started. Returns the threads set.

    Raises:
        ValueError: For a priority outside the system's ``SCHED_FIFO`` range.
        EdgeError: When the system refuses (with how to allow it) or is not Linux.
    """
    set_realtime_priority(priority)  # the calling thread first: its errors say how to allow it
    return set_threads_realtime(priority)


def realtime_io_threads(priority: int) -> int:
    """Put this process's ZeroMQ I/O threads under ``SCHED_FIFO`` at ``priority``, for good.

    A real-time loop waits on them for every message: left under the default scheduler, any
    busy process on the machine delays the loop's answers (a priority inversion). Call it once
    the context has carried a message (after a handshake): the I/O thread names itself when it
    first runs. Returns the threads set; refusals raise as ``set_threads_realtime``'s do.
    """
    return set_threads_realtime(priority, prefix="ZMQbg/IO")


def scheduling_policy() -> str:
    """The calling thread's policy, e.g. ``"SCHED_FIFO 80"`` or ``"SCHED_OTHER"``."""
    if not hasattr(os, "sched_getscheduler"):
        return "unknown"
    policy = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    name = _POLICY_NAMES.get(policy, str(policy))
    priority = os.sched_getparam(0).sched_priority
    return f"{name} {priority}" if priority else name


@contextmanager
def realtime_priority(priority: int | None) -> Iterator[None]:
    """``SCHED_FIFO`` at ``priority`` for the calling thread inside the block (None: unchanged).

    Raises:
        EdgeError: When the system refuses the priority (see ``set_realtime_priority``).
    """
    if priority is None:
        yield
        return
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    set_realtime_priority(priority)
    try:
        yield
    finally:
        os.sched_setscheduler(0, *before)
