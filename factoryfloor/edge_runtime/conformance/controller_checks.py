"""Scenarios a controller must pass against the kit's scripted server (sections 5-7).

Each scenario starts the controller command once (``scripted.running``), waits for its HELLO,
plays its script and judges the frames the controller sent, on the kit's clock.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import os
from typing import Any

import numpy as np

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime.conformance.kit import (
    CheckFailed,
    CheckSkipped,
    Registry,
    expect,
    frame,
    register,
    validate,
)
from factoryfloor.edge_runtime.conformance.scripted import (
    ControllerTarget,
    Frame,
    Script,
    running,
)

CONTROLLER_CHECKS: Registry = {}
SLACK_S = 0.050
__all__ = ["CONTROLLER_CHECKS", "ControllerTarget"]


def _hello_schema(hello: dict[str, Any]) -> str | None:
    try:
        error = validate(hello, "hello.schema.json")
    except CheckSkipped as exc:
        return f"not validated against the schema: {exc}"
    expect(error is None, f"HELLO breaks hello.schema.json at {error}")
    return None


def _check_hello_fields(hello: dict[str, Any], target: ControllerTarget) -> None:
    spec = target.spec
    expect(
        hello.get("protocol_version") == 2, f"protocol_version {hello.get('protocol_version')!r}"
    )
    name = hello.get("controller")
    expect(isinstance(name, str) and 1 <= len(name) <= 128, f"controller {name!r}: 1-128 chars")
    for key in ("task_id", "robot"):
        expect(
            hello.get(key) == getattr(spec, key),
            f"{key} {hello.get(key)!r}, expected {getattr(spec, key)!r}",
        )
    try:
        own = p.schema_sha256(hello["observation"], hello["action"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckFailed(f"HELLO specs are unusable: {exc!r}") from None
    expect(
        hello.get("schema_sha256") == own,
        f"schema_sha256 {hello.get('schema_sha256')!r} is not the hash of its own specs {own}",
    )
    expect(
        own == spec.schema_sha256, f"its specs hash to {own}, the served to {spec.schema_sha256}"
    )
    rate = hello.get("control_rate_hz")
    expect(
        isinstance(rate, int | float) and math.isclose(rate, spec.control_rate_hz, rel_tol=1e-9),
        f"control_rate_hz {rate!r}, expected {spec.control_rate_hz}",
    )
    if "loop_rate_hz" in hello:
        k = float(hello["loop_rate_hz"]) / spec.control_rate_hz
        expect(
            abs(k - round(k)) < 1e-9 and 1 <= round(k) <= 100,
            f"loop_rate_hz {hello['loop_rate_hz']} is {k:g} x the control rate, not 1..100",
        )
    hold = hello.get("hold_window_ms", 20.0)
    expect(isinstance(hold, int | float) and 0 <= hold <= 1000, f"hold_window_ms {hold!r}")


@register(
    CONTROLLER_CHECKS,
    "hello_valid",
    "§5",
    "HELLO: session 0, seq 1, version 2, its own schema hash, the served task, robot, rates",
)
def hello_valid(target: ControllerTarget) -> str | None:
    """The controller's HELLO."""
    with running(target) as run:
        msg = run.wait_hello()
    got = (msg.session_id, msg.seq, msg.ack_seq, msg.t_echo_ns)
    expect(
        got == (0, 1, 0, 0),
        f"HELLO header (session, seq, ack, t_echo) {got}, expected (0, 1, 0, 0)",
    )
    _check_hello_fields(run.hello, target)
    return _hello_schema(run.hello)


class Answerer:
    """A frame handler answering the session's observations with zero actions until ``until``.

    Attributes:
        until_s: Kit's clock after which observations are no longer answered (s).
        last_s: When the last ACTION was sent (s; 0 before the first).
    """

    def __init__(self, run: Script) -> None:
        self.run, self.until_s, self.last_s = run, math.inf, 0.0

    def __call__(self, got: Frame) -> None:
        """Answer ``got`` when it is an OBSERVATION of the session, before ``until_s``."""
        msg = got.msg
        if msg is None or msg.type is not p.MsgType.OBSERVATION:
            return
        if msg.session_id == self.run.session and got.t_s < self.until_s:
            self.last_s = self.run.act(msg)


def _started(run: Script, answer: Answerer, timeout_s: float = 3.0) -> float:
    """WELCOME, then play until the first OBSERVATION; its arrival time (s)."""
    run.welcome(run.wait_hello())
    for _ in range(int(timeout_s / 0.05)):
        run.play(0.05, answer)
        if run.observations():
            return run.observations()[0].t_s
    raise CheckFailed(f"no OBSERVATION within {timeout_s} s of WELCOME")


@register(
    CONTROLLER_CHECKS,
    "observations_valid",
    "§2, §6, §7",
    "observations: session, size, finite, seq and t_send rising, EPISODE_START first, rate",
)
def observations_valid(target: ControllerTarget) -> None:
    """2.5 s of observations answered with zero actions."""
    with running(target) as run:
        _started(run, answer := Answerer(run))
        run.play(2.5, answer)
    run.malformed()
    frames = run.observations()
    expect(len(frames) >= 3, f"{len(frames)} OBSERVATIONs in 2.5 s")
    msgs = [f.msg for f in frames if f.msg is not None]
    expect(int(msgs[0].flags) & 1 == 1, "the first OBSERVATION lacks EPISODE_START")
    expect(msgs[0].seq > 1, f"the first OBSERVATION has seq {msgs[0].seq}; HELLO was seq 1")
    for a, b in itertools.pairwise(msgs):
        expect(b.seq > a.seq, f"OBSERVATION seq {b.seq} after {a.seq}")
        expect(b.t_send_ns > a.t_send_ns, f"t_send_ns {b.t_send_ns} after {a.t_send_ns}")
    layout = target.spec.obs_layout  # float32-only, or with uint8 fields (payload.py)
    for m in msgs:
        expect(
            len(m.payload) == layout.size,
            f"OBSERVATION of {len(m.payload)} bytes, expected {layout.size} "
            f"({target.spec.obs_size} values)",
        )
        row = np.frombuffer(m.payload, np.uint8)[None]
        finite = bool(layout.finite_rows(row)[0])  # only float32 values: image bytes are bytes
        expect(finite, f"OBSERVATION seq {m.seq} holds NaN or Inf")
    _check_rate(frames, target.spec.control_rate_hz)


def _check_rate(frames: list[Frame], rate_hz: float) -> None:
    start = frames[0].t_s + 0.3  # after the first cycles' warm-up
    window = [f.t_s for f in frames if f.t_s >= start]
    span = window[-1] - window[0] if len(window) > 1 else 0.0
    expect(span >= 2.0, f"observations over only {span:.2f} s; the rate needs >= 2 s")
    measured = (len(window) - 1) / span
    expect(
        abs(measured / rate_hz - 1) <= 0.2,
        f"{measured:.1f} observations/s over {span:.2f} s, expected {rate_hz:g} +-20%",
    )


@register(
    CONTROLLER_CHECKS,
    "stops_after_silence",
    "§7",
    "no OBSERVATION later than hold window + 2 periods + 50 ms after the last ACTION",
)
def stops_after_silence(target: ControllerTarget) -> None:
    """1 s of answers, then silence."""
    with running(target) as run:
        answer = Answerer(run)
        answer.until_s = _started(run, answer) + 1.0
        run.play(answer.until_s - run.frames[-1].t_s + 1.0, answer)
    run.malformed()
    last_action = answer.last_s
    expect(last_action > 0, "the controller sent no OBSERVATION to answer")
    limit = run.hold_s + 2 * run.period_s + SLACK_S
    late = [f for f in run.observations() if f.t_s > last_action + limit]
    expect(
        not late,
        f"OBSERVATION {(late[0].t_s - last_action) * 1e3:.0f} ms after the last "
        f"ACTION (limit {limit * 1e3:.0f} ms = hold {run.hold_s * 1e3:g} + 2 periods + 50)"
        if late
        else "",
    )


def _refuses(target: ControllerTarget, what: str, **overrides: Any) -> None:
    with running(target) as run:
        session = run.welcome(run.wait_hello(), **overrides)
        run.play(1.0, None)
    obs = run.observations(session)
    expect(not obs, f"{len(obs)} OBSERVATION(s) on the session of a WELCOME with {what}")


@register(
    CONTROLLER_CHECKS,
    "refuses_bad_welcome",
    "§5",
    "a WELCOME with a wrong action size is refused: no OBSERVATION on it within 1 s",
)
def refuses_bad_welcome(target: ControllerTarget) -> None:
    """A WELCOME whose action spec has one value more."""
    action = copy.deepcopy(target.spec.action)
    action[0]["shape"] = [p.spec_floats(action) + 1]
    action[0]["low"] = [*action[0]["low"], -1.0]
    action[0]["high"] = [*action[0]["high"], 1.0]
    observation = target.spec.observation
    _refuses(
        target,
        "a wrong action size",
        action=action,
        schema_sha256=p.schema_sha256(observation, action),
    )


@register(
    CONTROLLER_CHECKS,
    "refuses_wrong_model",
    "§5",
    "a controller pinning model_sha256 refuses a WELCOME with another model",
)
def refuses_wrong_model(target: ControllerTarget) -> None:
    """Only for controllers whose HELLO pins a model."""
    if target.first_hello is not None and not target.first_hello.get("model_sha256"):
        raise CheckSkipped("its HELLO pins no model_sha256")
    with running(target) as run:
        hello = run.wait_hello()
        pinned = run.hello.get("model_sha256")
        if not pinned:
            raise CheckSkipped("its HELLO pins no model_sha256")
        other = "cd" * 32 if pinned != "cd" * 32 else "ef" * 32
        session = run.welcome(hello, model_sha256=other)
        run.play(1.0, None)
    obs = run.observations(session)
    expect(not obs, f"{len(obs)} OBSERVATION(s) after a WELCOME with another model")


def _garbage(run: Script, obs: p.Message) -> list[bytes]:
    """Ten frames a controller must drop (and survive)."""
    size = run.spec.action_size
    zeros = p.encode_floats(np.zeros(size, np.float32))
    ours = functools.partial(
        frame, session=run.session, seq=run.seq + 1, ack=obs.seq, t_echo=obs.t_send_ns
    )  # an ACTION-like frame of this session, each below breaking one rule
    action = int(p.MsgType.ACTION)
    return [
        os.urandom(37),
        os.urandom(120),
        b"XXXX" + bytes(44),
        ours(action, zeros, session=run.session ^ 0xFF),
        ours(action, zeros + zeros[:4]),
        ours(action, zeros, ack=max(obs.seq - 1, 0)),
        ours(action, zeros, version=1),
        ours(99, b""),
        ours(action, zeros, payload_len=4 * size + 4),
        ours(action, zeros, flags=1),
    ]


@register(
    CONTROLLER_CHECKS,
    "survives_bad_actions",
    "§7",
    "2 NaN actions and 20 garbage frames between good ones: observations go on >= 1 s",
)
def survives_bad_actions(target: ControllerTarget) -> None:
    """Bad actions and garbage, each followed by the good action."""
    with running(target) as run:
        run.welcome(run.wait_hello())
        count = {"n": 0, "bad_end": 0.0}
        nan = np.full(run.spec.action_size, np.nan, np.float32)

        def on_frame(got: Frame) -> None:
            msg = got.msg
            if (
                msg is None
                or msg.type is not p.MsgType.OBSERVATION
                or msg.session_id != run.session
            ):
                return
            count["n"] += 1
            if count["n"] in (5, 8):
                run.act(msg, nan)
                for data in _garbage(run, msg):
                    run.server.send(data)
                count["bad_end"] = run.act(msg)
            else:
                run.act(msg)

        for _ in range(60):
            if count["bad_end"]:
                break
            run.play(0.05, on_frame)
        expect(count["bad_end"] > 0, f"only {count['n']} OBSERVATIONs before the bad actions")
        run.play(1.2, on_frame)
    run.malformed()
    after = [f.t_s - count["bad_end"] for f in run.observations()]
    expect(
        after[-1] >= 1.0,
        f"the last OBSERVATION came {after[-1]:.2f} s after the bad actions; "
        "expected observations for >= 1 s",
    )


@register(
    CONTROLLER_CHECKS,
    "acts_on_session_closed",
    "§3, §7",
    "after ERROR SESSION_CLOSED: no OBSERVATION on that session after 2 periods + 50 ms",
)
def acts_on_session_closed(target: ControllerTarget) -> None:
    """SESSION_CLOSED, while the kit keeps answering (a controller must not rely on silence)."""
    with running(target) as run:
        _started(run, answer := Answerer(run))
        run.play(0.5, answer)
        text = "the kit closed this session (conformance test)"
        closed_at = run.send(p.MsgType.ERROR, p.encode_error(p.ErrorCode.SESSION_CLOSED, text))
        run.play(1.0, answer)
    limit = 2 * run.period_s + SLACK_S
    late = [f for f in run.observations() if f.t_s > closed_at + limit]
    expect(
        not late,
        f"{len(late)} OBSERVATION(s) on the closed session, the first "
        f"{(late[0].t_s - closed_at) * 1e3:.0f} ms after SESSION_CLOSED (limit "
        f"{limit * 1e3:.0f} ms)"
        if late
        else "",
    )
