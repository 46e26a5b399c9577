"""The policy server as a function, and in its own process.

``served_policy`` turns ``--policy`` (a bundle path or ``expert``) into what the edge server
serves; ``serve_policy`` serves it until stopped (``factoryfloor edge serve`` is a thin wrapper);
``ServerProcess`` runs ``serve_policy`` in a child process started by ``multiprocessing`` (spawn),
which is how the demo keeps inference off the simulated controller's interpreter. No library
code starts the command line as a subprocess.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from factoryfloor.edge_runtime.auth import SecurityError, is_loopback
from factoryfloor.edge_runtime.bundle import load_bundle
from factoryfloor.edge_runtime.protocol import EdgeError
from factoryfloor.edge_runtime.realtime import set_realtime_priority
from factoryfloor.edge_runtime.serve import ServeOptions, serve
from factoryfloor.edge_runtime.served import BundleServedPolicy, ServedPolicy
from factoryfloor.edge_runtime.server import ServerConfig

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def served_policy(
    policy: str, task: str | None = None, robot: str = "panda", trust: str | Path | None = None
) -> ServedPolicy:
    """What the server serves for ``policy``: a ``.ffpolicy`` path, or ``expert`` (needs ``task``).

    Args:
        policy: A bundle path or ``expert``.
        task: Task of ``expert``.
        robot: Robot of ``expert``.
        trust: Trust store folder for the bundle (``bundle.load_bundle``).

    Raises:
        BundleError: For a missing, malformed, tampered or untrusted bundle (one line).
        ValueError: For ``expert`` without a task.
    """
    if policy == "expert":
        from factoryfloor.stack.served_expert import ExpertServedPolicy

        if not task:
            raise ValueError("--policy expert needs --task, e.g. --task factoryfloor/PickPlace-v0")
        return ExpertServedPolicy(task, robot)
    return BundleServedPolicy(load_bundle(policy, trust=trust))


def check_publisher(served: ServedPolicy, bind: str, allow_unsigned: bool) -> None:
    """Refuse to serve a bundle no trusted publisher signed on a non-loopback endpoint.

    On loopback (a test, a demo on one machine) anything loads; a robot's network gets only a
    bundle whose signature the trust store accepts, unless ``allow_unsigned`` says otherwise.

    Raises:
        SecurityError: Saying how to sign the bundle or trust its publisher.
    """
    if allow_unsigned or is_loopback(bind) or not isinstance(served, BundleServedPolicy):
        return
    signer = served.bundle.signer
    if signer is not None and signer.trusted:
        return
    what = "is not signed" if signer is None else f"is signed by {signer.key_id}, not trusted"
    raise SecurityError(
        f"refusing to serve a bundle that {what} on {bind}: sign it with `factoryfloor bundle "
        "sign BUNDLE --key KEY` and put the publisher's .pub in --trust DIR (or "
        "FACTORYFLOOR_TRUST); --allow-unsigned serves it anyway"
    )


@dataclass(frozen=True, kw_only=True)
class ServerJob:
    """Everything a server process needs (plain values: the child is spawned).

    Attributes:
        policy: A ``.ffpolicy`` path or ``"expert"``.
        task: Task of ``expert`` (ignored for bundles).
        robot: Robot of ``expert``.
        config: Server configuration (bind address, limits).
        options: Serving options (keys, metrics, ready file).
        rt_priority: Serve from a ``SCHED_FIFO`` thread at this priority (None: default
            scheduler); the ZeroMQ I/O thread created after it inherits it.
        trust: Trust store folder of publisher keys (None: ``$FACTORYFLOOR_TRUST``, else the
            package's).
        allow_unsigned: Serve an unsigned or untrusted bundle on a non-loopback bind.
    """

    policy: str
    task: str | None = None
    robot: str = "panda"
    config: ServerConfig = field(default_factory=ServerConfig)
    options: ServeOptions = field(default_factory=ServeOptions)
    rt_priority: int | None = None
    trust: str | Path | None = None
    allow_unsigned: bool = False


def serve_policy(job: ServerJob) -> int:
    """Serve ``job.policy`` until SIGINT/SIGTERM; the exit status of ``serve``.

    Raises:
        EdgeError: When ``job.rt_priority`` is refused by the system.
    """
    if job.rt_priority is not None:
        set_realtime_priority(job.rt_priority)
    served = served_policy(job.policy, job.task, job.robot, job.trust)
    check_publisher(served, job.config.bind, job.allow_unsigned)
    return serve(served, job.config, job.options)


def _child(job: ServerJob, log_path: str) -> None:
    """The server process: its output goes to ``log_path``; exits with ``serve``'s status."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.exit(serve_policy(job))


class ServerProcess:
    """``serve_policy`` in a spawned child process, bound to a free loopback port.

    Args:
        job: What to serve; ``options.ready_file`` is set here.
        folder: Where the ready file and the server's log (``server.log``) go.
    """

    def __init__(self, job: ServerJob, folder: Path) -> None:
        self.ready_file, self.log = folder / "server.ready", folder / "server.log"
        self.job = replace(job, options=replace(job.options, ready_file=self.ready_file))
        self.process = mp.get_context("spawn").Process(
            target=_child, args=(self.job, str(self.log)), name="ff-policy-server", daemon=True
        )

    def start(self) -> str:
        """Start the child and wait until it serves; its endpoint.

        Raises:
            EdgeError: With the end of its log, when it exits or hangs before serving.
        """
        self.process.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready_file.exists():
            if not self.process.is_alive() or time.monotonic() > deadline:
                self.process.kill()
                tail = " | ".join(self.log_tail(600).splitlines()[-3:])
                raise EdgeError(f"the policy server did not start: {tail}")
            time.sleep(0.05)
        return self.ready_file.read_text(encoding="utf-8").strip()

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.process.is_alive()

    def stop(self) -> bool:
        """SIGTERM the child; True when it was alive and stopped cleanly (exit 0)."""
        alive = self.process.is_alive()
        self.process.terminate()
        self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            return False
        return alive and self.process.exitcode == 0

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log."""
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return text[-chars:].strip()
