"""``factoryfloor bundle``: publisher keys, signing and verifying ``.ffpolicy`` bundles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from factoryfloor.edge_runtime.signing import Signer


def configure(p: argparse.ArgumentParser) -> None:
    """Subcommands of ``bundle``: keygen, sign, verify."""
    sub = p.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")
    keygen = sub.add_parser("keygen", help="make a publisher key pair (Ed25519)")
    keygen.add_argument("dir", type=Path, metavar="DIR", help="folder for NAME.key and NAME.pub")
    keygen.add_argument("--name", default="publisher", help="file name of the key pair")
    keygen.set_defaults(bundle_run=_keygen)
    sign = sub.add_parser("sign", help="sign a bundle with a publisher's secret key")
    sign.add_argument("bundle", type=Path, metavar="BUNDLE", help="the .ffpolicy file")
    sign.add_argument("--key", type=Path, required=True, help="secret key (bundle keygen's .key)")
    sign.add_argument("--out", type=Path, help="write the signed bundle here (default: in place)")
    sign.set_defaults(bundle_run=_sign)
    verify = sub.add_parser("verify", help="check a bundle and say who signed it")
    verify.add_argument("bundle", type=Path, metavar="BUNDLE", help="the .ffpolicy file")
    verify.add_argument(
        "--trust", type=Path,
        help="trust store folder of .pub files (default: $FACTORYFLOOR_TRUST, else the "
        "package's own store)",
    )  # fmt: skip
    verify.set_defaults(bundle_run=_verify)


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``bundle`` subcommand; its exit status."""
    return int(args.bundle_run(args))


def _keygen(args: argparse.Namespace) -> int:
    from factoryfloor.edge_runtime.signing import keygen

    secret, public, key_id = keygen(args.dir, args.name)
    print(f"key {key_id}: secret half {secret} (mode 0600; keep it off edge boxes and out of git)")
    print(f"public half {public}: copy it into each edge box's trust store (--trust DIR)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from factoryfloor.edge_runtime.atomic import atomic_write_bytes
    from factoryfloor.edge_runtime.bundle import MAX_BUNDLE_BYTES, BundleError, sign_bundle
    from factoryfloor.edge_runtime.signing import load_secret_key, secret_key_id

    key = load_secret_key(args.key)
    if not args.bundle.is_file():
        raise BundleError(f"no policy bundle at {args.bundle}")
    if args.bundle.stat().st_size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{args.bundle} is larger than a bundle can be ({MAX_BUNDLE_BYTES} B)")
    signed = sign_bundle(args.bundle.read_bytes(), key, str(args.bundle))
    out = args.out or args.bundle
    atomic_write_bytes(out, signed)
    print(f"signed {out} with key {secret_key_id(key)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from factoryfloor.edge_runtime.bundle import load_bundle

    policy = load_bundle(args.bundle, trust=args.trust)
    m = policy.manifest
    who = trust_line(policy.signer)
    model = m["files"]["actor.onnx"]["sha256"][:16]
    print(f"{args.bundle}: {m['task_id']} on {m['robot']}, model {model}; {who}")
    return 0


def trust_line(signer: Signer | None) -> str:
    """How a loaded bundle's signer reads: signed and trusted, signed by whom, or unsigned."""
    if signer is None:
        return "unsigned"
    trusted = "trusted" if signer.trusted else "not in the trust store"
    return f"signed by {signer.key_id} ({trusted})"
