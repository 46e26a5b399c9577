"""What the policy server serves: a ``ServedPolicy`` with its ``PolicySpec``, and a bundle adapter.

A served policy answers a batch of flat float32 observations (one row per robot session, in the
order of its observation spec) with a batch of actions. ``BundleServedPolicy`` wraps a
``.ffpolicy`` bundle; any other object with the same attributes and methods (for example the
scripted expert in ``factoryfloor.stack.served_expert``) can be served the same way.

The server runs inference through ``rows_for(policy, max_batch)``: preallocated observation and
action rows that its hot path reads and writes in place. A bundle gets ``RowInference``
(onnxruntime IOBinding); any other policy gets ``ActBatchRows`` around its ``act_batch``.

A spec with uint8 fields (camera images, ``payload.py``) gets ``MixedRows`` instead: one uint8
row per session holding the payload's bytes as they came off the wire, and ``act_batch``
receives a dict of per-key views of them, ``(B, *shape)`` in each field's dtype (uint8 images
stay uint8, never converted to float by the runtime).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from factoryfloor.edge_runtime.bundle import BundlePolicy
from factoryfloor.edge_runtime.inference import RowInference
from factoryfloor.edge_runtime.spec import PolicySpec


class ServedPolicy(Protocol):
    """A policy the server can serve."""

    spec: PolicySpec

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        """Actions ``(B, action_size)`` for the observations of ``sessions``.

        ``obs`` is flat float32 ``(B, obs_size)`` for a float32-only spec; for a spec with uint8
        fields it is a dict ``{name: (B, *shape)}`` in each field's dtype (``MixedRows``).
        """
        ...

    def reset(self, session: int) -> None:
        """A new episode starts for ``session`` (stateful policies forget it)."""
        ...


class BundleServedPolicy:
    """A ``.ffpolicy`` bundle behind the server (stateless; one inference call per batch)."""

    def __init__(self, bundle: BundlePolicy) -> None:
        self.bundle = bundle
        publisher = bundle.signer.key_id if bundle.signer is not None else ""
        self.spec = replace(PolicySpec.from_manifest(bundle.manifest), publisher=publisher)
        # the first inference initialises onnxruntime's kernels (tens of ms): not on a robot's clock
        zeros = {k: np.zeros((1, *bundle.columns[i][1]), bundle.dtypes[k])
                 for i, k in enumerate(bundle.keys)}  # fmt: skip
        self.bundle.act_batch(zeros)

    def act_batch(self, sessions: list[int], obs: Any) -> np.ndarray:
        """Actions ``(B, action_size)`` of ``sessions``' observations.

        ``obs`` is flat float32 ``(B, obs_size)``, or, for a bundle with uint8 images, a dict
        of per-key arrays (``MixedRows``).
        """
        if isinstance(obs, Mapping):
            return self.bundle.act_batch(obs).reshape(len(sessions), -1)
        return self.bundle.act_flat(obs)

    def reset(self, session: int) -> None:
        """Stateless: nothing to forget."""

    def rows(self, max_batch: int) -> RowInference:
        """Inference on preallocated rows, up to ``max_batch`` sessions at once."""
        rows = RowInference(self.bundle, max_batch)
        rows.run([0])  # the first call of a batch size binds it: not on a robot's clock
        return rows


class Rows(Protocol):
    """Preallocated rows the server fills (``obs``) and reads (``actions``) around ``run``."""

    obs: np.ndarray
    actions: np.ndarray

    def run(self, sessions: list[int]) -> np.ndarray:
        """Actions of ``obs[:len(sessions)]``, a view of ``actions``."""
        ...


class ActBatchRows:
    """``Rows`` for any ``ServedPolicy``: its ``act_batch`` on the first rows, shape checked.

    Args:
        policy: The served policy.
        max_batch: Rows at most.
    """

    def __init__(self, policy: ServedPolicy, max_batch: int) -> None:
        self.policy = policy
        self.obs = np.zeros((max_batch, policy.spec.obs_size), np.float32)
        self.actions = np.zeros((max_batch, policy.spec.action_size), np.float32)

    def run(self, sessions: list[int]) -> np.ndarray:
        """See ``Rows.run``.

        Raises:
            ValueError: When the policy's actions have another shape.
        """
        batch = len(sessions)
        actions = np.asarray(self.policy.act_batch(sessions, self.obs[:batch]), dtype="<f4")
        if actions.shape != (batch, self.actions.shape[1]):
            shape = (batch, self.actions.shape[1])
            raise ValueError(f"the policy returned actions {actions.shape}, not {shape}")
        self.actions[:batch] = actions
        return self.actions[:batch]


class MixedRows:
    """``Rows`` for a spec with uint8 fields: payload bytes in, per-key arrays to ``act_batch``.

    ``obs`` is uint8 ``(max_batch, obs_bytes)``: row ``i`` is session ``i``'s OBSERVATION
    payload, byte for byte. ``run`` calls ``policy.act_batch(sessions, obs)`` with ``obs`` a
    dict ``{name: array (B, *shape)}`` of views into those rows (float32 or uint8 per field;
    valid during the call only: copy what must outlive it).

    Args:
        policy: The served policy (its ``act_batch`` takes that dict).
        max_batch: Rows at most.
    """

    def __init__(self, policy: ServedPolicy, max_batch: int) -> None:
        self.policy = policy
        self.layout = policy.spec.obs_layout
        self.obs = np.zeros((max_batch, self.layout.size), np.uint8)
        self.actions = np.zeros((max_batch, policy.spec.action_size), np.float32)
        self._views: dict[int, dict[str, np.ndarray]] = {}  # per batch size, made once

    def run(self, sessions: list[int]) -> np.ndarray:
        """See ``Rows.run``.

        Raises:
            ValueError: When the policy's actions have another shape.
        """
        batch = len(sessions)
        views = self._views.get(batch)
        if views is None:
            views = self._views[batch] = self.layout.split(self.obs[:batch])
        actions = np.asarray(self.policy.act_batch(sessions, views), dtype="<f4")  # type: ignore[arg-type]
        if actions.shape != (batch, self.actions.shape[1]):
            shape = (batch, self.actions.shape[1])
            raise ValueError(f"the policy returned actions {actions.shape}, not {shape}")
        self.actions[:batch] = actions
        return self.actions[:batch]


def rows_for(policy: ServedPolicy, max_batch: int) -> Rows:
    """The rows the server fills for ``policy``.

    ``MixedRows`` for a spec with uint8 fields; else the policy's own rows when it has them
    (``rows(max_batch)``), else ``ActBatchRows``.
    """
    if policy.spec.obs_layout.mixed:
        return MixedRows(policy, max_batch)
    make = getattr(policy, "rows", None)
    return make(max_batch) if callable(make) else ActBatchRows(policy, max_batch)
