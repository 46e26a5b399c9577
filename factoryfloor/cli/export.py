"""``factoryfloor export``: a training run to a one-file ``.ffpolicy`` bundle."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``export``."""
    p.add_argument("run_dir", metavar="RUN", type=Path, help="run folder of factoryfloor train")
    p.add_argument("--out", type=Path, required=True, help="bundle to write (NAME.ffpolicy)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="checkpoint")
    p.add_argument(
        "--sign", type=Path, metavar="KEY",
        help="sign the bundle with this publisher secret key (factoryfloor bundle keygen's .key)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Export, then print what was written and the parity check."""
    from factoryfloor.policies.export import export_run

    if args.out.suffix != ".ffpolicy":
        raise ValueError(f"--out {args.out} must end with .ffpolicy")
    if not args.run_dir.is_dir():
        raise ValueError(
            f"no run folder at {args.run_dir}; pass the --out folder of factoryfloor train"
        )
    key = None
    if args.sign is not None:
        from factoryfloor.edge_runtime.signing import load_secret_key

        key = load_secret_key(args.sign)  # a bad key fails before the export's work
    manifest = export_run(args.run_dir, args.out, args.checkpoint, key)
    check = manifest["export_check"]
    diffs = ", ".join(f"{k} {v:.3g}" for k, v in check["max_abs_diff"].items())
    print(
        f"wrote {args.out} ({manifest['bytes']:,} bytes): {manifest['task_id']}, "
        f"{manifest['metrics']['checkpoint']} checkpoint at {manifest['metrics']['num_timesteps']} "
        f"steps; parity on {check['observations']} observations: max abs diff {diffs} "
        f"(tolerance {check['tolerance']:g}); "
        + (f"signed by {manifest['signer']}" if manifest["signer"] else "unsigned")
    )
    return 0
