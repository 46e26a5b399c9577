"""A controller loop faster than the policy: ``k`` loop cycles per policy period.

A robot's own loop usually runs faster than its policy (a 500 Hz joint loop under a 25 Hz
policy). ``MultiRateRuntime`` states ``loop_rate_hz = k * control_rate_hz`` in HELLO
(``docs/protocol.md``, section 7), sends one OBSERVATION every ``k``-th loop cycle, polls for
the answer on the cycles in between, and spreads each action over ``k`` loop cycles: the robot's
adapter gets ``apply_step(command, 1 / k)`` on every cycle, so an action that commands one
policy period is applied over one policy period. The safety layer judges each action at the
policy rate, as a single-rate controller's would (limits per policy period, hold window in
time); when ``k`` cycles have passed without a fresh action, it decides HOLD (the last command
goes on being spread) or, past the hold window, BRAKING.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import ControllerRuntime, RobotController
from factoryfloor.edge_runtime.loop import FixedRateLoop
from factoryfloor.edge_runtime.safety import Decision, State
from factoryfloor.edge_runtime.session_check import MAX_LOOP_MULTIPLE

_STOPPING = (State.BRAKING, State.FAULT)


class MultiRateRuntime(ControllerRuntime):
    """``ControllerRuntime`` with a loop ``loop_multiple`` times faster than the policy.

    Args:
        controller: The robot's adapter; it must implement ``apply_step``.
        client: A connected ``EdgeClient``.
        loop_multiple: Loop cycles per policy period (1..100).
        **settings: ``ControllerRuntime``'s other arguments (``hold_window_s``, ...), except
            ``loop_rate_hz``.

    Raises:
        ValueError: For a multiple outside 1..100, or an adapter without ``apply_step``.
    """

    def __init__(
        self, controller: RobotController, client: EdgeClient, loop_multiple: int, **settings: Any
    ) -> None:
        if not 1 <= loop_multiple <= MAX_LOOP_MULTIPLE or isinstance(loop_multiple, bool):
            raise ValueError(f"loop_multiple={loop_multiple!r}: use an integer in 1..100")
        if type(controller).apply_step is RobotController.apply_step:
            raise ValueError(f"{type(controller).__name__} has no apply_step: it runs single-rate")
        super().__init__(controller, client, **settings)  # limits at the policy period
        self.k = int(loop_multiple)
        self.loop = FixedRateLoop(self.rate_hz * self.k)
        self._phase = 0
        self._current: np.ndarray | None = None  # the command being spread
        self._steps_left = 0  # loop cycles it still covers
        self._answered = True  # the last observation's answer came

    def hello(self) -> dict[str, Any]:
        """The HELLO payload, with ``loop_rate_hz``."""
        return self.controller.description.hello(
            self.name, self.safety.config.hold_window_s * 1e3, self.model_sha256,
            loop_rate_hz=self.k * self.rate_hz,
        )  # fmt: skip

    def rearm(self) -> dict[str, Any]:
        """Leave FAULT and open a new session (``ControllerRuntime.rearm``)."""
        welcome = super().rearm()
        self.loop = FixedRateLoop(self.rate_hz * self.k)
        self._phase, self._current, self._steps_left, self._answered = 0, None, 0, True
        return welcome

    def _cycle(self) -> Decision:
        due, live, began = self._start_cycle()
        sent = waited = began
        phase, self._phase = self._phase, (self._phase + 1) % self.k
        action = None
        if live:
            if phase == 0:
                obs, start = self.controller.read_state()
                self.client.send_observation(obs, episode_start=start)
                sent, self._answered = time.monotonic(), False
            if not self._answered:
                action = self.client.receive_action(max(0.0, self.wait_until(due) - sent))
                self._answered = action is not None
            waited = time.monotonic()
            if self.client.session_closed:
                return self._failed(f"the server closed the session: {self.client.session_closed}")
        decision = self._decide(waited, action)
        self._trace(due, began, sent, waited, action is not None, decision)
        self._act_step(decision)
        self.end_cycle(waited)
        return decision

    def _decide(self, now: float, action: np.ndarray | None) -> Decision:
        """A fresh action, or the current command's next step, or the safety layer's call."""
        if action is not None or self._steps_left == 0 or self.safety.state in _STOPPING:
            decision = self.safety.decide(now, action)
            if decision.command is not None and decision.state is not State.ARMED:
                self._current, self._steps_left = decision.command, self.k
            if action is not None and decision.state is State.RUNNING:
                self.last_fresh_s = now
            return decision
        return Decision(self.safety.state, self._current)

    def _act_step(self, decision: Decision) -> None:
        now = time.monotonic()
        if decision.command is not None and decision.state in (State.RUNNING, State.HOLD):
            self.controller.apply_step(decision.command, 1.0 / self.k)
            self._steps_left -= 1
        elif decision.command is not None:  # ARMED: stand still until the first action
            self.controller.hold(decision.command)
        else:
            self._brake(now)
