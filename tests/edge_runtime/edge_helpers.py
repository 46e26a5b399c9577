"""Shared helpers of the edge runtime tests: a small served policy and a server thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import zmq

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig
from factoryfloor.edge_runtime.spec import PolicySpec

OBS = [{"name": "observation", "shape": [6], "units": "m"}]
ACT = [{"name": "action", "shape": [2], "low": [-1.0, -1.0], "high": [1.0, 1.0], "units": "-"}]
SPEC = PolicySpec(
    task_id="test/Task-v0",
    robot="panda",
    control_rate_hz=100.0,
    observation=OBS,
    action=ACT,
    model_sha256="ab" * 32,
)


class LinearPolicy:
    """action = obs[:2] / 10 (a known function of the observation); records every batch."""

    spec = SPEC

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.resets: list[int] = []
        self.delay_s = delay_s

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        self.batches.append(list(sessions))
        if self.delay_s:
            time.sleep(self.delay_s)
        return obs[:, :2] / 10.0

    def reset(self, session: int) -> None:
        self.resets.append(session)


def hello(**overrides: object) -> dict:
    msg = {
        "protocol_version": p.PROTOCOL_VERSION, "controller": "test", "robot": "panda",
        "task_id": "test/Task-v0",
        "observation": OBS, "action": ACT, "control_rate_hz": 100.0, "hold_window_ms": 20.0,
        "schema_sha256": p.schema_sha256(OBS, ACT), "model_sha256": None,
    }  # fmt: skip
    msg.update(overrides)
    return msg


@contextmanager
def running_server(policy: object, **config: object) -> Iterator[PolicyServer]:
    """A PolicyServer on a free loopback port, served from a thread."""
    server = PolicyServer(
        policy, ServerConfig(bind="tcp://127.0.0.1:0", poll_timeout_ms=10, **config)
    )  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop_event.set()
        thread.join(5)
        server.close()


class RawPeer:
    """A bare DEALER that sends hand-made frames and reads raw answers."""

    def __init__(self, endpoint: str) -> None:
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def send(self, frame: bytes | list[bytes]) -> None:
        if isinstance(frame, list):
            self.socket.send_multipart(frame)
        else:
            self.socket.send(frame)

    def recv(self, timeout_s: float = 2.0) -> p.Message | None:
        if not self.socket.poll(int(timeout_s * 1e3)):
            return None
        return p.decode(self.socket.recv())

    def close(self) -> None:
        self.socket.close(0)
