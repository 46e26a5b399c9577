"""The camera policy: an asymmetric actor-critic for ``obs_mode="camera"``.

The actor sees what a real cell has (``env.unwrapped.actor_keys``: the real-cell state vector,
the goal where the cell layout knows it, the cell and wrist camera images); the critic sees the
state only (``critic_keys``: the actor's vectors plus ``privileged`` and ``achieved_goal``),
which exists in simulation alone and makes the value cheap and exact to learn. Nothing of the
critic is exported: a bundle holds the actor, so a deployed policy never reads a privileged key.

Image encoder (per camera, weights not shared, the two views differ)::

    uint8 (3, 84, 84) /255 -> conv 5x5/2, 16 -> conv 3x3/2, 32 -> conv 3x3/1, 32
        -> conv 1x1, K keypoints -> spatial softmax -> (x, y) expected position per keypoint

A spatial softmax turns each keypoint map into a position in [-1, 1]^2: exactly what an arm
needs (where the part is in each view) and about 6 M multiply-adds per 84x84 image, so that it
trains on two CPU cores. In training mode the images are randomly shifted by up to
``SHIFT_PX`` pixels (DrQ's augmentation: pad by replication, crop back), per sample.

SB3 sees images channel-first (it wraps HWC envs in ``VecTransposeImage``); the exported graph
takes the env's HWC uint8 images and transposes them itself (``export``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.sac.policies import Actor, MultiInputPolicy
from torch import nn
from torch.nn import functional

from factoryfloor.sim.observations import MODE_KEYS

SHIFT_PX = 4  # largest random shift of the augmentation (px)
KEYPOINTS = 16  # spatial-softmax keypoints per camera
CRITIC_EXTRA_KEYS = ("privileged", "achieved_goal")  # sim-only keys the critic also reads
IMAGE_KEYS = MODE_KEYS["camera"].image_keys
ESTIMATED_KEY = "privileged"  # what the actor's estimator learns to read off the images
ESTIMATOR_HIDDEN = 128


def random_shift(
    images: torch.Tensor, pad: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image of a batch by a random integer offset in [-pad, pad] px (DrQ).

    Args:
        images: Float images ``(B, C, H, W)``.
        pad: Largest shift (px); 0 returns ``images``.
        generator: Random source of the offsets (default: torch's global one).

    Returns:
        The shifted images, same shape; borders repeat the edge pixels.
    """
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    padded = functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).to(images.device)
    rows = torch.arange(h, device=images.device)[None, :] + offsets[:, :1]  # (B, H)
    cols = torch.arange(w, device=images.device)[None, :] + offsets[:, 1:]  # (B, W)
    index = rows[:, None, :, None] * padded.shape[-1] + cols[:, None, None, :]  # (B, 1, H, W)
    flat = padded.flatten(2)  # (B, C, (H + 2 pad) (W + 2 pad))
    gathered = torch.gather(flat, 2, index.flatten(2).expand(-1, images.shape[1], -1))
    return gathered.view_as(images)


class SpatialSoftmax(nn.Module):
    """Keypoint maps ``(B, K, H, W)`` -> expected (x, y) per map ``(B, 2K)`` in [-1, 1]."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Softmax over each map's pixels, then the mean pixel coordinate under it."""
        b, k, h, w = maps.shape
        weights = torch.softmax(maps.reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        x = (weights.sum(dim=2) * xs).sum(dim=-1)  # (B, K)
        y = (weights.sum(dim=3) * ys).sum(dim=-1)
        return torch.cat([x, y], dim=1)


class ImageEncoder(nn.Module):
    """One camera: float image ``(B, C, H, W)`` in [0, 1] -> ``(B, 2 * keypoints)``."""

    def __init__(self, channels: int, keypoints: int = KEYPOINTS) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 5, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, keypoints, 1),
            SpatialSoftmax(),
        )  # fmt: skip
        self.out_dim = 2 * keypoints

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Keypoint positions ``(B, 2 * keypoints)``."""
        return self.net(images)  # type: ignore[no-any-return]


class CameraFeatures(BaseFeaturesExtractor):
    """The actor's features: one ``ImageEncoder`` per image key, then the vector keys.

    Args:
        observation_space: The (SB3, channel-first) Dict observation space.
        keys: The actor's keys, images and vectors (``env.unwrapped.actor_keys``).
        shift_px: Largest random shift in training mode (px).
        keypoints_to_actor: Give the actor's head the keypoints too, not just the estimate.
        detach_estimate: Train the encoder by the estimator loss alone (no action gradient).
        estimate_dims: Indices into ``privileged`` that the estimator learns (the env's
            ``visible_privileged``: what one frame shows); None: all of them.
        estimator_weight: Weight of the estimator's loss beside the action loss.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        keys: Sequence[str],
        shift_px: int = SHIFT_PX,
        keypoints_to_actor: bool = True,
        detach_estimate: bool = False,
        estimate_dims: Sequence[int] | None = None,
        estimator_weight: float = 1.0,
    ) -> None:
        spaces = observation_space.spaces
        missing = [k for k in keys if k not in spaces]
        if missing:
            raise ValueError(
                f"actor keys {missing} are not in the observation space {list(spaces)}"
            )
        self.image_keys = [k for k in keys if is_image_space(spaces[k], check_channels=False)]
        self.vector_keys = [k for k in keys if k not in self.image_keys]
        encoders = {k: ImageEncoder(int(spaces[k].shape[0])) for k in self.image_keys}  # type: ignore[index]
        seen = sum(e.out_dim for e in encoders.values())
        available = int(spaces[ESTIMATED_KEY].shape[0]) if ESTIMATED_KEY in spaces else 0  # type: ignore[index]
        dims = list(range(available)) if estimate_dims is None else [int(i) for i in estimate_dims]
        if any(not 0 <= i < available for i in dims):
            raise ValueError(f"estimate_dims {dims} are not indices into {available} entries")
        self.estimate_dims = dims
        self.estimator_weight = float(estimator_weight)
        estimated = len(dims)
        self.keypoints_to_actor = keypoints_to_actor or not estimated
        self.detach_estimate = detach_estimate and bool(estimated)
        vectors = sum(int(spaces[k].shape[0]) for k in self.vector_keys)  # type: ignore[index]
        size = seen * self.keypoints_to_actor + estimated + vectors
        super().__init__(observation_space, features_dim=size)
        self.encoders = nn.ModuleDict(encoders)
        self.estimator = (
            nn.Sequential(
                nn.Linear(seen, ESTIMATOR_HIDDEN), nn.ReLU(), nn.Linear(ESTIMATOR_HIDDEN, estimated)
            )
            if estimated
            else None
        )
        self.shift_px = shift_px

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features ``(B, features_dim)``: keypoints, the state estimate, then the vectors.

        Reads the actor keys only (never ``privileged``); keeps the estimate of the last call
        in ``last_estimate`` for ``estimator_loss``.
        """
        parts = []
        for key in self.image_keys:
            images = observations[key]
            if self.training:
                images = random_shift(images, self.shift_px)
            parts.append(self.encoders[key](images))
        seen = torch.cat(parts, dim=1)
        if not self.keypoints_to_actor:
            parts = []
        elif self.detach_estimate:
            parts = [seen.detach()]
        if self.estimator is not None:
            self.last_estimate = self.estimator(seen)
            estimate = self.last_estimate.detach() if self.detach_estimate else self.last_estimate
            parts.append(estimate)
        parts.extend(observations[k] for k in self.vector_keys)
        return torch.cat(parts, dim=1)

    def estimator_loss(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted mean squared error of the estimate of the visible sim-only entries.

        The last forward's estimate against ``privileged[:, estimate_dims]`` (normalised units).

        A training signal only: in simulation the true ``privileged`` vector supervises what
        the encoder must find in the images (where the part is, which part it is).
        """
        target = observations[ESTIMATED_KEY][:, self.estimate_dims]
        return self.estimator_weight * torch.mean((self.last_estimate - target) ** 2)


class StateFeatures(BaseFeaturesExtractor):
    """The critic's features: the named vector keys concatenated (no images)."""

    def __init__(self, observation_space: gym.spaces.Dict, keys: Sequence[str]) -> None:
        spaces = observation_space.spaces
        self.keys = [k for k in keys if k in spaces]
        super().__init__(observation_space, sum(int(spaces[k].shape[0]) for k in self.keys))  # type: ignore[index]

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features ``(B, features_dim)``."""
        return torch.cat([observations[k] for k in self.keys], dim=1)


def critic_keys(space: gym.spaces.Dict, actor_keys: Sequence[str]) -> list[str]:
    """The actor's vector keys, then the sim-only ones: what the critic reads."""
    vectors = [k for k in actor_keys if not is_image_space(space[k], check_channels=False)]
    return vectors + [k for k in CRITIC_EXTRA_KEYS if k in space.spaces]


class AsymmetricSACPolicy(MultiInputPolicy):
    """SAC's policy with a camera actor (``CameraFeatures``) and a state critic (``StateFeatures``).

    Args:
        *args: As ``MultiInputPolicy``.
        actor_keys: The keys the actor may read (no privileged key).
        shift_px: Largest augmentation shift (px).
        keypoints_to_actor, detach_estimate, estimate_dims, estimator_weight: As
            ``CameraFeatures``.
        **kwargs: As ``MultiInputPolicy`` (``net_arch``, ``n_critics``, ...).
    """

    def __init__(
        self,
        *args: Any,
        actor_keys: Sequence[str] = (),
        shift_px: int = SHIFT_PX,
        keypoints_to_actor: bool = True,
        detach_estimate: bool = False,
        estimate_dims: Sequence[int] | None = None,
        estimator_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self.actor_keys = list(actor_keys)
        self.shift_px = int(shift_px)
        self.keypoints_to_actor, self.detach_estimate = keypoints_to_actor, detach_estimate
        self.estimate_dims = None if estimate_dims is None else [int(i) for i in estimate_dims]
        self.estimator_weight = float(estimator_weight)
        kwargs["share_features_extractor"] = False
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        """The actor on the camera features."""
        space = self.observation_space
        assert isinstance(space, gym.spaces.Dict)
        features = CameraFeatures(
            space, self.actor_keys, self.shift_px, self.keypoints_to_actor, self.detach_estimate,
            self.estimate_dims, self.estimator_weight,
        )  # fmt: skip
        return super().make_actor(features)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> Any:
        """A critic (or its target) on the state features, never the images."""
        space = self.observation_space
        assert isinstance(space, gym.spaces.Dict)
        return super().make_critic(StateFeatures(space, critic_keys(space, self.actor_keys)))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "actor_keys": self.actor_keys,
                "shift_px": self.shift_px, "keypoints_to_actor": self.keypoints_to_actor,
                "detach_estimate": self.detach_estimate, "estimate_dims": self.estimate_dims,
                "estimator_weight": self.estimator_weight}  # fmt: skip
