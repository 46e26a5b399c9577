"""The control rate is exactly 1 / control_dt_s on both sides: a non-integer rate handshakes."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from edge_helpers import running_server

from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import ControllerRuntime
from factoryfloor.sim.backend import PhysicsConfig
from factoryfloor.stack.sim_cell import SimController, describe_env

PHYSICS = PhysicsConfig(substeps=7)  # 300 / 7 = 42.857... Hz


class StandStill:
    """Serves zero TCP motion, gripper open, with the spec of a 42.857 Hz cell."""

    def __init__(self, spec) -> None:
        self.spec = spec

    def act_batch(self, sessions, obs):
        action = np.zeros((len(sessions), self.spec.action_size), np.float32)
        action[:, -1] = 1.0
        return action

    def reset(self, session):
        pass


def test_a_non_integer_control_rate_passes_the_handshake():
    cell = SimController("factoryfloor/Reach-v0", episodes=1, env_kwargs={"physics": PHYSICS})
    try:
        # the server's side as a bundle states it: export writes 1 / control_dt_s
        spec = replace(
            describe_env(cell.env, "factoryfloor/Reach-v0", "panda"),
            control_rate_hz=1.0 / PHYSICS.control_dt_s,
        )
        assert math.isclose(spec.control_rate_hz, 300 / 7) and spec.control_rate_hz % 1 > 0.5
        assert cell.description.control_rate_hz == spec.control_rate_hz  # not round()ed
        with running_server(StandStill(spec)) as server:
            client = EdgeClient(server.endpoint)
            try:
                runtime = ControllerRuntime(cell, client, name="rate-test")
                welcome = runtime.rearm()
                report = runtime.run(max_cycles=10)
            finally:
                client.close()
        assert welcome["session_id"] > 0
        assert report.state == "RUNNING" and report.safety["fresh"] >= 8
        assert math.isclose(report.loop["rate_hz"], 300 / 7)
    finally:
        cell.close()
