"""Fuzz the edge policy server: adversarial HELLO documents and malformed frames, with probes.

The server (``PolicyServer`` with its defaults, a small stateless 100 Hz policy; the one of
``edge_abuse.py``) runs in a child process. This process fires at it:

1. adversarial HELLO documents built by Hypothesis strategies (valid-looking HELLO dicts with
   fields mutated: wrong types, huge, tiny and NaN-text numbers, missing and extra keys, nested
   junk, long strings, lone surrogates, duplicate keys through raw text, truncation), 10,000 by
   default;
2. malformed frames from a seeded random generator: byte mutations of golden-like frames of
   every type (truncation, bit flips, wrong ``payload_len``, random types, flags and versions,
   multipart messages, junk appended, random fields, oversized frames), 100,000 by default.

Inputs go out round-robin over a pool of peers (each retired after a few hundred inputs), so
that per-peer budgets (``docs/protocol.md`` section 8) do not drop most of them unread. Every
~1,000 inputs a probe controller (a fresh ``EdgeClient``) must get a WELCOME and an action for
each of its observations. Reported: inputs, answers by type and error code, the server's
counters, probes, time; the run passes when every probe was served, ``frame_failures`` is 0 and
the server was alive throughout and exited with status 0.

Usage::

    python benchmarks/edge_fuzz.py --quick                  # about 30 s
    python benchmarks/edge_fuzz.py --out bench_results/edge_fuzz.json
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_abuse import (  # the benchmarks folder is not a package
    DESCRIBE,
    ERROR,
    HEADER,
    HEARTBEAT,
    HELLO,
    OBSERVATION,
    TOO_MANY_SESSIONS,
    ServerChild,
    calibration,
    frame,
    good_hello,
    hello_text,
)

BYE, WELCOME, ACTION, DESCRIPTION = 7, 2, 4, 9
TYPE_NAMES = {1: "HELLO", 2: "WELCOME", 3: "OBSERVATION", 4: "ACTION", 5: "HEARTBEAT",
              6: "ERROR", 7: "BYE", 8: "DESCRIBE", 9: "DESCRIPTION"}  # fmt: skip
CODE_NAMES = {1: "BAD_MAGIC", 2: "BAD_VERSION", 3: "BAD_TYPE", 4: "BAD_LENGTH", 5: "BAD_FLAGS",
              6: "BAD_PAYLOAD", 10: "SCHEMA_MISMATCH", 11: "MODEL_MISMATCH", 12: "TASK_MISMATCH",
              13: "NO_SESSION", 14: "TOO_MANY_SESSIONS", 15: "INTERNAL", 16: "NON_FINITE",
              17: "THROTTLED", 18: "SESSION_CLOSED"}  # fmt: skip
POOL = 64  # peers sending at once
PER_PEER = 400  # inputs per peer before it is retired (under a burst of 900 frames)
PROBE_EVERY = 1_000


# --- HELLO documents (Hypothesis) --------------------------------------------------------------


def hello_strategy() -> Any:
    """A Hypothesis strategy of HELLO payload bytes (valid-looking documents, mutated)."""
    from hypothesis import strategies as st

    base = good_hello("fuzz")
    junk = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=16),
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        ),
        max_leaves=16,
    )
    raw_values = st.sampled_from(
        [
            "9" * 5_000, "-" + "9" * 40, "1e400", "-1e400", "1e-400", "NaN", "-NaN", "Infinity",
            "-Infinity", "-0", "0e0", "9007199254740993", "9007199254740992", "0." + "1" * 40,
            "1" * 33, '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', json.dumps("s" * 4_097),
            json.dumps("s" * 4_096), json.dumps("\U0001f916" * 3_000), "[" * 17 + "]" * 17,
            "[" * 16 + "]" * 16, '{"a":' * 20 + "1" + "}" * 20, "true", "false", "null", "{}",
            "[]", '""', '"twenty"', "100", "100.0", "1e2", "100.0000001", "100.00000000001",
            "2", "1", "0", "-1", "1000", "1000.0001", "10001", "[6]", "[65537]",
            "[1,1,1,1,1,1,1,1,1]",
        ]
    )  # fmt: skip
    field = st.fixed_dictionaries(
        {"name": st.text(min_size=0, max_size=70),
         "shape": st.lists(st.integers(-2, 70_000), max_size=10)},
        optional={"dtype": st.sampled_from(["float32", "float64", 3]), "units": junk,
                  "low": st.lists(st.floats(), max_size=4),
                  "high": st.lists(st.floats(), max_size=4)},
    )  # fmt: skip
    per_key = {
        "protocol_version": st.sampled_from([0, 1, 2, 3, 2.0, "2", -2, 2**53]),
        "control_rate_hz": st.sampled_from([100, 100.0, 50.0, 0, -100.0, 1e-300, 1e300, 10_000.5]),
        "loop_rate_hz": st.sampled_from([100, 200.0, 150.0, 0, -100, 10_000, 10_100, 1e6, 1e7]),
        "hold_window_ms": st.sampled_from([0, 20.0, 1000, 1000.0001, -0.001, -0.0, 1e300]),
        "observation": st.lists(field, max_size=66),
        "action": st.lists(field, max_size=3),
        "schema_sha256": st.sampled_from(["0" * 64, "A" * 64, "0" * 63, "", "g" * 64]),
        "model_sha256": st.sampled_from([None, "", "cd" * 32, "x" * 129, 7]),
    }

    @st.composite
    def documents(draw: Any) -> bytes:
        doc: dict[str, Any] = json.loads(json.dumps(base))
        doc["loop_rate_hz"] = 100.0
        raws: dict[str, str] = {}
        for key in draw(st.lists(st.sampled_from(sorted(doc)), unique=True, max_size=5)):
            how = draw(st.sampled_from(["drop", "junk", "raw", "typed", "typed"]))
            if how == "drop":
                del doc[key]
            elif how == "junk":
                doc[key] = draw(junk)
            elif how == "typed" and key in per_key:
                doc[key] = draw(per_key[key])
            else:
                marker = f"@@RAW{len(raws)}@@"
                doc[key], raws[json.dumps(marker)] = marker, draw(raw_values)
        if draw(st.booleans()):  # a nested value mutated
            fields = doc.get(draw(st.sampled_from(["observation", "action"])))
            if isinstance(fields, list) and fields and isinstance(fields[0], dict):
                key = draw(st.sampled_from(["name", "shape", "low", "high", "dtype", "units"]))
                if draw(st.booleans()):
                    marker = f"@@RAW{len(raws)}@@"
                    fields[0][key], raws[json.dumps(marker)] = marker, draw(raw_values)
                else:
                    fields[0][key] = draw(junk)
        doc.update(draw(st.dictionaries(st.text(max_size=12), junk, max_size=3)))  # extra keys
        text = json.dumps(
            doc, separators=(",", ":"), allow_nan=True, ensure_ascii=draw(st.booleans())
        )
        for marker, raw in raws.items():
            text = text.replace(marker, raw)
        if draw(st.integers(0, 3)) == 0:  # a duplicate key, through the raw text
            dup = draw(st.sampled_from(['"robot":"panda"', '"protocol_version":2', '"x":1,"x":2']))
            text = "{" + dup + "," + text[1:]
        data = text.encode("utf-8", "surrogatepass")
        cut = draw(st.integers(0, 20))
        if cut > 16:  # truncated
            data = data[: draw(st.integers(0, len(data)))]
        if draw(st.integers(0, 30)) == 0:  # past the 65,536-byte limit
            data = data[:-1] + b"," + b'"p":"' + b"p" * 65_536 + b'"}'
        return data

    return documents()


# --- malformed frames (seeded random) ----------------------------------------------------------


def golden_frames() -> list[bytes]:
    """Well-formed frames of every type (the mutations start from them)."""
    obs = struct.pack("<6f", *np.linspace(-1, 1, 6))
    error = struct.pack("<H", 13) + b"no such session: send HELLO"
    return [
        frame(HELLO, hello_text()),
        frame(WELCOME, json.dumps({"protocol_version": 2, "session_id": 7}).encode(), session=7),
        frame(OBSERVATION, obs, session=7, seq=2, flags=1),
        frame(OBSERVATION, obs, session=0, seq=2),
        frame(ACTION, struct.pack("<2f", 0.1, 0.2), session=7, seq=2),
        frame(HEARTBEAT, session=7, seq=3),
        frame(ERROR, error, session=7, seq=4),
        frame(BYE, session=7, seq=5),
        frame(DESCRIBE, seq=0),
        frame(DESCRIPTION, b'{"protocol_version":2}'),
    ]


def mutate(rng: random.Random, base: bytes) -> bytes | list[bytes]:  # noqa: C901
    """One malformed frame (or multipart message) from ``base``."""
    data = bytearray(base)
    for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
        kind = rng.randrange(12)
        if kind == 0 and data:  # truncation
            del data[rng.randrange(len(data)) :]
        elif kind == 1 and data:  # bit flips
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 2 and len(data) >= 12:  # a wrong payload_len
            length = rng.choice(
                [0, 1, len(data) - 47, len(data) - 49, 2**32 - 1, rng.randrange(2**32)]
            )
            data[8:12] = struct.pack("<I", length % 2**32)
        elif kind == 3 and len(data) >= 6:  # a random type
            data[5] = rng.randrange(256)
        elif kind == 4 and len(data) >= 8:  # random flags
            data[6:8] = struct.pack("<H", rng.randrange(2**16))
        elif kind == 5 and len(data) >= 5:  # a random version
            data[4] = rng.choice([0, 1, 3, 255, rng.randrange(256)])
        elif kind == 6:  # multipart
            parts = [bytes(data), rng.randbytes(rng.randrange(0, 64))]
            return parts + [base] * rng.randint(0, 2)
        elif kind == 7:  # junk appended
            data += rng.randbytes(rng.randint(1, 64))
        elif kind == 8:  # random bytes
            return rng.randbytes(rng.randrange(0, 300))
        elif kind == 9 and rng.random() < 0.02:  # oversized (rare: bandwidth)
            return bytes(data[:48]) + bytes(rng.choice([65_537, 70_000, 200_000]))
        elif kind == 10 and len(data) >= 48:  # random session, seq, ack, times
            start = rng.choice([12, 16, 24, 32, 40])
            data[start : start + 4] = rng.randbytes(4)
        elif kind == 11 and len(data) > 48:  # a payload byte inserted or deleted
            at = rng.randrange(48, len(data))
            if rng.random() < 0.5:
                del data[at]
            else:
                data.insert(at, rng.randrange(256))
    return bytes(data)


# --- firing ------------------------------------------------------------------------------------


class Fuzzer:
    """Sends inputs round-robin over a pool of peers, tallies answers, probes the server."""

    def __init__(self, server: ServerChild, probe_every: int = PROBE_EVERY) -> None:
        self.server, self.probe_every = server, probe_every
        self.ctx = zmq.Context.instance()
        self.pool = [self._peer() for _ in range(POOL)]
        self.used = [0] * POOL
        self.next = 0
        self.inputs = Counter[str]()
        self.answers = Counter[str]()
        self.send_dropped = 0
        self.probes: list[dict[str, Any]] = []
        self.alive_at_every_probe = True

    def _peer(self) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 1_000)
        sock.connect(self.server.endpoint)
        return sock

    def fire(self, kind: str, message: bytes | list[bytes]) -> None:
        """Send one input (a frame, or a multipart message)."""
        i = self.next
        self.next = (i + 1) % POOL
        sock = self.pool[i]
        try:
            if isinstance(message, list):
                sock.send_multipart(message)
            else:
                sock.send(message)
        except zmq.Again:
            self.send_dropped += 1
        self.used[i] += 1
        self.inputs[kind] += 1
        if self.used[i] >= PER_PEER:  # retire it: a new identity
            self._drain(sock)
            sock.close(0)
            self.pool[i], self.used[i] = self._peer(), 0
        total = sum(self.inputs.values())
        if not total % POOL:
            for peer in self.pool:
                self._drain(peer)
        if not total % self.probe_every:
            self.probe()

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        while sock.poll(0):
            raw = sock.recv()
            if len(raw) < HEADER.size or raw[:4] != b"FFEP":
                self.answers["malformed"] += 1
                continue
            mtype = raw[5]
            if mtype == ERROR and len(raw) >= HEADER.size + 2:
                (code,) = struct.unpack_from("<H", raw, HEADER.size)
                self.answers[f"ERROR {CODE_NAMES.get(code, code)}"] += 1
            else:
                self.answers[TYPE_NAMES.get(mtype, str(mtype))] += 1

    def probe(self) -> dict[str, Any]:
        """A fresh controller: WELCOME (retrying while the server is full), then 3 actions."""
        from factoryfloor.edge_runtime.client import EdgeClient, HandshakeError

        alive = self.server.alive()
        self.alive_at_every_probe &= alive
        client = EdgeClient(self.server.endpoint)
        t0, welcome_s, actions, error = time.monotonic(), None, 0, ""
        try:
            while welcome_s is None and time.monotonic() - t0 < 5.0:
                try:
                    client.handshake(good_hello("probe"), timeout_s=2.0)
                    welcome_s = time.monotonic() - t0
                except HandshakeError as exc:
                    error = str(exc)[:200]
                    if exc.code != TOO_MANY_SESSIONS:
                        break
                    time.sleep(0.02)
            for k in range(3 if welcome_s is not None else 0):
                obs = np.full(6, k, np.float32)
                client.send_observation(obs)
                action = client.receive_action(2.0)
                actions += action is not None and bool(np.allclose(action, obs[:2] / 10))
            client.send_bye()
        finally:
            client.close()
        result = {
            "after_inputs": sum(self.inputs.values()),
            "alive": alive,
            "welcome_s": None if welcome_s is None else round(welcome_s, 4),
            "actions": actions,
            "ok": alive and welcome_s is not None and actions == 3,
        }
        if not result["ok"]:
            result["error"] = error
        self.probes.append(result)
        return result

    def close(self) -> None:
        """Read the last answers, then close the pool."""
        time.sleep(0.2)
        for sock in self.pool:
            self._drain(sock)
            sock.close(0)


def fuzz_hellos(fuzzer: Fuzzer, n: int) -> int:
    """``n`` Hypothesis HELLO documents, each fired as a HELLO frame; returns how many."""
    from hypothesis import HealthCheck, Phase, given, settings

    fired = [0]

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hello_strategy())
    def fire(document: bytes) -> None:
        fuzzer.fire("hello_document", frame(HELLO, document))  # oversized ones: BAD_LENGTH
        fired[0] += 1

    fire()
    return fired[0]


def fuzz_frames(fuzzer: Fuzzer, n: int, seed: int) -> None:
    rng = random.Random(seed)
    bases = golden_frames()
    for _ in range(n):
        fuzzer.fire("malformed_frame", mutate(rng, rng.choice(bases)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="about 30 s")
    parser.add_argument("--hellos", type=int, default=None, help="HELLO documents (10,000)")
    parser.add_argument("--frames", type=int, default=None, help="malformed frames (100,000)")
    parser.add_argument("--seed", type=int, default=20_240_601)
    parser.add_argument("--out", type=Path, default=Path("bench_results/edge_fuzz.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    hellos = args.hellos if args.hellos is not None else (2_000 if args.quick else 10_000)
    frames = args.frames if args.frames is not None else (20_000 if args.quick else 100_000)
    results: dict[str, Any] = {
        "benchmark": "edge_fuzz",
        "mode": "quick" if args.quick else "default",
        "seed": args.seed,
        "calibration_before": calibration(),
    }
    server = ServerChild()
    fuzzer = Fuzzer(server)
    t0 = time.monotonic()
    try:
        fuzzer.probe()  # before anything
        fired = fuzz_hellos(fuzzer, hellos)
        t_hellos = time.monotonic() - t0
        print(f"HELLO documents: {fired} in {t_hellos:.1f} s", flush=True)
        fuzz_frames(fuzzer, frames, args.seed)
        t_frames = time.monotonic() - t0 - t_hellos
        print(f"malformed frames: {frames} in {t_frames:.1f} s", flush=True)
        fuzzer.close()
        fuzzer.probe()  # after everything
        metrics = server.metrics()
    finally:
        exit_code = server.stop()
    wall = time.monotonic() - t0
    counters = metrics.get("counters", {})
    probes_ok = sum(p["ok"] for p in fuzzer.probes)
    results.update(
        hello_documents=fired,
        malformed_frames=frames,
        inputs=dict(fuzzer.inputs),
        send_dropped=fuzzer.send_dropped,
        answers=dict(sorted(fuzzer.answers.items())),
        server_counters=dict(sorted(counters.items())),
        server_gauges=metrics.get("gauges", {}),
        probes={"total": len(fuzzer.probes), "ok": probes_ok,
                "failed": [p for p in fuzzer.probes if not p["ok"]][:20],
                "welcome_s_max": max((p["welcome_s"] or 0) for p in fuzzer.probes)},
        server_alive_at_every_probe=fuzzer.alive_at_every_probe,
        server_exit_code=exit_code,
        seconds={"hellos": round(t_hellos, 1), "frames": round(t_frames, 1),
                 "total": round(wall, 1)},
    )  # fmt: skip
    results["calibration_after"] = calibration()
    checks = {
        "server_exit_code_0": exit_code == 0,
        "server_alive_at_every_probe": fuzzer.alive_at_every_probe,
        "every_probe_served": probes_ok == len(fuzzer.probes),
        "frame_failures_0": counters.get("frame_failures", 0) == 0,
        "no_internal_answers": fuzzer.answers.get("ERROR INTERNAL", 0) == 0,
    }
    results["checks"], results["pass"] = checks, all(checks.values())
    print_report(results)
    from factoryfloor.policies.atomic import atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)  # a temporary file, then a rename
    print(f"{'PASS' if results['pass'] else 'FAIL'}; wrote {args.out}")
    return 0 if results["pass"] else 1


def print_report(r: dict[str, Any]) -> None:
    s = r["seconds"]
    print(
        f"\n{r['hello_documents']} HELLO documents ({s['hellos']} s) and {r['malformed_frames']} "
        f"malformed frames ({s['frames']} s); {r['send_dropped']} not sent (queue full)"
    )
    print(f"{'answer':<28}{'count':>10}")
    for name, n in r["answers"].items():
        print(f"{name:<28}{n:>10}")
    c = r["server_counters"]
    rejected = {k: v for k, v in c.items() if k.startswith("rejected_")}
    print(f"server rejected: {rejected}")
    keys = ("frames_received", "frames_throttled", "frame_failures", "error_replies_suppressed",
            "sessions_opened", "sessions_evicted", "peers_banned")  # fmt: skip
    print("server: " + ", ".join(f"{k} {c.get(k, 0)}" for k in keys))
    p = r["probes"]
    print(f"probes served: {p['ok']}/{p['total']} (slowest WELCOME {p['welcome_s_max']} s)")
    print(f"server exit code: {r['server_exit_code']}; alive at every probe: "
          f"{r['server_alive_at_every_probe']}")  # fmt: skip
    for name, ok in r["checks"].items():
        print(f"check {name}: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    raise SystemExit(main())
