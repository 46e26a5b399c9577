"""JSON at the protocol's edge: parsing with limits, and RFC 8785 canonical text.

``loads`` parses a handshake payload the way ``docs/protocol.md`` (section 5) allows and no
further: a size cap, one object at the top, bounded nesting, no duplicate keys, numbers of
bounded length that are finite doubles, integers of magnitude at most 2**53, bounded strings
that encode as UTF-8. Anything else raises ``JsonLimitError`` with one line saying what, before
any of it is used. Python's own ``json.loads`` would take a 5,000-digit integer into a
``ValueError`` of its own, ``1e400`` into ``inf`` and a lone surrogate into a string that cannot
be encoded again; each of those reached the server's checks before.

``canonical`` writes the RFC 8785 (JSON Canonicalization Scheme) text of a value: sorted keys,
no whitespace, minimal string escapes, and numbers as ECMAScript writes the shortest round-trip
form of the double (``-1``, not Python's ``-1.0``). It is what the schema hash is computed over,
so that a C, Rust or JavaScript implementation reproduces the hash from the text of the spec.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_BYTES = 65_536
MAX_DEPTH = 16
MAX_NUMBER_CHARS = 32
MAX_STRING_CHARS = 4_096
MAX_SAFE_INTEGER = 2**53


class JsonLimitError(ValueError):
    """A JSON payload that breaks the protocol's limits (the message says which)."""


def loads(payload: bytes, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """The JSON object of ``payload`` within the limits of the module docstring.

    ``max_bytes`` raises the size cap for files that are not handshake payloads (a bundle's
    manifest); every other limit stays.

    Raises:
        JsonLimitError: For anything outside them (size, UTF-8, syntax, depth, duplicate keys,
            number length or range, string length, a top level that is not an object).
    """
    if len(payload) > max_bytes:
        raise JsonLimitError(f"JSON of {len(payload)} bytes exceeds {max_bytes}")
    try:
        text = payload.decode("utf-8")
        obj = json.loads(
            text,
            parse_int=_integer,
            parse_float=_float,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except JsonLimitError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise JsonLimitError(f"invalid JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise JsonLimitError("the JSON payload must be an object")
    _check_tree(obj)
    return obj


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number of {len(text)} characters (limit {MAX_NUMBER_CHARS})")
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise JsonLimitError(f"integer {text[:24]} beyond 2**53")
    return value


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number of {len(text)} characters (limit {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError(f"number {text} overflows a double")
    return value


def _constant(name: str) -> Any:
    raise JsonLimitError(f"{name} is not JSON (numbers must be finite)")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise JsonLimitError(f"duplicate key {duplicate[:40]!r}")
    return obj


def _check_tree(root: Any) -> None:
    """Depth and string limits, walked iteratively (no recursion for an attacker to exhaust)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            items = value
        else:
            if isinstance(value, str):
                _check_string(value)
            continue
        if depth > MAX_DEPTH:
            raise JsonLimitError(f"JSON nested deeper than {MAX_DEPTH} levels")
        stack.extend((item, depth + 1) for item in items)


def _check_string(value: str) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise JsonLimitError(f"a string of {len(value)} characters (limit {MAX_STRING_CHARS})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonLimitError("a string with a lone surrogate (\\ud800-\\udfff)") from None


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (not canonical; for payloads)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def canonical(value: Any) -> str:
    """RFC 8785 canonical JSON text of ``value`` (dicts, lists, str, int, float, bool, None).

    Raises:
        ValueError: For a non-finite number or a type JSON does not have.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return es_number(float(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("object keys must be strings")
        # RFC 8785 sorts by UTF-16 code units; for keys in the Basic Multilingual Plane (all of
        # the protocol's) that is code point order, which Python's sort uses.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(f"{canonical(k)}:{canonical(value[k])}" for k in keys) + "}"
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def es_number(x: float) -> str:
    """The ECMAScript ``Number::toString`` text of a double (RFC 8785, section 3.2.2.3).

    The digits are the shortest that read back as ``x`` (Python's ``repr`` finds the same
    ones); ECMAScript then places the decimal point or an exponent by its own rule.

    Raises:
        ValueError: For NaN or an infinity.
    """
    if not math.isfinite(x):
        raise ValueError(f"{x} has no JSON form")
    if x == 0:
        return "0"  # also -0
    sign = "-" if x < 0 else ""
    mantissa, _, exponent = repr(abs(x)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")  # value = 0.<digits> * 10**point
    k, n = len(digits), point
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    tail = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + (digits if k == 1 else digits[0] + "." + digits[1:]) + tail
