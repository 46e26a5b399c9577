"""The handshake's JSON as docs/protocol.md (section 5) states it: limits, canonical hash, examples.

The schema-hash vectors under docs/ffep/ are recomputed here twice: by the project's Python and by
Node.js, whose ``JSON.stringify`` writes numbers as RFC 8785 does: an implementation other than
ours, following only the text of the doc.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from factoryfloor.edge_runtime import protocol as p
from factoryfloor.edge_runtime import strict_json

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ffep"
VECTORS = json.loads((DOCS / "schema_hash_vectors.json").read_text(encoding="utf-8"))["vectors"]

NODE_HASH = r"""
const crypto = require("crypto");
const vectors = JSON.parse(require("fs").readFileSync(0, "utf8"));
const sorted = (v) => Array.isArray(v) ? v.map(sorted)
  : (v !== null && typeof v === "object")
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])])) : v;
const pick = (o, keys) => Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, o[k]]));
console.log(JSON.stringify(vectors.map((v) => {
  const text = JSON.stringify(sorted({
    action: v.action.map((f) => pick(f, ["name", "shape", "low", "high"])),
    observation: v.observation.map((f) => pick(f, ["name", "shape"])),
  }));
  return [text, crypto.createHash("sha256").update(text, "utf8").digest("hex")];
})));
"""


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_schema_hash_vectors_hold_in_python(vector):
    assert p.schema_canonical(vector["observation"], vector["action"]) == vector["canonical"]
    assert p.schema_sha256(vector["observation"], vector["action"]) == vector["schema_sha256"]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_schema_hash_vectors_hold_in_an_independent_implementation():
    done = subprocess.run(
        ["node", "-e", NODE_HASH], input=json.dumps(VECTORS), capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    got = json.loads(done.stdout)
    assert got == [[v["canonical"], v["schema_sha256"]] for v in VECTORS]


def test_integers_and_floats_hash_alike_but_other_limits_do_not():
    obs = [{"name": "x", "shape": [1]}]
    ints = [{"name": "action", "shape": [1], "low": [-1], "high": [1]}]
    floats = [{"name": "action", "shape": [1], "low": [-1.0], "high": [1.0]}]
    other = [{"name": "action", "shape": [1], "low": [-1.0], "high": [0.999]}]
    assert p.schema_sha256(obs, ints) == p.schema_sha256(obs, floats) != p.schema_sha256(obs, other)


def test_the_documented_hello_is_what_the_simulated_cell_sends():
    from factoryfloor.stack.sim_cell import SimController

    controller = SimController("factoryfloor/PickPlace-v0", "panda", 1, 0)
    try:
        sent = controller.description.hello("sim-panda", 20.0, None)
    finally:
        controller.close()
    documented = json.loads((DOCS / "hello_pickplace_panda.json").read_text(encoding="utf-8"))
    assert documented == json.loads(p.encode_json(sent))
    assert p.spec_floats(documented["observation"]) == 22 and len(documented["observation"]) == 3


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b'{"a": ' + b"1" * 5_000 + b"}", "characters"),
        (b'{"a": -' + b"9" * 40 + b"}", "characters"),
        (b'{"a": 9007199254740993}', "beyond 2"),
        (b'{"a": 1e400}', "overflows"),
        (b'{"a": -1e400}', "overflows"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": Infinity}', "not JSON"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"a": "' + b"x" * 5_000 + b'"}', "string of 5000"),
        (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "deeper than 16"),
        (b'{"a": ' + b"[" * 100_000 + b"}", "bytes exceeds"),
        (b"[1, 2]", "must be an object"),
        (b"\xff\xfe{}", "invalid JSON"),
        (b'{"a": 1', "invalid JSON"),
        (b"", "invalid JSON"),
    ],
)
def test_json_beyond_the_limits_is_refused_with_one_line(payload, says):
    with pytest.raises(strict_json.JsonLimitError, match=says) as info:
        strict_json.loads(payload)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
    with pytest.raises(p.ProtocolError) as refused:
        p.decode_json(payload)
    assert refused.value.code == p.ErrorCode.BAD_PAYLOAD


def test_json_within_the_limits_reads_as_json():
    text = b'{"a": [1, -2.5, 9007199254740992, "\\u00e9", {"b": null}], "c": true}'
    assert strict_json.loads(text) == {
        "a": [1, -2.5, 2**53, "é", {"b": None}], "c": True,
    }  # fmt: skip
    nested = b'{"a": ' + b"[" * 15 + b"]" * 15 + b"}"  # 16 levels with the top object
    assert strict_json.loads(nested)
