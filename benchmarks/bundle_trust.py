"""Signed bundles: what signing costs (export, load, serve) and what the loader refuses.

Three measurements, each against its unsigned peer in the same run (a ratio: the machine is
noisy), and the corruption corpus of ``tests/bundle_corpus.py``:

* export: ``export_run`` of one small Reach run, signed and unsigned, interleaved, median of
  ``--repeats`` (the parity check with 1,000 observations dominates both).
* load: ``load_bundle`` of each shipped bundle, signed with a trust store and the same bundle
  with the signature stripped, interleaved, median of 50 (a load verifies the signature once).
* serve: one ``RowInference.run`` (the server's inference on preallocated rows) of the loaded
  signed and unsigned bundles, 30 interleaved windows of 1,000 calls each, the best window of
  each (the median is in the JSON); the target is a ratio <= 1.05 (serving does not touch the
  signature: the two run the same code on the same graph).
* corpus: ``--corpus`` corrupted copies of each shipped bundle and of a freshly exported signed
  one, loaded against a trust store: counts of refused / loaded-unchanged / loaded-changed per
  kind, exceptions other than ``BundleError`` (target 0), loaded-changed (target 0), and the
  slowest single load (a hang would show here).

Usage::

    python benchmarks/bundle_trust.py --out bench_results/bundle_trust.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the corpus generator the tests use
sys.path.insert(0, str(ROOT / "benchmarks"))

from bundle_corpus import SIG, corpus, judge, members_of, zip_of  # noqa: E402
from edge_slowdown import machine_calibration  # noqa: E402

from factoryfloor.edge_runtime import bundle as bd  # noqa: E402
from factoryfloor.edge_runtime import signing  # noqa: E402
from factoryfloor.edge_runtime.inference import RowInference  # noqa: E402

PRETRAINED = ROOT / "factoryfloor" / "policies" / "pretrained"
SERVE_TARGET = 1.05


def _median_s(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tiny_run(folder: Path) -> Path:
    """A 200-step Reach SAC run to export (seconds)."""
    from factoryfloor.policies.train import train
    from factoryfloor.policies.train_config import TrainConfig, load_config

    tiny = {
        "timesteps": 200, "seed": 3, "learning_starts": 100, "buffer_size": 5_000,
        "batch_size": 32, "eval_every_steps": 100, "eval_episodes": 1,
        "checkpoint_every_steps": 0, "progress_bar": False, "tensorboard": False,
        "device": "cpu", "out": str(folder / "run"),
    }  # fmt: skip
    return train(TrainConfig(**{**load_config("factoryfloor/Reach-v0").to_dict(), **tiny}))


def export_times(run: Path, key: Any, repeats: int) -> dict[str, float]:
    from factoryfloor.policies.export import export_run

    out = run.parent / "b.ffpolicy"
    signed, unsigned = [], []
    for _ in range(repeats):
        signed.append(_median_s(lambda: export_run(run, out, "best", key), 1))
        unsigned.append(_median_s(lambda: export_run(run, out, "best"), 1))
    return {"signed_s": statistics.median(signed), "unsigned_s": statistics.median(unsigned)}


def load_and_serve(path: Path, store: signing.TrustStore) -> dict[str, float]:
    data = path.read_bytes()
    stripped = zip_of([(k, v) for k, v in members_of(data).items() if k != SIG])
    open_ = signing.TrustStore()
    loads: dict[str, list[float]] = {"signed": [], "unsigned": []}
    for _ in range(50):
        loads["signed"].append(_median_s(lambda: bd.bundle_from_bytes(data, trust=store), 1))
        loads["unsigned"].append(_median_s(lambda: bd.bundle_from_bytes(stripped, trust=open_), 1))
    rows = {
        "signed": RowInference(bd.bundle_from_bytes(data, trust=store), 1),
        "unsigned": RowInference(bd.bundle_from_bytes(stripped, trust=open_), 1),
    }
    serve: dict[str, list[float]] = {"signed": [], "unsigned": []}
    for row in rows.values():
        row.obs[:] = np.random.default_rng(0).normal(size=row.obs.shape)
        row.run([0])
    for _ in range(30):  # interleaved windows of 1,000 calls; the best window of each counts
        for name, row in rows.items():
            t = time.perf_counter()
            for _ in range(1000):
                row.run([0])
            serve[name].append((time.perf_counter() - t) / 1000)
    return {
        "load_signed_ms": statistics.median(loads["signed"]) * 1e3,
        "load_unsigned_ms": statistics.median(loads["unsigned"]) * 1e3,
        "serve_signed_us": min(serve["signed"]) * 1e6,
        "serve_unsigned_us": min(serve["unsigned"]) * 1e6,
        "serve_signed_median_us": statistics.median(serve["signed"]) * 1e6,
        "serve_unsigned_median_us": statistics.median(serve["unsigned"]) * 1e6,
    }


def corpus_table(bases: list[tuple[str, bytes, signing.TrustStore]], n: int, key: Any) -> dict:
    outcomes: Counter = Counter()
    tracebacks: list[str] = []
    slowest = 0.0
    for i, (_, base, store) in enumerate(bases):
        for kind, data in corpus(base, n, seed=100 + i, attacker_key=key):
            t = time.perf_counter()
            try:
                outcome, _ = judge(data, base, store)
            except Exception as exc:  # what the target says must never happen
                outcome = "traceback"
                tracebacks.append(f"{kind}: {type(exc).__name__}: {str(exc)[:100]}")
            slowest = max(slowest, time.perf_counter() - t)
            outcomes[(kind, outcome)] += 1
    kinds = sorted({k for k, _ in outcomes})
    table = {k: {o: outcomes[(k, o)] for o in ("refused", "same", "changed", "traceback")}
             for k in kinds}  # fmt: skip
    return {
        "cases": sum(outcomes.values()), "by_kind": table, "tracebacks": tracebacks,
        "changed": sum(v["changed"] for v in table.values()), "slowest_load_ms": slowest * 1e3,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=int, default=400, help="corrupted copies per bundle")
    parser.add_argument("--repeats", type=int, default=3, help="exports per variant")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    calibration = machine_calibration()
    print(f"calibration: {json.dumps(calibration)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        secret, _, _ = signing.keygen(folder / "publisher")
        attacker, _, _ = signing.keygen(folder / "attacker")
        key, bad_key = signing.load_secret_key(secret), signing.load_secret_key(attacker)
        publisher = signing.TrustStore.from_dir(folder / "publisher")
        release = signing.TrustStore.from_dir(signing.DEFAULT_STORE)
        print("training a 200-step Reach run to export ...", flush=True)
        run = tiny_run(folder)
        export = export_times(run, key, args.repeats)
        fresh = run.parent / "fresh.ffpolicy"
        from factoryfloor.policies.export import export_run

        export_run(run, fresh, "best", key)
        shipped = sorted(PRETRAINED.glob("*.ffpolicy"))
        timing = {p.name: load_and_serve(p, release) for p in shipped}
        bases = [(p.name, p.read_bytes(), release) for p in shipped]
        bases.append(("fresh export", fresh.read_bytes(), publisher))
        print(f"corpus: {args.corpus} corrupted copies of each of {len(bases)} bundles ...")
        table = corpus_table(bases, args.corpus, bad_key)
    print(
        f"\nexport (median of {args.repeats}): signed {export['signed_s']:.2f} s, unsigned "
        f"{export['unsigned_s']:.2f} s, ratio {export['signed_s'] / export['unsigned_s']:.3f}"
    )
    print(
        f"\n{'bundle':<26}{'load signed':>13}{'unsigned':>10}{'serve signed':>14}"
        f"{'unsigned':>10}{'ratio':>7}"
    )
    ok = True
    for name, t in timing.items():
        ratio = t["serve_signed_us"] / t["serve_unsigned_us"]
        ok &= ratio <= SERVE_TARGET
        print(
            f"{name:<26}{t['load_signed_ms']:>10.1f} ms{t['load_unsigned_ms']:>7.1f} ms"
            f"{t['serve_signed_us']:>11.1f} us{t['serve_unsigned_us']:>7.1f} us{ratio:>7.3f}"
        )
    print(f"\n{'corruption kind':<32}{'refused':>8}{'same':>6}{'changed':>8}{'traceback':>10}")
    for kind, row in table["by_kind"].items():
        print(
            f"{kind:<32}{row['refused']:>8}{row['same']:>6}{row['changed']:>8}"
            f"{row['traceback']:>10}"
        )
    ok &= table["changed"] == 0 and not table["tracebacks"]
    print(
        f"{table['cases']} cases; loaded with changed content: {table['changed']}; "
        f"tracebacks: {len(table['tracebacks'])}; slowest load {table['slowest_load_ms']:.0f} ms"
    )
    print(
        f"serve ratio target <= {SERVE_TARGET}, changed 0, tracebacks 0: "
        f"{'met' if ok else 'NOT met'}"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        results = {"calibration": calibration, "export": export, "timing": timing,
                   "corpus": table, "targets_met": ok}  # fmt: skip
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
