"""The edge hot path: compiled where a C compiler was at install time, pure Python elsewhere.

Three steps run for every message, on both sides of the wire:

- ``Gate.check``: is a frame one of this session's stream (size, the fixed 16 header bytes
  with its flags), is its sequence field newer than the last (the session check), are its
  values finite; its floats land in a preallocated row (server: the batch that inference
  reads; controller: the action).
- ``Encoder.encode``: a stream frame written into one preallocated buffer.
- ``Limiter.limit``: the safety layer's command for a fresh action (limits, rate limit,
  speed bounds).

Each has a reference in Python (``Reference*``), the definition, and a compiled twin
(``Compiled*``, ``_fastpath.c`` through cffi) that the tests hold to the same results, bit for
bit, on the golden frames and on fuzzed inputs. ``gate``, ``encoder`` and ``limiter`` give the
compiled one when it was built, else the reference with one warning line. The environment
variable ``FACTORYFLOOR_EDGE_PURE_PYTHON=1`` asks for the reference (to compare them).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from factoryfloor.edge_runtime import protocol as p

NOT_STREAM, STALE, NONFINITE = -1, -2, -3  # Gate.check's refusals (else: the frame's flags)
SEQ, ACK_SEQ = 0, 1  # which header field the session check applies to
U64_MAX = 2**64 - 1
_TAIL_OFFSET, _PAYLOAD_OFFSET = p.FIXED_HEAD, p.HEADER.size


def _load_compiled() -> tuple[Any, Any, str]:
    """(ffi, lib, why not) of the compiled module; (None, None, reason) when unavailable."""
    if os.environ.get("FACTORYFLOOR_EDGE_PURE_PYTHON") == "1":
        return None, None, "FACTORYFLOOR_EDGE_PURE_PYTHON=1"
    try:
        from factoryfloor.edge_runtime import _fastpath  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, None, str(exc)
    return _fastpath.ffi, _fastpath.lib, ""


_ffi, _lib, WHY_PURE = _load_compiled()
COMPILED = _lib is not None
if not COMPILED and not WHY_PURE.startswith("FACTORYFLOOR_EDGE_PURE_PYTHON"):
    print(
        "warning: factoryfloor's compiled edge hot path is not built (no C compiler or cffi at "
        "install: reinstall with gcc present); the pure-Python path serves, slower per message",
        file=sys.stderr,
    )


def stream_heads(codec: p.StreamCodec) -> bytes:
    """The codec's fixed 16-byte header starts, flags 0 first (head ``i`` carries flags ``i``)."""
    heads = codec.heads
    return b"".join(heads[f] for f in sorted(heads))


class ReferenceGate:
    """Checks frames of one stream (the definition; ``CompiledGate`` is its twin).

    Args:
        codec: The session's codec of the stream (OBSERVATION or ACTION).
        field: The header field the session check applies to (``SEQ`` or ``ACK_SEQ``).
        rows: Where values land: a C-contiguous float32 array ``(R, floats)``.
    """

    def __init__(self, codec: p.StreamCodec, field: int, rows: np.ndarray) -> None:
        _check_rows(rows, codec.payload_bytes // 4)
        self.heads = stream_heads(codec)
        self.frame_bytes, self.field, self.rows = codec.frame_bytes, field, rows
        self.tail: Any = [0, 0, 0, 0]  # seq, ack_seq, t_send_ns, t_echo_ns of the last check

    def check(self, frame: bytes, lo: int, hi: int, row: int = 0) -> int:
        """The frame's flags, or why it is refused.

        Returns:
            Its flags, or ``NOT_STREAM``, ``STALE`` (the field outside ``(lo, hi]``) or
            ``NONFINITE`` (values copied to ``rows[row]`` all the same).
        """
        if len(frame) != self.frame_bytes:
            return NOT_STREAM
        head = frame[:_TAIL_OFFSET]
        for flags in range(len(self.heads) // _TAIL_OFFSET):
            if self.heads[flags * _TAIL_OFFSET : (flags + 1) * _TAIL_OFFSET] == head:
                break
        else:
            return NOT_STREAM
        self.tail = list(p.TAIL.unpack_from(frame, _TAIL_OFFSET))
        if not lo < self.tail[self.field] <= hi:
            return STALE
        values = np.frombuffer(frame, "<f4", offset=_PAYLOAD_OFFSET)
        self.rows[row] = values
        return flags if bool(np.isfinite(values).all()) else NONFINITE


class CompiledGate(ReferenceGate):
    """``ReferenceGate`` through ``ffep_gate`` (one C call per frame)."""

    def __init__(self, codec: p.StreamCodec, field: int, rows: np.ndarray) -> None:
        super().__init__(codec, field, rows)
        self.tail = _ffi.new("uint64_t[4]")
        self._rows = _row_pointers(rows)
        self._n_heads = len(self.heads) // _TAIL_OFFSET

    def check(self, frame: bytes, lo: int, hi: int, row: int = 0) -> int:
        """See ``ReferenceGate.check``."""
        return int(
            _lib.ffep_gate(
                frame, len(frame), self.heads, self._n_heads, self.frame_bytes, self.field,
                lo, hi, self.tail, self._rows[row],
            )
        )  # fmt: skip


class MixedGate(ReferenceGate):
    """``ReferenceGate`` for specs with uint8 fields (Python only; compiled or not).

    The payload's bytes land unchanged in a uint8 row; only its float32 spans are checked for
    finiteness (image bytes are never read as floats).

    Args:
        codec: The session's OBSERVATION codec (``payload_bytes`` the layout's size).
        field: The header field the session check applies to (``SEQ``).
        rows: Where payloads land: a C-contiguous uint8 array ``(R, payload_bytes)``.
        float_spans: ``(start, end)`` byte ranges of the float32 fields in a payload.
    """

    def __init__(
        self,
        codec: p.StreamCodec,
        field: int,
        rows: np.ndarray,
        float_spans: Sequence[tuple[int, int]],
    ) -> None:
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != codec.payload_bytes:
            raise ValueError(f"rows must be uint8 (R, {codec.payload_bytes}), not {rows.shape}")
        if not rows.flags.c_contiguous:
            raise ValueError("rows must be C-contiguous")
        self.heads = stream_heads(codec)
        self.frame_bytes, self.field, self.rows = codec.frame_bytes, field, rows
        self.tail = [0, 0, 0, 0]
        self._flags = {head: f for f, head in codec.heads.items()}
        self._floats = [
            [rows[r, a:b].view("<f4") for a, b in float_spans] for r in range(len(rows))
        ]

    def check(self, frame: bytes, lo: int, hi: int, row: int = 0) -> int:
        """See ``ReferenceGate.check``."""
        if len(frame) != self.frame_bytes:
            return NOT_STREAM
        flags = self._flags.get(frame[:_TAIL_OFFSET])
        if flags is None:
            return NOT_STREAM
        self.tail = list(p.TAIL.unpack_from(frame, _TAIL_OFFSET))
        if not lo < self.tail[self.field] <= hi:
            return STALE
        self.rows[row] = np.frombuffer(frame, np.uint8, offset=_PAYLOAD_OFFSET)
        for values in self._floats[row]:
            if not bool(np.isfinite(values).all()):
                return NONFINITE
        return flags


class ReferenceEncoder:
    """Writes one stream's frames (flags 0) into one buffer (the definition).

    Args:
        codec: The session's codec of the stream.
        rows: Where the values come from: a C-contiguous float32 array ``(R, floats)``.
    """

    def __init__(self, codec: p.StreamCodec, rows: np.ndarray) -> None:
        _check_rows(rows, codec.payload_bytes // 4)
        self.head, self.rows = codec.heads[0], rows
        self.buffer = bytearray(codec.frame_bytes)

    def encode(self, seq: int, ack_seq: int, t_send_ns: int, t_echo_ns: int, row: int) -> bytearray:
        """The frame of ``rows[row]`` in ``buffer`` (valid until the next call)."""
        tail = p.TAIL.pack(seq, ack_seq, t_send_ns, t_echo_ns)
        self.buffer[:] = self.head + tail + self.rows[row].tobytes()
        return self.buffer


class CompiledEncoder(ReferenceEncoder):
    """``ReferenceEncoder`` through ``ffep_encode``."""

    def __init__(self, codec: p.StreamCodec, rows: np.ndarray) -> None:
        super().__init__(codec, rows)
        self._buffer = _ffi.from_buffer(self.buffer)
        self._rows = _row_pointers(rows)
        self._n = rows.shape[1]

    def encode(self, seq: int, ack_seq: int, t_send_ns: int, t_echo_ns: int, row: int) -> bytearray:
        """See ``ReferenceEncoder.encode``."""
        _lib.ffep_encode(
            self._buffer, self.head, seq, ack_seq, t_send_ns, t_echo_ns, self._rows[row], self._n
        )
        return self.buffer


NormGroups = Sequence[tuple[Sequence[int], float]]


class ReferenceLimiter:
    """The safety layer's command arithmetic (the definition; ``CompiledLimiter`` is its twin).

    Each value is clipped to ``[low, high]``, then to ``last +- max_change`` (float32); then each
    group's Euclidean norm (a double sum in index order) is scaled down to its bound.

    Args:
        low, high: Action limits, float32 ``(n,)``.
        max_change: Largest change per cycle, float32 ``(n,)``.
        groups: (indices, bound) of each norm limit (a TCP speed bound, say).
    """

    def __init__(
        self, low: np.ndarray, high: np.ndarray, max_change: np.ndarray, groups: NormGroups
    ) -> None:
        self.low, self.high, self.max_change = (
            np.ascontiguousarray(x, dtype=np.float32).reshape(-1) for x in (low, high, max_change)
        )
        self.groups = [(tuple(int(i) for i in idx), float(bound)) for idx, bound in groups]
        self.out = np.zeros_like(self.low)

    def limit(self, action: np.ndarray, last: np.ndarray) -> int:
        """The command for a fresh ``action`` after ``last``, written to ``out``.

        Returns:
            1 when it differs from ``action``, 0 when not, -1 for a non-finite action (``out``
            untouched).
        """
        action, last = _f32(action, self.low.size), _f32(last, self.low.size)
        if not bool(np.isfinite(action).all()):
            return -1
        value = np.minimum(np.maximum(action, self.low), self.high)
        below = (last - self.max_change).astype(np.float32)
        above = (last + self.max_change).astype(np.float32)
        command = np.minimum(np.maximum(value, below), above).astype(np.float32)
        for indices, bound in self.groups:
            norm = math.sqrt(sum(float(command[i]) * float(command[i]) for i in indices))
            if norm > bound:
                scale = np.float32(bound / norm)
                for i in indices:
                    command[i] = command[i] * scale
        self.out[:] = command
        return int(not np.array_equal(command, action))


class CompiledLimiter(ReferenceLimiter):
    """``ReferenceLimiter`` through ``ffep_limit``."""

    def __init__(
        self, low: np.ndarray, high: np.ndarray, max_change: np.ndarray, groups: NormGroups
    ) -> None:
        super().__init__(low, high, max_change, groups)
        packed = [x for idx, _ in self.groups for x in (len(idx), *idx)]
        self._groups = np.asarray(packed or [0], np.int32)
        self._bounds = np.asarray([b for _, b in self.groups] or [0.0], np.float64)
        self._ptrs = [
            _ffi.from_buffer(t, a)
            for t, a in (
                ("float[]", self.low), ("float[]", self.high), ("float[]", self.max_change),
                ("int32_t[]", self._groups), ("double[]", self._bounds), ("float[]", self.out),
            )
        ]  # fmt: skip
        self._n = self.low.size

    def limit(self, action: np.ndarray, last: np.ndarray) -> int:
        """See ``ReferenceLimiter.limit`` (float32 ``(n,)`` arrays)."""
        low, high, change, groups, bounds, out = self._ptrs
        return int(
            _lib.ffep_limit(
                _ffi.from_buffer("float[]", _f32(action, self._n)), low, high,
                _ffi.from_buffer("float[]", _f32(last, self._n)), change, self._n, groups,
                bounds, len(self.groups), out,
            )
        )  # fmt: skip


def _f32(array: np.ndarray, n: int) -> np.ndarray:
    if array.dtype == np.float32 and array.flags.c_contiguous and array.size == n:
        return array
    result = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    if result.size != n:
        raise ValueError(f"{result.size} values where {n} are expected")
    return result


def _row_pointers(rows: np.ndarray) -> list[Any]:
    """A ``float *`` to each row of a C-contiguous float32 array (the array must outlive them)."""
    return [_ffi.cast("float *", rows[i].ctypes.data) for i in range(len(rows))]


def _check_rows(rows: np.ndarray, floats: int) -> None:
    if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != floats:
        raise ValueError(f"rows must be float32 (R, {floats}), not {rows.dtype} {rows.shape}")
    if not rows.flags.c_contiguous:
        raise ValueError("rows must be C-contiguous")


def gate(
    codec: p.StreamCodec,
    field: int,
    rows: np.ndarray,
    float_spans: Sequence[tuple[int, int]] | None = None,
) -> ReferenceGate:
    """The compiled gate when built, else the reference; ``MixedGate`` for uint8 ``rows``.

    Args:
        codec: The stream's codec.
        field: ``SEQ`` or ``ACK_SEQ``.
        rows: float32 ``(R, floats)``, or uint8 ``(R, payload_bytes)`` for a mixed spec.
        float_spans: The float32 byte ranges of a mixed spec's payload (uint8 ``rows`` only).
    """
    if rows.dtype == np.uint8:
        return MixedGate(codec, field, rows, float_spans or ())
    return (CompiledGate if COMPILED else ReferenceGate)(codec, field, rows)


def encoder(codec: p.StreamCodec, rows: np.ndarray) -> ReferenceEncoder:
    """The compiled encoder when built, else the reference."""
    return (CompiledEncoder if COMPILED else ReferenceEncoder)(codec, rows)


def limiter(
    low: np.ndarray, high: np.ndarray, max_change: np.ndarray, groups: NormGroups
) -> ReferenceLimiter:
    """The compiled limiter when built, else the reference."""
    return (CompiledLimiter if COMPILED else ReferenceLimiter)(low, high, max_change, groups)
