"""Signed bundles and trust stores, attacked from outside.

The corpus (``tests/bundle_corpus.py``) runs on both shipped pretrained bundles (signed by the
release key) and on a freshly exported bundle signed with a new publisher key: with a trust
store, nothing but ``BundleError`` escapes, and nothing loads whose manifest, graph or weights
differ by a byte from the original.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("cryptography")

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "edge_runtime")]  # bundle_corpus, edge_helpers

from bundle_corpus import SIG, corpus, judge, members_of, rehash, zip_of  # noqa: E402

from factoryfloor.cli import main  # noqa: E402
from factoryfloor.edge_runtime import bundle as bd  # noqa: E402
from factoryfloor.edge_runtime import signing  # noqa: E402
from factoryfloor.edge_runtime.auth import SecurityError  # noqa: E402
from factoryfloor.edge_runtime.client import EdgeClient, HandshakeError  # noqa: E402
from factoryfloor.edge_runtime.served import BundleServedPolicy  # noqa: E402
from factoryfloor.policies.train import train  # noqa: E402
from factoryfloor.policies.train_config import TrainConfig, load_config  # noqa: E402
from factoryfloor.stack.policy_server import check_publisher  # noqa: E402

REACH = "factoryfloor/Reach-v0"
PRETRAINED = Path(__file__).resolve().parents[2] / "factoryfloor" / "policies" / "pretrained"
SHIPPED = sorted(PRETRAINED.glob("*.ffpolicy"))
TINY = {
    "timesteps": 200, "seed": 3, "learning_starts": 100, "buffer_size": 5_000, "batch_size": 32,
    "eval_every_steps": 100, "eval_episodes": 1, "checkpoint_every_steps": 0,
    "progress_bar": False, "tensorboard": False, "device": "cpu",
}  # fmt: skip


@pytest.fixture(autouse=True)
def no_trust_env(monkeypatch):
    monkeypatch.delenv(signing.TRUST_ENV, raising=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    secret, public, key_id = signing.keygen(root / "publisher")
    attacker, _, _ = signing.keygen(root / "attacker", "attacker")
    trust = root / "trust"
    trust.mkdir()
    (trust / public.name).write_bytes(public.read_bytes())
    return {"secret": secret, "trust": trust, "attacker": attacker, "key_id": Path(key_id)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    cfg = load_config(REACH)
    return train(TrainConfig(**{**cfg.to_dict(), **TINY, "out": str(folder / "run")}))


@pytest.fixture(scope="module")
def fresh(run_dir, keys) -> dict[str, Path]:
    """The run exported twice through the CLI: signed with the publisher key, and unsigned."""
    signed, unsigned = run_dir.parent / "signed.ffpolicy", run_dir.parent / "unsigned.ffpolicy"
    assert main(["export", str(run_dir), "--out", str(signed), "--sign", str(keys["secret"])]) == 0
    assert main(["export", str(run_dir), "--out", str(unsigned)]) == 0
    return {"signed": signed, "unsigned": unsigned}


def _tally(base: bytes, n: int, seed: int, trust, attacker) -> Counter:
    outcomes: Counter = Counter()
    for kind, data in corpus(base, n, seed, attacker):
        outcome, detail = judge(data, base, trust)
        assert outcome != "changed", (kind, detail)
        outcomes[(kind, outcome)] += 1
    return outcomes


def test_corrupted_signed_bundles_never_load_changed_with_a_trust_store(fresh, keys):
    """400 corrupted copies of each base (the shipped bundles, a fresh one): 0 tracebacks, 0
    loaded with a changed or unsigned content. The few that load are header flips that leave
    every member intact."""
    attacker = signing.load_secret_key(keys["attacker"])
    release = signing.TrustStore.from_dir(signing.DEFAULT_STORE)
    publisher = signing.TrustStore.from_dir(keys["trust"])
    total: Counter = Counter()
    bases = [(path.read_bytes(), release) for path in SHIPPED]
    bases.append((fresh["signed"].read_bytes(), publisher))
    assert len(bases) == len(SHIPPED) + 1 >= 3
    for i, (base, store) in enumerate(bases):
        assert judge(base, base, store)[0] == "same"  # the original loads
        total += _tally(base, 400, seed=i, trust=store, attacker=attacker)
    assert sum(total.values()) == 400 * len(bases)
    kinds = {kind for kind, _ in total}
    assert len(kinds) == 14, kinds
    loaded = {kind for kind, outcome in total if outcome == "same"}
    assert loaded <= {"bit flip"}, total  # a flip in a header field nothing reads
    refused = sum(v for (_, outcome), v in total.items() if outcome == "refused")
    assert refused >= 0.95 * 400 * len(bases), total


def test_corrupted_unsigned_bundles_raise_only_bundle_error(fresh, keys):
    """Without a trust store the same attacks on an unsigned bundle: only BundleError, and
    whatever loads is marked unsigned or untrusted (never as a trusted publisher's)."""
    attacker = signing.load_secret_key(keys["attacker"])
    base = fresh["unsigned"].read_bytes()
    for kind, data in corpus(base, 300, seed=11, attacker_key=attacker):
        try:
            policy = bd.bundle_from_bytes(data, "auto", "corrupt.ffpolicy")
        except bd.BundleError:
            continue
        assert policy.signer is None or not policy.signer.trusted, kind


def test_signature_covers_manifest_and_every_member(fresh, keys):
    store = signing.TrustStore.from_dir(keys["trust"])
    policy = bd.load_bundle(fresh["signed"], trust=keys["trust"])
    assert policy.signer == signing.Signer(str(keys["key_id"]), True)
    members = members_of(fresh["signed"].read_bytes())
    manifest = json.loads(members[bd.MANIFEST])
    manifest["metrics"]["checkpoint"] = "last"  # one harmless-looking byte change
    edited = {**members, bd.MANIFEST: json.dumps(manifest).encode()}
    with pytest.raises(bd.BundleError, match="signature does not match the bundle's contents"):
        bd.bundle_from_bytes(zip_of(list(edited.items())), trust=store)
    with pytest.raises(bd.BundleError, match="signature does not match"):
        bd.bundle_from_bytes(zip_of(list(edited.items())))  # no store given: still refused


def test_trust_store_refuses_unsigned_and_foreign_bundles(fresh, keys, tmp_path):
    with pytest.raises(bd.BundleError, match=r"is not signed, and trust store .* requires"):
        bd.load_bundle(fresh["unsigned"], trust=keys["trust"])
    foreign = tmp_path / "foreign.ffpolicy"
    attacker = signing.load_secret_key(keys["attacker"])
    foreign.write_bytes(bd.sign_bundle(fresh["unsigned"].read_bytes(), attacker))
    with pytest.raises(bd.BundleError, match=r"signed by key [0-9a-f]{16}, which trust store"):
        bd.load_bundle(foreign, trust=keys["trust"])
    loose = bd.load_bundle(foreign)  # the package's store: loads, marked untrusted
    assert loose.signer is not None and not loose.signer.trusted
    assert bd.load_bundle(fresh["unsigned"]).signer is None


def test_trust_env_variable_is_the_store(fresh, keys, monkeypatch):
    monkeypatch.setenv(signing.TRUST_ENV, str(keys["trust"]))
    assert bd.load_bundle(fresh["signed"]).signer.trusted
    with pytest.raises(bd.BundleError, match="is not signed"):
        bd.load_bundle(fresh["unsigned"])
    with pytest.raises(bd.BundleError, match="does not hold"):
        bd.load_bundle(SHIPPED[0])  # the release key is not in this store


def test_shipped_bundles_are_signed_by_the_release_key():
    release = signing.TrustStore.from_dir(signing.DEFAULT_STORE)
    assert len(release.keys) == 2  # the first release key, and the second (camera bundle)
    for path in SHIPPED:
        signer = bd.load_bundle(path, trust=signing.DEFAULT_STORE).signer
        assert signer is not None and signer.trusted and signer.key_id in release.keys


PEM_SECRET = b"PRIVATE" + b" KEY-----"  # split, so that this file does not hold the marker


def test_no_secret_key_is_in_the_repository():
    repo = Path(__file__).resolve().parents[2]
    listed = subprocess.run(
        ["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=False
    ).stdout.split()
    if not listed:
        pytest.skip("not a git checkout")
    for name in listed:
        path = repo / name
        if path.suffix in (".key", ".key_secret"):
            pytest.fail(f"{name}: a secret key file is committed")
        if path.is_file() and path.stat().st_size < 1 << 20:
            assert PEM_SECRET not in path.read_bytes(), name


def test_keys_are_made_safely(tmp_path):
    secret, public, key_id = signing.keygen(tmp_path)
    assert secret.stat().st_mode & 0o777 == 0o600 and len(key_id) == 16
    with pytest.raises(signing.SigningError, match="never overwritten"):
        signing.keygen(tmp_path)
    os.chmod(secret, 0o644)
    with pytest.raises(signing.SigningError, match="readable by others; run chmod 600"):
        signing.load_secret_key(secret)
    bad = tmp_path / "bad.key"
    bad.write_bytes(public.read_bytes())
    os.chmod(bad, 0o600)
    with pytest.raises(signing.SigningError, match="not an Ed25519 secret key"):
        signing.load_secret_key(bad)


def test_sign_and_verify_commands(fresh, keys, tmp_path, capsys):
    out = tmp_path / "resigned.ffpolicy"
    code = main(["bundle", "sign", str(fresh["unsigned"]), "--key", str(keys["secret"]),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert main(["bundle", "verify", str(out), "--trust", str(keys["trust"])]) == 0
    assert f"signed by {keys['key_id']} (trusted)" in capsys.readouterr().out
    assert main(["bundle", "verify", str(fresh["unsigned"]), "--trust", str(keys["trust"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not signed" in err and "Traceback" not in err


def test_cli_refuses_corrupted_bundles_in_one_line(fresh, keys, tmp_path, capsys):
    attacker = signing.load_secret_key(keys["attacker"])
    base = fresh["signed"].read_bytes()
    for i, (kind, data) in enumerate(corpus(base, 28, seed=5, attacker_key=attacker)):
        path = tmp_path / f"bad{i}.ffpolicy"
        path.write_bytes(data)
        if judge(data, base, signing.TrustStore.from_dir(keys["trust"]))[0] != "refused":
            continue
        command = ["bundle", "verify", str(path), "--trust", str(keys["trust"])]
        if i % 4 == 0:
            command = ["eval", REACH, "--policy", str(path), "--episodes", "1"]
            os.environ[signing.TRUST_ENV] = str(keys["trust"])
        try:
            assert main(command) == 2, kind
        finally:
            os.environ.pop(signing.TRUST_ENV, None)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, (kind, err)


def test_serving_off_loopback_needs_a_trusted_signature(fresh, keys, capsys):
    unsigned = BundleServedPolicy(bd.load_bundle(fresh["unsigned"]))
    signed = BundleServedPolicy(bd.load_bundle(fresh["signed"], trust=keys["trust"]))
    check_publisher(unsigned, "tcp://127.0.0.1:5555", allow_unsigned=False)  # a local test
    check_publisher(signed, "tcp://0.0.0.0:5555", allow_unsigned=False)
    check_publisher(unsigned, "tcp://0.0.0.0:5555", allow_unsigned=True)
    with pytest.raises(
        SecurityError, match="refusing to serve a bundle that is not signed"
    ) as info:
        check_publisher(unsigned, "tcp://10.0.0.5:5555", allow_unsigned=False)
    assert "--allow-unsigned" in str(info.value) and "bundle sign" in str(info.value)
    code = main(["edge", "serve", "--policy", str(fresh["unsigned"]), "--bind", "tcp://0.0.0.0:0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "refusing to serve a bundle" in err, err


def test_welcome_names_the_publisher_and_a_controller_can_pin_it(fresh, keys):
    from edge_helpers import running_server

    served = BundleServedPolicy(bd.load_bundle(fresh["signed"], trust=keys["trust"]))
    key_id = str(keys["key_id"])
    hello = served.spec.hello("test", 20.0, None)
    with running_server(served) as server:
        client = EdgeClient(server.endpoint)
        try:
            assert client.handshake(hello, publisher=key_id)["publisher"] == key_id
            with pytest.raises(HandshakeError, match="accepts only publisher 0000000000000000"):
                client.handshake(hello, publisher="0" * 16)
        finally:
            client.close()
    unsigned = BundleServedPolicy(bd.load_bundle(fresh["unsigned"]))
    with running_server(unsigned) as server:
        client = EdgeClient(server.endpoint)
        try:
            assert client.handshake(hello)["publisher"] is None
            with pytest.raises(HandshakeError, match="signed by nobody"):
                client.handshake(hello, publisher=key_id)
        finally:
            client.close()


def test_signing_leaves_the_actions_unchanged(fresh, keys):
    obs = np.random.default_rng(0).normal(size=(64, 13)).astype(np.float32)
    a = bd.load_bundle(fresh["signed"], trust=keys["trust"]).act_flat(obs)
    b = bd.load_bundle(fresh["unsigned"]).act_flat(obs)
    assert np.array_equal(a, b)
    signed = members_of(fresh["signed"].read_bytes())
    assert (
        SIG in signed
        and rehash(signed)[bd.ONNX] == members_of(fresh["unsigned"].read_bytes())[bd.ONNX]
    )


def _edit(edit):
    """Members with the manifest edited by ``edit`` and its hashes recomputed."""

    def change(members: dict) -> dict:
        manifest = json.loads(members[bd.MANIFEST])
        edit(manifest)
        return rehash({**members, bd.MANIFEST: json.dumps(manifest).encode()})

    return change


def _npz_weight(value: float):
    def change(members: dict) -> dict:
        import io

        with np.load(io.BytesIO(members[bd.NPZ]), allow_pickle=False) as npz:
            arrays = {k: npz[k].copy() for k in npz.files}
        arrays["w1"][0, 0] = value
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return rehash({**members, bd.NPZ: buffer.getvalue()})

    return change


def _onnx_nan(members: dict) -> dict:
    """The first float32 weights of the graph (its normalisation constants) set to NaN."""
    onnx = bytearray(members[bd.ONNX])
    nan = np.float32(np.nan).tobytes()
    at = len(onnx) // 2
    onnx[at : at + 4096] = nan * 1024
    return rehash({**members, bd.ONNX: bytes(onnx)})


# the audit's rows (issue 14, "Bundles"): change, on which bundle, the message fragment
AUDIT_ROWS = {
    "weights edited, hashes recomputed (signed)": (_npz_weight(0.5), "signed", "signature"),
    "graph bytes edited, hashes recomputed (signed)": (_onnx_nan, "signed", "signature"),
    "NaN weight in actor.npz (unsigned)": (_npz_weight(np.nan), "unsigned", "non-finite"),
    "NaN weights in actor.onnx (unsigned)": (_onnx_nan, "unsigned", "actor.onnx"),
    "task_id edited": (_edit(lambda m: m.update(task_id="factoryfloor/Other-v0")), "signed",
                       "signature"),
    "robot edited": (_edit(lambda m: m.update(robot="xarm6")), "signed", "signature"),
    "control_rate_hz None": (_edit(lambda m: m.update(control_rate_hz=None)), "unsigned",
                             "control_rate_hz: None is not of type 'number'"),
    "action low/high edited": (_edit(lambda m: m["action"].update(low=[-9.0] * 4)), "signed",
                               "signature"),
    "actor.activation edited": (_edit(lambda m: m["actor"].update(activation="tanh")),
                                "signed", "signature"),
    "actor.activation unknown": (_edit(lambda m: m["actor"].update(activation="gelu")),
                                 "unsigned", "actor/activation"),
    "action shape mistyped": (_edit(lambda m: m["action"].update(shape="4")), "unsigned",
                              "action/shape"),
    "spaces mistyped": (_edit(lambda m: m["observation"].update(spaces=[])), "unsigned",
                        "observation/spaces"),
    "files = []": (_edit(lambda m: m.update(files=[])), "unsigned", "files"),
}  # fmt: skip


@pytest.mark.parametrize("row", list(AUDIT_ROWS))
def test_audit_rows_are_refused_in_one_line(fresh, keys, tmp_path, capsys, row):
    change, which, fragment = AUDIT_ROWS[row]
    members = members_of(fresh[which].read_bytes())
    path = tmp_path / "bad.ffpolicy"
    path.write_bytes(zip_of(list(change(members).items())))
    trust = keys["trust"] if which == "signed" else None
    with pytest.raises(bd.BundleError, match=None) as info:
        bd.load_bundle(path, trust=trust)
    assert fragment in str(info.value), str(info.value)
    command = ["bundle", "verify", str(path)] + (["--trust", str(trust)] if trust else [])
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err, err


ZIP_ROWS = {
    "two manifest.json entries": ("duplicated member", "twice"),
    "bit flips (zlib.error and CRC)": ("bit flip", "corrupted"),
    "compression method 99 (NotImplementedError)": ("compression method 99", "compression"),
    "encrypted flag (RuntimeError)": ("encryption flag", "encrypted"),
    "deep manifest (RecursionError)": ("deep manifest", "manifest.json is not valid JSON"),
}


@pytest.mark.parametrize("row", list(ZIP_ROWS))
def test_zip_rows_are_refused_as_bundle_errors(fresh, keys, row):
    kind, fragment = ZIP_ROWS[row]
    attacker = signing.load_secret_key(keys["attacker"])
    base = fresh["unsigned"].read_bytes()
    messages = []
    for got, data in corpus(base, 14 * 30, seed=21, attacker_key=attacker):
        if got != kind:
            continue
        try:
            bd.bundle_from_bytes(data, "auto", "x.ffpolicy")
        except bd.BundleError as exc:
            messages.append(str(exc))
    assert len(messages) >= 20 and any(fragment in m for m in messages), messages[:3]
