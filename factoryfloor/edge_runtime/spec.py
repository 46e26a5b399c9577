"""One description of a policy's interface, for the wire, the controller, bundles and datasets.

``space_fields`` is the one serialiser from Gymnasium spaces to JSON: a Dict observation space
becomes a list of fields in wire order (sorted keys, as ``gymnasium.spaces.Dict`` keeps them)
and a Box action space one field with its bounds. ``PolicySpec`` is what a controller says in
HELLO and what the server serves; ``PolicySpec.from_manifest`` reads a bundle's manifest, and
``manifest_sections`` writes the same fields in the manifest's layout.

Field layouts (JSON):
    observation: ``[{"name", "shape", "dtype", "units"}]``, one per Dict key, wire order.
    action: ``[{"name": "action", "shape", "dtype", "low", "high", "units"}]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from factoryfloor.edge_runtime.payload import Layout
from factoryfloor.edge_runtime.protocol import PROTOCOL_VERSION, schema_sha256, spec_floats

Field = dict[str, Any]
ACTION_UNITS = "normalised command in [low, high]; see the robot's control mode"


def space_fields(
    observation_space: Any, action_space: Any, units: Mapping[str, str] | None = None
) -> tuple[list[Field], list[Field]]:
    """The JSON fields of a Dict observation space and a Box action space.

    Args:
        observation_space: A ``gymnasium.spaces.Dict`` of Box spaces.
        action_space: A ``gymnasium.spaces.Box``.
        units: Observation key -> units text (missing keys: ``""``).

    Returns:
        ``(observation, action)`` field lists (module docstring), floats as Python floats.

    Raises:
        ValueError: When the spaces are not a Dict of Boxes and a Box.
    """
    subspaces = getattr(observation_space, "spaces", None)
    if not isinstance(subspaces, Mapping) or not hasattr(action_space, "low"):
        raise ValueError("a policy interface needs a Dict observation space and a Box action space")
    units = units or {}
    observation = [
        {
            "name": key,
            "shape": [int(n) for n in (space.shape or ())],
            "dtype": str(space.dtype),
            "units": units.get(key, ""),
        }
        for key, space in subspaces.items()
    ]
    action = {
        "name": "action",
        "shape": [int(n) for n in action_space.shape],
        "dtype": str(action_space.dtype),
        "low": [float(v) for v in action_space.low.ravel()],
        "high": [float(v) for v in action_space.high.ravel()],
        "units": ACTION_UNITS,
    }
    return observation, [action]


@dataclass(frozen=True, kw_only=True)
class PolicySpec:
    """A policy's interface as the handshake states it (controller and server alike).

    Attributes:
        task_id: Gymnasium id of the task the policy is made for.
        robot: Robot name (a ``factoryfloor.robots`` spec).
        control_rate_hz: Control rate (Hz), exactly ``1 / control_dt_s`` of the task's physics.
        observation: Observation fields in wire order (module docstring).
        action: Action fields (module docstring).
        model_sha256: SHA-256 of the policy graph (hex), a name for non-bundle policies, or
            ``""`` on the controller side (no model pinned).
        control: The robot's control mode the actions command (``"ee"`` or ``"joints"``), or
            ``""`` when unknown; the controller's default rate limits come from it. Not part
            of the handshake (the specs' limits and the robot name are).
        publisher: Key id of the publisher who signed the served bundle (``signing.py``), or
            ``""`` for an unsigned bundle or a policy that is not one; WELCOME states it so
            that a controller can pin the publisher as well as the model.
    """

    task_id: str
    robot: str
    control_rate_hz: float
    observation: list[Field]
    action: list[Field]
    model_sha256: str = ""
    control: str = ""
    publisher: str = ""

    @cached_property
    def obs_size(self) -> int:
        """Values in an OBSERVATION payload (float32 and uint8 together)."""
        return spec_floats(self.observation)

    @cached_property
    def obs_layout(self) -> Layout:
        """The OBSERVATION payload's byte layout (``payload.py``)."""
        return Layout(self.observation)

    @cached_property
    def obs_bytes(self) -> int:
        """Bytes of an OBSERVATION payload (``4 * obs_size`` for a float32-only spec)."""
        return self.obs_layout.size

    @cached_property
    def action_size(self) -> int:
        """Float32 values in an ACTION payload."""
        return spec_floats(self.action)

    @cached_property
    def schema_sha256(self) -> str:
        """Hash of the observation and action fields (``docs/protocol.md``)."""
        return schema_sha256(self.observation, self.action)

    def hello(
        self,
        controller: str,
        hold_window_ms: float,
        model_sha256: str | None,
        loop_rate_hz: float | None = None,
    ) -> Field:
        """The HELLO payload of a controller with this interface.

        Args:
            controller: The controller's name.
            hold_window_ms: Its hold window (ms).
            model_sha256: The model it is pinned to, or None to accept the server's.
            loop_rate_hz: Its loop rate when faster than the policy's (Hz; an integer
                multiple of ``control_rate_hz``), or None.
        """
        extra = {} if loop_rate_hz is None else {"loop_rate_hz": loop_rate_hz}
        return {
            "protocol_version": PROTOCOL_VERSION,
            "controller": controller,
            "robot": self.robot,
            "task_id": self.task_id,
            "observation": self.observation,
            "action": self.action,
            "control_rate_hz": self.control_rate_hz,
            "hold_window_ms": hold_window_ms,
            "schema_sha256": self.schema_sha256,
            "model_sha256": model_sha256,
            **extra,
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> PolicySpec:
        """The interface a bundle manifest declares (observation keys in the bundle's order)."""
        spaces = manifest["observation"]["spaces"]
        observation = [
            {"name": k, "shape": list(spaces[k]["shape"]), "dtype": spaces[k].get("dtype", ""),
             "units": spaces[k].get("units", "")}
            for k in manifest["observation"]["keys"]
        ]  # fmt: skip
        act = manifest["action"]
        action = {
            "name": "action",
            "shape": list(act["shape"]),
            "dtype": act.get("dtype", ""),
            "low": [float(v) for v in act["low"]],
            "high": [float(v) for v in act["high"]],
            "units": act.get("units", ""),
        }
        return cls(
            task_id=str(manifest["task_id"]),
            robot=str(manifest["robot"]),
            control_rate_hz=float(manifest["control_rate_hz"]),
            observation=observation,
            action=[action],
            model_sha256=str(manifest["files"]["actor.onnx"]["sha256"]),
            control=str(act.get("control", "")),
        )


def manifest_sections(
    observation: Sequence[Field], action: Sequence[Field], control: str
) -> dict[str, Any]:
    """The manifest's ``observation`` and ``action`` sections of these fields (``bundle.py``).

    Args:
        observation: Observation fields (``space_fields``).
        action: The one action field.
        control: The robot's control mode the actions command (``"ee"`` or ``"joints"``).
    """
    (act,) = action
    return {
        "observation": {
            "keys": [f["name"] for f in observation],
            "spaces": {
                f["name"]: {"shape": f["shape"], "dtype": "float32", "units": f["units"]}
                for f in observation
            },
            "flatten": "each key raveled (C order), concatenated in 'keys' order, float32",
        },
        "action": {
            "shape": act["shape"],
            "dtype": "float32",
            "low": act["low"],
            "high": act["high"],
            "control": control,
            "units": act["units"],
        },
    }
