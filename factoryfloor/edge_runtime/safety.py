"""The controller-side safety layer: every row of the edge fault model (docs/protocol.md, s. 4).

``SafetyLayer.decide(now_s, action)`` is called once per control cycle with the newest action
that passed the client's wire checks (session, sequence, age, size), or ``None`` when there is
none. It returns a ``Decision``: the command to apply (clipped to the action limits and the rate
limit) and the state:

* ``RUNNING``: a fresh, finite action was clipped and is applied;
* ``HOLD``: no usable action; the last applied one is reused until the hold deadline
  (``last fresh action + one control period + hold window``);
* ``BRAKING``: the hold deadline passed, K non-finite actions came in a row, an action was
  clipped for too many cycles in a row, or the loop overran too many cycles in a row; the
  controller brakes to standstill;
* ``FAULT``: latched once the robot stands still after braking; only ``rearm()`` (an explicit
  operator action, followed by a new handshake) leaves it.

Pure logic with an injected clock: no sockets, no sleeping. The command arithmetic (limits, rate
limit, speed bounds, finiteness) is ``fastpath``'s limiter, compiled where built.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from factoryfloor.edge_runtime import fastpath
from factoryfloor.robots import RobotSpec


class State(str, Enum):
    """Safety states of a controller."""

    ARMED = "ARMED"  # armed, no action received yet: stand still
    RUNNING = "RUNNING"
    HOLD = "HOLD"
    BRAKING = "BRAKING"
    FAULT = "FAULT"


@dataclass(frozen=True, kw_only=True)
class SafetyConfig:
    """Limits of one controller.

    Attributes:
        low: Lower action limits, shape ``(A,)`` (the action spec's, from the RobotSpec).
        high: Upper action limits, shape ``(A,)``.
        max_change: Largest change of each action component from one cycle to the next,
            shape ``(A,)`` (the rate limit; ``high - low`` turns it off). ``for_robot``
            derives it from the robot's acceleration limits.
        norm_limits: ``(indices, bound)`` pairs: the Euclidean norm of those components is
            scaled down to ``bound`` (the TCP speed of end-effector commands).
        control_period_s: Control period (s).
        hold_window_s: How long past its due time the last action is held (s).
        nonfinite_limit: Non-finite actions in a row that start braking.
        clip_limit: Cycles in a row with a clipped action that start braking.
        overrun_limit: Loop overruns in a row that start braking.
    """

    low: np.ndarray
    high: np.ndarray
    max_change: np.ndarray
    control_period_s: float
    hold_window_s: float = 0.020
    nonfinite_limit: int = 3
    clip_limit: int = 25
    overrun_limit: int = 10
    norm_limits: tuple[tuple[tuple[int, ...], float], ...] = ()

    def __post_init__(self) -> None:
        shapes = {np.shape(self.low), np.shape(self.high), np.shape(self.max_change)}
        if len(shapes) != 1 or np.any(np.asarray(self.low) > np.asarray(self.high)):
            raise ValueError("low, high and max_change need one shape, with low <= high")
        if self.control_period_s <= 0 or self.hold_window_s < 0:
            raise ValueError("control_period_s must be > 0 and hold_window_s >= 0")
        if min(self.nonfinite_limit, self.clip_limit, self.overrun_limit) < 1:
            raise ValueError("nonfinite_limit, clip_limit and overrun_limit must be >= 1")
        if np.any(np.asarray(self.max_change) <= 0):
            raise ValueError("max_change must be positive")

    @classmethod
    def for_robot(
        cls,
        robot: RobotSpec,
        control: str,
        low: np.ndarray,
        high: np.ndarray,
        control_period_s: float,
        acceleration: bool = False,
        **settings: float,
    ) -> SafetyConfig:
        """Limits of a robot's delta commands (``sim/robot.py`` states their meaning).

        A command ``a`` moves each joint by ``a_i * max_joint_step_rad`` ("joints") or the TCP
        by ``a[:3] * max_ee_step_m`` ("ee") over one control period ``T``. So the velocity
        limits bound ``|a_i| <= v_i T / step`` (per joint; for the TCP, the norm of
        ``a[:3]``). With ``acceleration``, the acceleration limits also bound its change per
        period, ``|a_i - a_i'| <= acc_i T^2 / step``: a full-range step is spread over the
        periods they allow. That is off by default: a policy trained without it loses success
        under it (the pretrained PickPlace bundle: 9 of 10 episodes to 6 of 10, measured), so it
        belongs to policies trained under the same limits. The gripper's command (the last) is
        an absolute opening its own controller rate-limits: only the action limits apply to it.

        Args:
            robot: The robot's description.
            control: Its control mode, ``"ee"`` or ``"joints"``.
            acceleration: Also rate-limit by the acceleration limits (else only the action
                range bounds the change).
            low: Lower action limits (the action spec's), shape ``(A,)``.
            high: Upper action limits, shape ``(A,)``.
            control_period_s: Policy period ``T`` (s).
            **settings: Other ``SafetyConfig`` fields (``hold_window_s``, ...).

        Raises:
            ValueError: When the action size is not the control mode's for this robot.
        """
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        t = control_period_s
        norms: tuple[tuple[tuple[int, ...], float], ...] = ()
        if control == "ee" and low.shape == (4,):
            step = robot.max_ee_step_m
            change = [robot.max_tcp_acceleration_m_s2 * t * t / step] * 3
            norms = (((0, 1, 2), robot.max_tcp_speed_m_s * t / step),)
            bound = np.full(3, np.inf)
        elif control == "joints" and low.shape == (robot.n_arm + 1,):
            step = robot.max_joint_step_rad
            change = [lim.acceleration * t * t / step for lim in robot.limits]
            bound = np.array([lim.velocity * t / step for lim in robot.limits])
        else:
            raise ValueError(
                f"{robot.name} under {control!r} control has no action of shape {low.shape}"
            )
        arm_low = np.maximum(low[:-1], -bound)
        arm_high = np.minimum(high[:-1], bound)
        if not acceleration:
            change = list(high[:-1] - low[:-1])
        return cls(
            low=np.append(arm_low, low[-1]).astype(np.float32),
            high=np.append(arm_high, high[-1]).astype(np.float32),
            max_change=np.append(change, high[-1] - low[-1]).astype(np.float32),
            control_period_s=t,
            norm_limits=norms,
            **settings,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Decision:
    """What to do this cycle.

    Attributes:
        state: The safety state after this cycle.
        command: Action to apply (RUNNING, HOLD, ARMED), or None (BRAKING, FAULT: brake).
        clipped: The fresh action was clipped to the limits or the rate limit.
        reason: Why the state is BRAKING or FAULT (empty otherwise).
    """

    state: State
    command: np.ndarray | None
    clipped: bool = False
    reason: str = ""


@dataclass
class SafetyCounters:
    """Events counted since arming."""

    fresh: int = 0
    held: int = 0
    nonfinite: int = 0
    clipped: int = 0
    overruns: int = 0
    faults: int = 0


class SafetyLayer:
    """The fault-model state machine of one controller (see the module docstring)."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self.counters = SafetyCounters()
        self._limiter = fastpath.limiter(
            config.low, config.high, config.max_change, config.norm_limits
        )
        self.rearm(0.0)

    def rearm(self, now_s: float) -> None:
        """Leave FAULT (an explicit operator action); the robot stands still until an action."""
        self.state = State.ARMED
        self.reason = ""
        self.last_command = np.zeros_like(np.asarray(self.config.low, dtype=np.float32))
        self.last_fresh_s = now_s
        self.brake_started_s: float | None = None
        self._nonfinite_run = self._clip_run = self._overrun_run = 0

    @property
    def hold_deadline_s(self) -> float:
        """When the held action expires and braking starts (s, monotonic)."""
        return self.last_fresh_s + self.config.control_period_s + self.config.hold_window_s

    def decide(self, now_s: float, action: np.ndarray | None) -> Decision:
        """One cycle's decision for the newest wire-valid ``action`` (or None)."""
        if self.state in (State.BRAKING, State.FAULT):
            return Decision(self.state, None, reason=self.reason)
        if action is None:
            return self._hold(now_s)
        clipped = self._limiter.limit(action, self.last_command)  # -1: not finite
        if clipped < 0:
            self.counters.nonfinite += 1
            self._nonfinite_run += 1
            if self._nonfinite_run >= self.config.nonfinite_limit:
                return self._brake(now_s, f"{self._nonfinite_run} non-finite actions in a row")
            return self._hold(now_s)
        self._nonfinite_run = 0
        return self._apply(now_s, self._limiter.out.copy(), bool(clipped))

    def overrun(self, now_s: float) -> Decision | None:
        """Count a loop overrun; returns a braking decision when too many came in a row."""
        self.counters.overruns += 1
        self._overrun_run += 1
        if self._overrun_run >= self.config.overrun_limit and self.state not in (
            State.BRAKING,
            State.FAULT,
        ):
            return self._brake(now_s, f"{self._overrun_run} loop overruns in a row")
        return None

    def on_time(self) -> None:
        """A cycle that started on time (ends a run of overruns)."""
        self._overrun_run = 0

    def standstill(self, now_s: float) -> None:
        """The controller reports standstill: BRAKING latches FAULT."""
        if self.state is State.BRAKING:
            self.state = State.FAULT
            self.counters.faults += 1

    def fail(self, now_s: float, reason: str) -> Decision:
        """Something failed inside the control loop: brake now (FAULT follows at standstill)."""
        if self.state in (State.BRAKING, State.FAULT):
            return Decision(self.state, None, reason=self.reason)
        return self._brake(now_s, reason)

    def latch(self, reason: str) -> None:
        """Latch FAULT at once (braking could not be confirmed, e.g. the brake call failed)."""
        if self.state is not State.FAULT:
            self.counters.faults += 1
        self.state, self.reason = State.FAULT, reason

    def _apply(self, now_s: float, command: np.ndarray, clipped: bool) -> Decision:
        """Apply the limiter's ``command`` (speed bounds last: they are the hard ones)."""
        cfg = self.config
        self._clip_run = self._clip_run + 1 if clipped else 0
        self.counters.clipped += int(clipped)
        if self._clip_run >= cfg.clip_limit:
            return self._brake(now_s, f"action clipped {self._clip_run} cycles in a row")
        self.counters.fresh += 1
        self.state, self.last_command, self.last_fresh_s = State.RUNNING, command, now_s
        return Decision(State.RUNNING, command, clipped)

    def _hold(self, now_s: float) -> Decision:
        if now_s > self.hold_deadline_s:
            late_ms = (now_s - self.last_fresh_s) * 1e3
            return self._brake(now_s, f"no valid action for {late_ms:.1f} ms (hold window spent)")
        if self.state is State.ARMED:
            return Decision(State.ARMED, self.last_command)
        self.counters.held += 1
        self.state = State.HOLD
        return Decision(State.HOLD, self.last_command)

    def _brake(self, now_s: float, reason: str) -> Decision:
        self.state, self.reason, self.brake_started_s = State.BRAKING, reason, now_s
        return Decision(State.BRAKING, None, reason=reason)
