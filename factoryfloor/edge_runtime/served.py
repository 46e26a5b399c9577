"""What the policy server serves: a ``ServedPolicy`` with its ``PolicySpec``, and a bundle adapter.

A served policy answers a batch of flat float32 observations (one row per robot session, in the
order of its observation spec) with a batch of actions. ``BundleServedPolicy`` wraps a
``.ffpolicy`` bundle; any other object with the same attributes and methods (for example the
scripted expert in ``factoryfloor.stack.served_expert``) can be served the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from factoryfloor.edge_runtime.bundle import BundlePolicy
from factoryfloor.edge_runtime.spec import PolicySpec


class ServedPolicy(Protocol):
    """A policy the server can serve."""

    spec: PolicySpec

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        """Actions ``(B, action_size)`` for flat observations ``(B, obs_size)`` of ``sessions``."""
        ...

    def reset(self, session: int) -> None:
        """A new episode starts for ``session`` (stateful policies forget it)."""
        ...


class BundleServedPolicy:
    """A ``.ffpolicy`` bundle behind the server (stateless; one inference call per batch)."""

    def __init__(self, bundle: BundlePolicy) -> None:
        self.bundle = bundle
        self.spec = PolicySpec.from_manifest(bundle.manifest)
        # the first inference initialises onnxruntime's kernels (tens of ms): not on a robot's clock
        self.act_batch([0], np.zeros((1, self.spec.obs_size), np.float32))

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        """Actions ``(B, action_size)`` for flat observations ``(B, obs_size)``."""
        return self.bundle.act_flat(obs)

    def reset(self, session: int) -> None:
        """Stateless: nothing to forget."""
