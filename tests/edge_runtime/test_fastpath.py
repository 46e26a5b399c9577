"""The compiled hot path and its pure-Python reference give the same frames and decisions.

Held to each other on the golden frames of ``docs/ffep`` and on 100,000+ fuzzed inputs per
kernel (mutated, truncated and forged frames, sequence windows at their edges, NaN/Inf/-0 and
subnormal values, random limits and speed bounds), and the gate to ``protocol.decode``: a frame
the gate accepts is one ``decode`` accepts with the same fields. Then the fallback: without the
compiled module, one warning line and the reference serves; without a compiler, the build warns
and the install goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factoryfloor.edge_runtime import fastpath as fp
from factoryfloor.edge_runtime import protocol as p

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((ROOT / "docs" / "ffep" / "golden_frames.json").read_text())["frames"]
STREAMS = [f for f in GOLDEN if f["type"] in ("OBSERVATION", "ACTION")]
FUZZ = 100_000
compiled = pytest.mark.skipif(not fp.COMPILED, reason=f"not built here: {fp.WHY_PURE}")


def test_the_compiled_path_is_built_wherever_a_compiler_is():
    """`make test` installs in editable mode, which compiles it: CI runs the compiled path."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the reference serves (tested below)")
    if os.environ.get("FACTORYFLOOR_EDGE_PURE_PYTHON") == "1":
        pytest.skip("the reference was asked for")
    assert fp.COMPILED, fp.WHY_PURE


def _gates(kind: p.MsgType, session: int, floats: int, field: int):
    codec = p.StreamCodec(kind, session, floats)
    rows = [np.zeros((2, floats), np.float32), np.zeros((2, floats), np.float32)]
    return fp.ReferenceGate(codec, field, rows[0]), fp.CompiledGate(codec, field, rows[1])


def _same_check(ref, fast, frame: bytes, lo: int, hi: int) -> int:
    a, b = ref.check(frame, lo, hi, 1), fast.check(frame, lo, hi, 1)
    assert a == b, (frame.hex(), lo, hi)
    if a != fp.NOT_STREAM:
        assert list(ref.tail) == list(fast.tail)
    if a >= 0 or a == fp.NONFINITE:
        assert ref.rows[1].tobytes() == fast.rows[1].tobytes()
    return a


@compiled
@pytest.mark.parametrize("golden", STREAMS, ids=[f["name"] for f in STREAMS])
def test_golden_stream_frames_get_the_same_verdicts(golden):
    frame = bytes.fromhex(golden["frame_hex"])
    kind = p.MsgType[golden["type"]]
    floats = len(bytes.fromhex(golden["payload_hex"])) // 4
    field = fp.SEQ if kind is p.MsgType.OBSERVATION else fp.ACK_SEQ
    ref, fast = _gates(kind, golden["session_id"], floats, field)
    value = golden["seq"] if field == fp.SEQ else golden["ack_seq"]
    assert _same_check(ref, fast, frame, value - 1, fp.U64_MAX) == golden["flags"]
    assert _same_check(ref, fast, frame, value, fp.U64_MAX) == fp.STALE
    assert _same_check(ref, fast, frame, 0, value - 1) == fp.STALE
    assert _same_check(ref, fast, frame[:-1], 0, fp.U64_MAX) == fp.NOT_STREAM
    other, _ = _gates(kind, golden["session_id"] + 1, floats, field)
    assert other.check(frame, 0, fp.U64_MAX) == fp.NOT_STREAM  # another session's stream


def _fuzzed_frames(rng: np.random.Generator, codec: p.StreamCodec, n: int):
    """Valid frames, then each mutated one way: bits, bytes, lengths, heads, special values."""
    floats = codec.payload_bytes // 4
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38, -3.4e38], np.float32)
    edges = [0, 1, 2, 5, 6, 2**63, fp.U64_MAX - 1, fp.U64_MAX]
    for i in range(n):
        tail = [edges[int(rng.integers(0, len(edges)))] if rng.random() < 0.3
                else int(rng.integers(0, 2**40)) for _ in range(4)]  # fmt: skip
        values = rng.normal(0, 10, floats).astype(np.float32)
        if rng.random() < 0.3:
            values[rng.integers(0, floats)] = rng.choice(specials)
        flags = int(rng.integers(0, len(codec.heads)))
        frame = bytearray(codec.encode(*tail, values.tobytes(), flags))
        way = i % 6
        if way == 1:  # bit flips anywhere
            for _ in range(int(rng.integers(1, 4))):
                bit = int(rng.integers(0, 8 * len(frame)))
                frame[bit // 8] ^= 1 << (bit % 8)
        elif way == 2:  # a flip in the fixed head (magic .. session): never this stream
            frame[int(rng.integers(0, p.FIXED_HEAD))] ^= int(rng.integers(1, 256))
        elif way == 3:  # truncated or extended
            cut = int(rng.integers(0, len(frame) + 8))
            frame = frame[:cut] if cut < len(frame) else frame + bytes(cut - len(frame))
        elif way == 4:  # random bytes of the right length
            frame = bytearray(rng.integers(0, 256, len(frame), dtype=np.uint8).tobytes())
        elif way == 5:  # raw float bit patterns: NaN payloads, subnormals, signed zeros
            raw = rng.integers(0, 2**32, floats, dtype=np.uint64).astype(np.uint32)
            frame[p.HEADER.size :] = raw.astype("<u4").tobytes()
        yield bytes(frame), tail


@compiled
@pytest.mark.parametrize(
    ("kind", "field", "floats"),
    [(p.MsgType.OBSERVATION, fp.SEQ, 22), (p.MsgType.ACTION, fp.ACK_SEQ, 4)],
    ids=["observation", "action"],
)
def test_gate_matches_the_reference_and_decode_on_fuzzed_frames(kind, field, floats):
    rng = np.random.default_rng(int(kind))
    codec = p.StreamCodec(kind, 7, floats)
    ref, fast = _gates(kind, 7, floats, field)
    verdicts = {}
    for frame, tail in _fuzzed_frames(rng, codec, FUZZ):
        los = [0, max(0, tail[field] - 1), tail[field], fp.U64_MAX]  # Python ints: exact
        his = [fp.U64_MAX, tail[field], max(0, tail[field] - 1)]
        lo, hi = los[int(rng.integers(0, 4))], his[int(rng.integers(0, 3))]
        verdict = _same_check(ref, fast, frame, lo, hi)
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        if verdict >= 0:  # what the gate accepts, the protocol's decoder accepts alike
            msg = p.decode(frame)
            assert (msg.type, msg.session_id, int(msg.flags)) == (kind, 7, verdict)
            assert [msg.seq, msg.ack_seq, msg.t_send_ns, msg.t_echo_ns] == list(fast.tail)
            assert np.isfinite(np.frombuffer(msg.payload, "<f4")).all()
        elif verdict == fp.NOT_STREAM:
            assert codec.flags_of(frame) is None  # the codec's recogniser agrees
    assert set(verdicts) == {fp.NOT_STREAM, fp.STALE, fp.NONFINITE, 0} | (
        {1} if kind is p.MsgType.OBSERVATION else set()
    )  # every verdict was reached
    assert min(verdicts.values()) > 100


@compiled
def test_encoder_matches_the_reference_and_the_codec_on_fuzzed_values():
    rng = np.random.default_rng(3)
    codec = p.StreamCodec(p.MsgType.ACTION, 12, 4)
    rows = rng.integers(0, 2**32, (FUZZ, 4), dtype=np.uint64).astype(np.uint32).view(np.float32)
    rows = np.ascontiguousarray(rows)
    ref, fast = fp.ReferenceEncoder(codec, rows), fp.CompiledEncoder(codec, rows)
    for row in range(FUZZ):
        tail = [int(x) for x in rng.integers(0, 2**63, 4, dtype=np.uint64)]
        frame = bytes(fast.encode(*tail, row))
        assert frame == bytes(ref.encode(*tail, row))
        if row % 97 == 0:
            assert frame == codec.encode(*tail, rows[row].tobytes())


def _limiters(rng: np.random.Generator, n: int):
    low = rng.uniform(-2, 0, n).astype(np.float32)
    high = (low + rng.uniform(0, 3, n)).astype(np.float32)
    change = rng.uniform(1e-3, 2, n).astype(np.float32)
    groups = []
    if n >= 3 and rng.random() < 0.7:
        groups.append(((0, 1, 2), float(rng.uniform(0.01, 2))))
    if n >= 7 and rng.random() < 0.5:
        groups.append(((3, 4, 5, 6), float(rng.uniform(0.01, 2))))
    args = (low, high, change, groups)
    return fp.ReferenceLimiter(*args), fp.CompiledLimiter(*args)


@compiled
def test_limiter_matches_the_reference_on_fuzzed_actions():
    rng = np.random.default_rng(4)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, 3e38], np.float32)
    codes = {}
    ref, fast = _limiters(rng, 4)
    for i in range(FUZZ):
        if i % 500 == 0:
            ref, fast = _limiters(rng, int(rng.choice([1, 3, 4, 7, 9])))
        n = ref.low.size
        action = (rng.normal(0, 2, n) * 10 ** rng.uniform(-3, 2)).astype(np.float32)
        if rng.random() < 0.1:
            action[rng.integers(0, n)] = rng.choice(specials)
        last = rng.uniform(ref.low, ref.high).astype(np.float32)
        fast.out[:] = ref.out[:] = 7.0  # untouched for a non-finite action
        a, b = ref.limit(action, last), fast.limit(action, last)
        assert a == b, (action, last)
        assert ref.out.tobytes() == fast.out.tobytes(), (action, last)
        codes[a] = codes.get(a, 0) + 1
    assert set(codes) == {-1, 0, 1} and min(codes.values()) > 100


def test_limiter_reference_bounds_what_the_safety_layer_promises():
    """Limits and rate limit per component; then the speed bounds, the hard ones, win."""
    rng = np.random.default_rng(5)
    for _ in range(2_000):
        ref, _ = _limiters(rng, 9)
        action = rng.normal(0, 3, 9).astype(np.float32)
        last = rng.uniform(ref.low, ref.high).astype(np.float32)
        assert ref.limit(action, last) in (0, 1)
        out, free = ref.out, np.ones(9, bool)
        for indices, bound in ref.groups:
            assert np.linalg.norm(out[list(indices)]) <= bound * (1 + 1e-6)
            free[list(indices)] = False
        ulps = 2 * np.spacing(np.abs(last) + ref.max_change)  # float32 rounding of last +- change
        assert np.all((np.abs(out - last) <= ref.max_change + ulps)[free])
        within = np.minimum(np.maximum(action, ref.low), ref.high)
        rate_free = free & (np.abs(within - last) <= ref.max_change)
        np.testing.assert_array_equal(out[rate_free], within[rate_free])


def test_without_the_compiled_module_one_warning_line_and_the_reference_serves():
    code = (
        "import sys; sys.modules['factoryfloor.edge_runtime._fastpath'] = None\n"
        "from factoryfloor.edge_runtime import fastpath, protocol as p\n"
        "import numpy as np\n"
        "codec = p.StreamCodec(p.MsgType.OBSERVATION, 3, 2)\n"
        "gate = fastpath.gate(codec, fastpath.SEQ, np.zeros((1, 2), np.float32))\n"
        "frame = codec.encode(4, 0, 9, 0, np.ones(2, np.float32).tobytes())\n"
        "print(fastpath.COMPILED, type(gate).__name__, gate.check(frame, 3, 2**64 - 1))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FACTORYFLOOR_EDGE_PURE_PYTHON"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "ReferenceGate", "0"]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: factoryfloor's compiled edge hot")


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a compiler to fail to find")
def test_a_build_without_a_compiler_warns_and_goes_on(tmp_path):
    """setup.py's extension is optional: with no working compiler the build still succeeds."""
    env = {**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false"}
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "building" in done.stderr and "failed" in done.stderr  # setuptools' warning
    assert not list((tmp_path / "lib").rglob("_fastpath*.so"))
