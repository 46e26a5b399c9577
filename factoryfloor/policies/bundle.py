"""The one-file policy bundle (``.ffpolicy``): load and run it without torch.

The reader lives in ``factoryfloor.edge_runtime.bundle``, because the edge runtime serves bundles
and must not depend on ``policies``; this module re-exports it for training-side code
(``export``, ``evaluate``) and for users who think of bundles as policies.
"""

from __future__ import annotations

from factoryfloor.edge_runtime.bundle import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    NPZ,
    ONNX,
    REQUIRED_FIELDS,
    SUFFIX,
    BundleError,
    BundlePolicy,
    bundle_from_bytes,
    load_bundle,
    pack_bundle,
    read_bundle,
    sha256_hex,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "NPZ",
    "ONNX",
    "REQUIRED_FIELDS",
    "SUFFIX",
    "BundleError",
    "BundlePolicy",
    "bundle_from_bytes",
    "load_bundle",
    "pack_bundle",
    "read_bundle",
    "sha256_hex",
]
