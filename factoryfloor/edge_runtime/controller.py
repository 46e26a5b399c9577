"""The controller side: the ``RobotController`` interface and the runtime that drives it.

A real robot's adapter (or the simulated cell in ``factoryfloor.stack.sim_cell``)
implements ``RobotController``. ``ControllerRuntime`` runs it at the policy's control rate:
each cycle it reads the state, sends it to the policy server, waits for the answer at most until
the cycle's budget or the hold deadline, lets the ``SafetyLayer`` decide, and applies the
command or brakes. A latched FAULT ends ``run``; ``rearm`` (an explicit operator action) starts a
new session.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.fault_trace import TRACE_CYCLES, CycleTrace, explain
from factoryfloor.edge_runtime.loop import FixedRateLoop
from factoryfloor.edge_runtime.realtime import (
    check_priority,
    realtime_io_threads,
    realtime_priority,
)
from factoryfloor.edge_runtime.safety import Decision, SafetyConfig, SafetyLayer, State
from factoryfloor.edge_runtime.spec import PolicySpec
from factoryfloor.robots import get_robot_spec, robot_names


@dataclass
class ControllerStatus:
    """A controller's report.

    Attributes:
        standstill: The robot does not move (after braking).
        finished: The controller has no more work (e.g. its episodes are done).
        info: Anything else worth reporting (success counts, timings).
    """

    standstill: bool
    finished: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class RobotController(ABC):
    """What a robot's adapter implements for the edge runtime."""

    description: PolicySpec  # what it tells the server in HELLO (``model_sha256`` unused)

    @abstractmethod
    def read_state(self) -> tuple[np.ndarray | Mapping[str, np.ndarray], bool]:
        """The observation and whether it starts an episode.

        The observation is flat float32 in spec order, or (specs with uint8 image fields)
        a mapping field name -> array that the client packs by the session's layout.
        """

    @abstractmethod
    def apply_action(self, action: np.ndarray) -> None:
        """Apply one command (already clipped by the safety layer) for one control period."""

    def apply_step(self, action: np.ndarray, fraction: float) -> None:
        """Apply ``fraction`` of one policy period's command in one loop cycle (multi-rate).

        A controller whose loop runs ``k`` times faster than the policy (``MultiRateRuntime``)
        gets this call on every loop cycle with ``fraction = 1 / k``: a delta command moves by
        that fraction, an absolute target is interpolated by it. Single-rate controllers need
        not implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} runs at the policy rate only")

    @abstractmethod
    def hold(self, action: np.ndarray) -> None:
        """Keep applying the last command for one control period (no fresh action)."""

    @abstractmethod
    def brake(self) -> None:
        """Command zero velocity for one control period."""

    @abstractmethod
    def status(self) -> ControllerStatus:
        """The controller's current report."""


@dataclass
class RuntimeReport:
    """What ``ControllerRuntime.run`` measured."""

    cycles: int
    state: str
    reason: str
    fault_detected_after_s: float | None
    standstill_after_s: float | None
    loop: dict[str, Any]
    client: dict[str, Any]
    safety: dict[str, int]
    controller: dict[str, Any]
    trace: list[dict[str, Any]] = field(default_factory=list)  # the last cycles, at a FAULT


WAKE_UP_MARGIN_S = 150e-6  # a late wake-up from the wait, on a loaded VM (s)
TAIL_DECAY = 0.999  # per cycle: the reserve forgets a slow cycle over ~1,000 cycles


class ControllerRuntime:
    """Drives ``controller`` from a policy server through ``client``, behind a safety layer.

    Args:
        controller: The robot's adapter.
        client: A connected ``EdgeClient``.
        hold_window_s: Hold window (s).
        model_sha256: Model the controller was certified with (None: accept the server's).
        publisher: Key id of the only publisher whose signed bundles it runs (None: any).
        max_change: Rate limit per action component and cycle (None: the robot's limits,
            ``SafetyConfig.for_robot``, when ``factoryfloor.robots`` has the robot and the
            description names its control mode; else only the action limits apply).
        limit_acceleration: With the robot's limits, also rate-limit by its acceleration
            limits (for policies trained under them).
        name: Controller name sent in HELLO.
        loop_rate_hz: Loop rate (Hz); None runs at the description's control rate. Another
            rate (an integer multiple of it) is for timing studies of stateless policies: an
            observation every cycle; HELLO states it as ``loop_rate_hz``.
        rt_priority: Run ``run``'s loop under ``SCHED_FIFO`` at this priority (1..99), as a real
            controller would; None keeps the default scheduler (``realtime.py``).
    """

    def __init__(
        self,
        controller: RobotController,
        client: EdgeClient,
        hold_window_s: float = 0.020,
        model_sha256: str | None = None,
        max_change: np.ndarray | None = None,
        name: str = "controller",
        loop_rate_hz: float | None = None,
        rt_priority: int | None = None,
        limit_acceleration: bool = False,
        publisher: str | None = None,
    ) -> None:
        self.controller, self.client = controller, client
        self.publisher = publisher
        desc = controller.description
        self.rate_hz = loop_rate_hz or desc.control_rate_hz
        self.safety = SafetyLayer(
            safety_config(desc, max_change, self.rate_hz, hold_window_s, limit_acceleration)
        )
        self.loop = FixedRateLoop(self.rate_hz)
        self.model_sha256, self.name = model_sha256, name
        if rt_priority is not None:
            check_priority(rt_priority)  # a bad value fails here, not after the handshake
        self.rt_priority = rt_priority
        self.last_fresh_s: float | None = None  # when the last fresh action was applied
        self.trace: deque[CycleTrace] = deque(maxlen=TRACE_CYCLES)
        self._began_s: float | None = None  # when the last cycle began (for the trace's gaps)
        self.standstill_at_s: float | None = None  # when the robot stood still after braking
        self.tail_s = 0.0  # a cycle's own work after the wait, its recent worst (s)

    def hello(self) -> dict[str, Any]:
        """The HELLO payload of this controller."""
        desc = self.controller.description
        faster = self.rate_hz if self.rate_hz != desc.control_rate_hz else None
        return desc.hello(
            self.name, self.safety.config.hold_window_s * 1e3, self.model_sha256, faster
        )  # a loop faster than the policy says so: the server's frame budget follows it

    def rearm(self) -> dict[str, Any]:
        """Leave FAULT and open a new session (raises ``HandshakeError`` when refused)."""
        welcome = self.client.handshake(self.hello(), publisher=self.publisher)
        self.safety.rearm(time.monotonic())
        self.last_fresh_s = self.standstill_at_s = self._began_s = None
        self.loop = FixedRateLoop(self.rate_hz)
        self.trace.clear()
        return welcome

    def run(
        self,
        max_cycles: int | None = None,
        report_every_s: float | None = None,
        on_report: Callable[[RuntimeReport], None] | None = None,
    ) -> RuntimeReport:
        """Run until the controller is finished, FAULT latches, or ``max_cycles`` cycles.

        Args:
            max_cycles: Cycles at most (None: no limit).
            report_every_s: Call ``on_report`` with the figures so far this often (s).
            on_report: Receives periodic reports (e.g. to print or write JSON lines).
        """
        cycles = 0
        next_report = time.monotonic() + (report_every_s or float("inf"))
        if self.rt_priority is not None:  # the loop waits on them for every answer
            realtime_io_threads(self.rt_priority)
        with realtime_priority(self.rt_priority):
            while max_cycles is None or cycles < max_cycles:
                cycles += 1
                decision = self.cycle()
                if decision.state is State.FAULT or self.controller.status().finished:
                    break
                if on_report is not None and time.monotonic() >= next_report:
                    next_report += report_every_s or float("inf")
                    on_report(self.report(cycles))
        return self.report(cycles)

    def cycle(self) -> Decision:
        """One control cycle (waits for its due time first).

        Nothing escapes it: an exception anywhere in the cycle (the robot's adapter, the wire,
        the safety layer) brakes, and FAULT latches with the exception as the reason.
        """
        try:
            return self._cycle()
        except Exception as exc:
            return self._failed(f"{type(exc).__name__} in the control loop: {exc}")

    def _failed(self, reason: str) -> Decision:
        decision = self.safety.fail(time.monotonic(), reason[:300])
        try:
            self._act(decision)
        except Exception as exc:  # not even the brake call worked: latch, nothing more to do
            self.safety.latch(f"{reason[:200]}; then the brake call failed: {exc}")
            return Decision(State.FAULT, None, reason=self.safety.reason)
        return decision

    def _start_cycle(self) -> tuple[float, bool, float]:
        """Wait for the cycle's due time; (due time, whether the wire may be used, start) (s).

        The wire is not used while braking, in FAULT, or when overruns start braking.
        """
        due, overran = self.loop.wait_next()
        braking = self.safety.overrun(due) if overran else None
        if not overran:
            self.safety.on_time()
        live = braking is None and self.safety.state not in (State.BRAKING, State.FAULT)
        return due, live, time.monotonic()

    def _cycle(self) -> Decision:
        due, live, began = self._start_cycle()
        sent = waited = began
        action = None
        if live:
            obs, start = self.controller.read_state()
            self.client.send_observation(obs, episode_start=start)
            sent = time.monotonic()
            action = self.client.receive_action(max(0.0, self.wait_until(due) - sent))
            waited = time.monotonic()
            if self.client.session_closed:
                return self._failed(f"the server closed the session: {self.client.session_closed}")
        decision = self.safety.decide(waited, action)
        self._trace(due, began, sent, waited, action is not None, decision)
        self._act(decision)
        self.end_cycle(waited)
        return decision

    def wait_until(self, due: float) -> float:
        """How long a cycle due at ``due`` waits for its answer (monotonic s).

        The cycle keeps back a reserve for its own work after the wait: at least 20% of the
        period, and more when that work has recently taken longer (a slow or loaded machine),
        up to half the period; never past the hold deadline. So a late server makes the cycle
        HOLD, never miss its next due time: the loop's deadlines do not depend on the server.
        """
        return answer_deadline(due, self.loop.period_s, self.tail_s, self.safety.hold_deadline_s)

    def end_cycle(self, waited: float) -> None:
        """Note the cycle's work since ``waited`` (a worst case that decays over ~1,000 cycles)."""
        self.tail_s = max(time.monotonic() - waited, self.tail_s * TAIL_DECAY)

    def _trace(
        self, due: float, began: float, sent: float, waited: float, answered: bool, d: Decision
    ) -> None:
        stopping = (State.BRAKING.value, State.FAULT.value)
        if d.state.value in stopping and self.trace and self.trace[-1].state in stopping:
            return  # the trace ends at the cycle that began braking: that is the one to explain
        fresh = self.last_fresh_s
        before = began if self._began_s is None else self._began_s
        self._began_s = began
        self.trace.append(
            CycleTrace(
                (began - before) * 1e3, (began - due) * 1e3, (sent - began) * 1e3,
                (waited - sent) * 1e3, answered, d.state.value,
                None if fresh is None else (waited - fresh) * 1e3,
            )
        )  # fmt: skip

    def explain_fault(self, late_answer_s: float | None = None) -> str:
        """Who was late, by how much, against which window (``fault_trace.explain``)."""
        return explain(
            list(self.trace), self.loop.period_s * 1e3,
            self.safety.config.hold_window_s * 1e3,
            None if late_answer_s is None else late_answer_s * 1e3,
        )  # fmt: skip

    def _act(self, decision: Decision) -> None:
        now = time.monotonic()
        if decision.state is State.RUNNING and decision.command is not None:
            self.controller.apply_action(decision.command)
            self.last_fresh_s = now
        elif decision.command is not None:  # HOLD, ARMED
            self.controller.hold(decision.command)
        else:
            self._brake(now)

    def _brake(self, now: float) -> None:
        """Command zero velocity; FAULT latches once the robot reports standstill."""
        self.controller.brake()
        if self.safety.state is State.BRAKING and self.controller.status().standstill:
            self.safety.standstill(now)
            self.standstill_at_s = now

    def report(self, cycles: int) -> RuntimeReport:
        """The figures of the run so far."""
        stats = self.loop.stats
        detected = standstill = None
        braked = self.safety.brake_started_s
        if braked is not None and self.last_fresh_s is not None:
            detected = braked - self.safety.last_fresh_s  # since the last fresh action, as
            # the safety layer saw it (the hold deadline counts from there)
        if braked is not None and self.standstill_at_s is not None:
            standstill = self.standstill_at_s - braked
        return RuntimeReport(
            cycles=cycles,
            state=self.safety.state.value,
            reason=self.safety.reason,
            fault_detected_after_s=detected,
            standstill_after_s=standstill,
            loop={
                "rate_hz": 1.0 / self.loop.period_s,
                "cycles": stats.cycles,
                "missed": stats.missed,
                "miss_rate": stats.miss_rate,
                "longest_miss_run": stats.longest_miss_run,
                "lateness_us": stats.lateness.summary_us(),
            },
            client=self.client.metrics.snapshot(),
            safety=dict(vars(self.safety.counters)),
            controller=self.controller.status().info,
            trace=[t.as_dict() for t in self.trace] if self.safety.state is State.FAULT else [],
        )


def answer_deadline(due_s: float, period_s: float, tail_s: float, hold_deadline_s: float) -> float:
    """Until when a cycle due at ``due_s`` waits for its answer (s; ``wait_until``'s rule).

    Args:
        due_s: The cycle's due time (s, monotonic).
        period_s: The loop period (s).
        tail_s: The cycle's recent worst own work after the wait (s; 0 on an idle machine).
        hold_deadline_s: The safety layer's hold deadline (s, monotonic).
    """
    reserve = min(0.5 * period_s, max(0.2 * period_s, tail_s + WAKE_UP_MARGIN_S))
    return min(due_s + period_s - reserve, hold_deadline_s)


def safety_config(
    desc: PolicySpec,
    max_change: np.ndarray | None,
    rate_hz: float,
    hold_window_s: float,
    acceleration: bool,
) -> SafetyConfig:
    """The controller's limits: the action spec's, and the robot's rate limits when known."""
    low = np.concatenate([np.ravel(a["low"]) for a in desc.action]).astype(np.float32)
    high = np.concatenate([np.ravel(a["high"]) for a in desc.action]).astype(np.float32)
    period = 1.0 / rate_hz  # each cycle applies one action for one loop period
    if max_change is None and desc.control and desc.robot in robot_names():
        robot = get_robot_spec(desc.robot)
        return SafetyConfig.for_robot(
            robot, desc.control, low, high, period, acceleration, hold_window_s=hold_window_s
        )
    change = high - low if max_change is None else np.asarray(max_change, np.float32)
    return SafetyConfig(
        low=low, high=high, max_change=np.maximum(change, 1e-9),
        control_period_s=period, hold_window_s=hold_window_s,
    )  # fmt: skip
