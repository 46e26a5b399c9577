"""The byte layout of OBSERVATION payloads with mixed dtypes (``docs/protocol.md``, section 2).

An observation field declares ``"dtype"``: ``"float32"`` (the default, also when absent or
``""``) or ``"uint8"`` (camera images). The payload is each field's values in spec order,
raveled in C order, each in its own dtype: float32 little-endian, uint8 as raw bytes. After
every field the payload is padded with zero bytes to the next multiple of 4, so that every
field starts at a 4-byte aligned offset and the whole payload is a multiple of 4 bytes
(float32 fields have no padding: a float32-only payload is exactly the old one).

Example: fields ``state`` float32 ``[20]`` and ``image`` uint8 ``[3, 5, 5]`` (75 bytes):
``state`` at bytes 0..80, ``image`` at 80..155, 1 zero byte, 156 bytes in all.

``Layout`` computes the offsets once per spec, packs a mapping into a payload (controller
side), unpacks one into per-key arrays, and splits a batch of payload rows ``(B, size)`` uint8
into per-key views ``(B, *shape)`` of the right dtype without copying (server side).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from factoryfloor.edge_runtime.protocol import MAX_OBSERVATION_BYTES, ErrorCode, ProtocolError

FLOAT32, UINT8 = "float32", "uint8"
WIRE_DTYPES: dict[str, np.dtype[Any]] = {FLOAT32: np.dtype("<f4"), UINT8: np.dtype("u1")}
ALIGN = 4


def field_dtype(field: Mapping[str, Any]) -> str:
    """The wire dtype of a spec field: ``"float32"`` (default) or ``"uint8"``.

    Raises:
        ProtocolError: ``BAD_PAYLOAD`` for any other dtype (this side never guesses).
    """
    dtype = field.get("dtype") or FLOAT32
    if dtype not in WIRE_DTYPES:
        raise ProtocolError(
            ErrorCode.BAD_PAYLOAD,
            f"field {str(field.get('name'))[:64]!r} has dtype {str(dtype)[:32]!r}; FFEP/2 "
            f"carries {sorted(WIRE_DTYPES)}",
        )
    return str(dtype)


def padded(nbytes: int) -> int:
    """``nbytes`` rounded up to the next multiple of 4."""
    return -(-nbytes // ALIGN) * ALIGN


@dataclass(frozen=True)
class Slot:
    """One field's place in a payload.

    Attributes:
        name: The field's name.
        dtype: Its NumPy dtype (``<f4`` or ``u1``).
        shape: Its shape.
        offset: Its first byte in the payload (a multiple of 4).
        nbytes: Its bytes without padding (``count * itemsize``).
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def count(self) -> int:
        """Values in the field (product of ``shape``)."""
        return math.prod(self.shape)


class Layout:
    """The payload layout of an observation spec.

    Args:
        fields: Observation fields (``name``, ``shape``, optional ``dtype``).

    Raises:
        ProtocolError: ``BAD_PAYLOAD`` for an unknown dtype, ``BAD_LENGTH`` when the payload
            would exceed ``MAX_OBSERVATION_BYTES``.
    """

    def __init__(self, fields: Sequence[Mapping[str, Any]]) -> None:
        slots, offset = [], 0
        for field in fields:
            dtype = WIRE_DTYPES[field_dtype(field)]
            shape = tuple(int(n) for n in field["shape"])
            nbytes = math.prod(shape) * dtype.itemsize
            slots.append(Slot(str(field["name"]), dtype, shape, offset, nbytes))
            offset += padded(nbytes)
        if offset > MAX_OBSERVATION_BYTES:
            raise ProtocolError(
                ErrorCode.BAD_LENGTH,
                f"an observation of {offset} bytes exceeds {MAX_OBSERVATION_BYTES}",
            )
        self.slots: tuple[Slot, ...] = tuple(slots)
        self.size = offset  # payload bytes, a multiple of 4
        self.mixed = any(s.dtype != WIRE_DTYPES[FLOAT32] for s in slots)
        self.float_spans = tuple(
            (s.offset, s.offset + s.nbytes) for s in slots if s.dtype == WIRE_DTYPES[FLOAT32]
        )

    def pack(self, obs: Mapping[str, Any]) -> bytes:
        """The payload of one observation, ``size`` bytes.

        Args:
            obs: Field name -> values of the field's size (any shape of that size); a uint8
                field takes only uint8 arrays (no silent conversion of floats to bytes).

        Raises:
            ValueError: For a missing key, a wrong size, or a non-uint8 array for a uint8 field.
        """
        buffer = bytearray(self.size)
        for slot in self.slots:
            if slot.name not in obs:
                raise ValueError(f"observation lacks the key {slot.name!r}")
            value = np.asarray(obs[slot.name])
            if slot.dtype == WIRE_DTYPES[UINT8] and value.dtype != np.uint8:
                raise ValueError(f"{slot.name!r} is a uint8 field; got {value.dtype}")
            flat = np.ascontiguousarray(value, dtype=slot.dtype).reshape(-1)
            if flat.size != slot.count:
                raise ValueError(f"{slot.name!r} has {flat.size} values; its spec {slot.count}")
            buffer[slot.offset : slot.offset + slot.nbytes] = flat.tobytes()
        return bytes(buffer)

    def unpack(self, payload: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
        """Per-key read-only arrays (the fields' shapes and dtypes) of one payload.

        Raises:
            ProtocolError: ``BAD_LENGTH`` when the payload is not ``size`` bytes.
        """
        if len(payload) != self.size:
            raise ProtocolError(
                ErrorCode.BAD_LENGTH, f"{len(payload)} payload bytes; the spec has {self.size}"
            )
        return {
            s.name: np.frombuffer(payload, s.dtype, s.count, s.offset).reshape(s.shape)
            for s in self.slots
        }

    def split(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per-key views ``(B, *shape)`` of payload rows ``(B, size)`` uint8 (no copy)."""
        batch = rows.shape[0]
        return {
            s.name: rows[:, s.offset : s.offset + s.nbytes].view(s.dtype).reshape(batch, *s.shape)
            for s in self.slots
        }

    def finite_rows(self, rows: np.ndarray) -> np.ndarray:
        """Per row of ``rows`` ``(B, size)`` uint8: are all its float32 values finite, ``(B,)``."""
        ok = np.ones(rows.shape[0], bool)
        for start, end in self.float_spans:
            ok &= np.isfinite(rows[:, start:end].view("<f4")).all(axis=1)
        return ok
