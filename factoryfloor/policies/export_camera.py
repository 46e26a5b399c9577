"""Export of a camera actor (``AsymmetricSACPolicy``): the graph, its inputs and its manifest.

The bundle's inputs are the actor's keys only (``policy.actor_keys``: no privileged key), in
that order, each as the env gives it: vectors float32, images uint8 ``(H, W, C)``. The graph
itself normalises the vectors (VecNormalize's statistics), transposes the images to
channel-first and scales them to [0, 1] (uint8 -> float inside the graph), then runs the
camera encoder and SAC's tanh-squashed mean. The critic, which reads privileged state, is not
part of it. The manifest gives each image key its dtype, shape, ``channel_order`` ("HWC") and
the ``camera`` (intrinsics and pose) it was rendered with (``env.unwrapped.camera_info()``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from factoryfloor.policies.camera_policy import AsymmetricSACPolicy
from factoryfloor.policies.export import key_normalization


def is_camera_model(model: BaseAlgorithm) -> bool:
    """Whether ``model`` is a camera actor-critic (exported by this module)."""
    return isinstance(model.policy, AsymmetricSACPolicy)


class CameraDeployedActor(nn.Module):
    """Actor keys (vectors float32, images uint8 HWC) -> env action, for ONNX export.

    Args:
        model: A SAC model with an ``AsymmetricSACPolicy``.
        vecnorm: Its VecNormalize, or None.
    """

    def __init__(self, model: BaseAlgorithm, vecnorm: VecNormalize | None) -> None:
        super().__init__()
        policy: Any = model.policy
        self.actor: Any = policy.actor
        space = model.observation_space
        assert isinstance(space, gym.spaces.Dict)
        self.keys: list[str] = list(policy.actor_keys)
        self.images = [is_image_space(space[k], check_channels=False) for k in self.keys]
        # the env's (HWC) shape of each input: SB3's spaces are channel-first
        self.shapes = [
            (*space[k].shape[1:], space[k].shape[0]) if img else tuple(space[k].shape)  # type: ignore[misc]
            for k, img in zip(self.keys, self.images, strict=True)
        ]
        for i, (key, img) in enumerate(zip(self.keys, self.images, strict=True)):
            mean, std, _, clip = key_normalization(vecnorm, key, int(np.prod(space[key].shape)))  # type: ignore[arg-type]
            if not img:
                self.register_buffer(f"mean_{i}", torch.as_tensor(mean, dtype=torch.float64))
                self.register_buffer(f"std_{i}", torch.as_tensor(std, dtype=torch.float64))
                self.register_buffer(f"clip_{i}", torch.as_tensor(clip, dtype=torch.float64))
        box = model.action_space
        assert isinstance(box, gym.spaces.Box)
        self.register_buffer("low", torch.as_tensor(box.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(box.high, dtype=torch.float32))

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        """Actions ``(batch, *action_shape)`` in the env's action space."""
        named: dict[str, torch.Tensor] = {}
        for i, (key, img, x) in enumerate(zip(self.keys, self.images, obs, strict=True)):
            if img:  # uint8 HWC -> CHW; SB3's preprocessing casts and divides by 255
                named[key] = x.permute(0, 3, 1, 2)
            else:
                mean, std = getattr(self, f"mean_{i}"), getattr(self, f"std_{i}")
                clip = getattr(self, f"clip_{i}")
                z = (x.double() - mean) / std
                named[key] = torch.max(torch.min(z, clip), -clip).float()
        mean_action, _, _ = self.actor.get_action_dist_params(named)
        scaled = torch.tanh(mean_action)
        return self.low + 0.5 * (scaled + 1.0) * (self.high - self.low)  # type: ignore[no-any-return]

    def dummy_inputs(self) -> tuple[torch.Tensor, ...]:
        """One zero observation per input, in the input dtypes (for tracing)."""
        return tuple(
            torch.zeros(1, *s, dtype=torch.uint8 if img else torch.float32)
            for s, img in zip(self.shapes, self.images, strict=True)
        )


def camera_observation_fields(
    model: BaseAlgorithm, camera_info: dict[str, dict[str, Any]], units: dict[str, str]
) -> dict[str, Any]:
    """The manifest's ``observation`` section: the actor keys, images with their camera.

    Args:
        model: The camera model.
        camera_info: ``env.unwrapped.camera_info()`` of the env it was trained on.
        units: Observation key -> units text.
    """
    actor = CameraDeployedActor(model, None)
    spaces: dict[str, Any] = {}
    for key, shape, img in zip(actor.keys, actor.shapes, actor.images, strict=True):
        entry: dict[str, Any] = {"shape": [int(n) for n in shape], "units": units.get(key, "")}
        if img:
            entry.update(dtype="uint8", channel_order="HWC", camera=camera_info[key])
        else:
            entry["dtype"] = "float32"
        spaces[key] = entry
    return {
        "keys": list(actor.keys),
        "spaces": spaces,
        "flatten": "one graph input per key, in 'keys' order: float32 vectors, uint8 images",
    }
