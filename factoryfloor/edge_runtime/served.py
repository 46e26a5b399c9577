"""What the policy server serves: a ``ServedPolicy`` with its wire specs, and a bundle adapter.

A served policy answers a batch of flat float32 observations (one row per robot session, in the
order of its observation spec) with a batch of actions. ``BundleServedPolicy`` wraps a
``.ffpolicy`` bundle; any other object with the same attributes and methods (for example the
scripted expert, adapted in ``factoryfloor.cli``) can be served the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from factoryfloor.edge_runtime.bundle import BundlePolicy
from factoryfloor.edge_runtime.protocol import schema_sha256, spec_floats


@dataclass(frozen=True)
class WireSpec:
    """The handshake's description of a policy.

    Attributes:
        task_id: Gymnasium id of the task the policy was made for.
        robot: Robot name.
        control_rate_hz: Control rate the policy expects (Hz).
        observation: Observation spec: ``[{"name", "shape", "units"}]`` in wire order.
        action: Action spec: ``[{"name", "shape", "low", "high", "units"}]``.
        model_sha256: SHA-256 of the policy graph (hex), or a name for non-bundle policies.
    """

    task_id: str
    robot: str
    control_rate_hz: float
    observation: list[dict[str, Any]]
    action: list[dict[str, Any]]
    model_sha256: str

    @cached_property
    def obs_size(self) -> int:
        """Float32 values in an OBSERVATION payload."""
        return spec_floats(self.observation)

    @cached_property
    def action_size(self) -> int:
        """Float32 values in an ACTION payload."""
        return spec_floats(self.action)

    @cached_property
    def schema_sha256(self) -> str:
        """Hash of the observation and action specs (``docs/protocol.md``)."""
        return schema_sha256(self.observation, self.action)


class ServedPolicy(Protocol):
    """A policy the server can serve."""

    spec: WireSpec

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        """Actions ``(B, action_size)`` for flat observations ``(B, obs_size)`` of ``sessions``."""
        ...

    def reset(self, session: int) -> None:
        """A new episode starts for ``session`` (stateful policies forget it)."""
        ...


def bundle_wire_spec(manifest: dict[str, Any]) -> WireSpec:
    """The ``WireSpec`` of a bundle manifest (observation keys in the bundle's order)."""
    spaces = manifest["observation"]["spaces"]
    observation = [
        {"name": k, "shape": list(spaces[k]["shape"]), "units": spaces[k].get("units", "")}
        for k in manifest["observation"]["keys"]
    ]
    act = manifest["action"]
    action = [
        {
            "name": "action",
            "shape": list(act["shape"]),
            "low": [float(v) for v in act["low"]],
            "high": [float(v) for v in act["high"]],
            "units": act.get("units", ""),
        }
    ]
    return WireSpec(
        task_id=str(manifest["task_id"]),
        robot=str(manifest["robot"]),
        control_rate_hz=float(manifest["control_rate_hz"]),
        observation=observation,
        action=action,
        model_sha256=str(manifest["files"]["actor.onnx"]["sha256"]),
    )


class BundleServedPolicy:
    """A ``.ffpolicy`` bundle behind the server (stateless; one inference call per batch)."""

    def __init__(self, bundle: BundlePolicy) -> None:
        self.bundle = bundle
        self.spec = bundle_wire_spec(bundle.manifest)
        # the first inference initialises onnxruntime's kernels (tens of ms): not on a robot's clock
        self.act_batch([0], np.zeros((1, self.spec.obs_size), np.float32))

    def act_batch(self, sessions: list[int], obs: np.ndarray) -> np.ndarray:
        """Actions ``(B, action_size)`` for flat observations ``(B, obs_size)``."""
        return self.bundle.act_flat(obs)

    def reset(self, session: int) -> None:
        """Stateless: nothing to forget."""
