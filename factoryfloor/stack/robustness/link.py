"""The wire between controller and policy server on a simulated clock: latency and lost answers.

``SimulatedLink`` replays what ``EdgeClient.receive_action`` and ``ControllerRuntime`` do with
late and missing answers, without sockets or real time, so that a robustness grid runs as fast
as the physics:

* each cycle sends its observation at its due time and waits until ``answer_deadline`` (the
  runtime's own rule: a reserve of 20% of the period on an idle machine, never past the
  safety layer's hold deadline);
* it returns as soon as the answer to that observation is in; at the deadline, the newest
  answer to an earlier observation that came late, if any;
* an answer at or below the last one taken is stale, one older than the max action age (from
  its observation's send time to its processing) is too old: both are dropped, as the client
  drops them;
* the ``SafetyLayer`` (the runtime's, unchanged) then decides: RUNNING, HOLD, or BRAKING once
  the hold deadline has passed.

A ``LinkModel`` says when each answer arrives: a fixed latency in control periods plus uniform
jitter, or latencies measured by the edge runtime, and a rate of answers that never arrive.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from factoryfloor.edge_runtime.controller import answer_deadline
from factoryfloor.edge_runtime.safety import SafetyLayer

WAIT_OVERSHOOT_S = 50e-6  # a wait that times out returns this much past its deadline (s)


@dataclass(frozen=True)
class LinkModel:
    """When answers arrive.

    Attributes:
        latency_s: Fixed part of each answer's latency, observation sent to answer in (s).
        jitter_s: Uniform extra latency in ``[0, jitter_s]`` per answer (s).
        drop_rate: Probability that an answer never arrives (0..1).
    """

    latency_s: float = 0.0
    jitter_s: float = 0.0
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ValueError(f"latency_s={self.latency_s} must be finite and >= 0")
        if not (np.isfinite(self.jitter_s) and self.jitter_s >= 0):
            raise ValueError(f"jitter_s={self.jitter_s} must be finite and >= 0")
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError(f"drop_rate={self.drop_rate} must be in [0, 1]")

    def arrival_delay_s(self, rng: np.random.Generator) -> float | None:
        """One answer's latency (s), or None when it is lost."""
        if self.drop_rate and rng.random() < self.drop_rate:
            return None
        return self.latency_s + (rng.uniform(0.0, self.jitter_s) if self.jitter_s else 0.0)


class SimulatedLink:
    """One session's wire, on the clock the caller passes (see the module docstring).

    Args:
        model: When answers arrive.
        safety: The controller's safety layer (for its hold deadline).
        period_s: Control period (s).
        max_age_s: The server's max action age (s; WELCOME's ``max_action_age_ms``).
        rng: Draws of latency and loss.
    """

    def __init__(
        self,
        model: LinkModel,
        safety: SafetyLayer,
        period_s: float,
        max_age_s: float,
        rng: np.random.Generator,
    ) -> None:
        self.model, self.safety, self.rng = model, safety, rng
        self.period_s, self.max_age_s = period_s, max_age_s
        self._pending: list[tuple[float, int, float, np.ndarray]] = []  # arrival, seq, sent, a
        self._seq = self._last_ack = 0
        self.counts = {"sent": 0, "lost": 0, "stale": 0, "too_old": 0, "taken": 0}

    def exchange(self, due_s: float, answer: np.ndarray) -> tuple[np.ndarray | None, float]:
        """Send the observation due at ``due_s`` whose answer will be ``answer``.

        Returns:
            The action the client hands the safety layer (None: none usable) and the time it
            does so (s): the answer's arrival, or the wait's deadline.
        """
        self._seq += 1
        self.counts["sent"] += 1
        delay = self.model.arrival_delay_s(self.rng)
        if delay is None:
            self.counts["lost"] += 1
        else:
            bisect.insort(self._pending, (due_s + delay, self._seq, due_s, answer))
        deadline = answer_deadline(due_s, self.period_s, 0.0, self.safety.hold_deadline_s)
        best: np.ndarray | None = None
        while self._pending and self._pending[0][0] <= deadline:
            arrival, seq, sent, action = self._pending.pop(0)
            processed = max(arrival, due_s)  # queued answers are read when the cycle receives
            if seq <= self._last_ack:
                self.counts["stale"] += 1
                continue
            if processed - sent > self.max_age_s:
                self.counts["too_old"] += 1
                continue
            best, self._last_ack = action, seq
            self.counts["taken"] += 1
            if seq == self._seq:  # the answer to this cycle's observation: done
                return best, processed
        return best, deadline + WAIT_OVERSHOOT_S
