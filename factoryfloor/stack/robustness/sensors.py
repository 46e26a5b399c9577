"""What the policy's sensors get wrong: observation wrappers of the robustness report.

Each wrapper changes only what the policy is given; the cell's own state, reward and success
are untouched. Every draw goes through the env's ``np_random`` (a wrapper's ``np_random`` is the
env's), so an episode's seed fixes its perturbation.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

IMAGE_KEYS = ("image", "wrist_image")


def position_slices(env: gym.Env[Any, Any], parts_only: bool) -> dict[str, list[slice]]:
    """Per vector key the policy may read, the slices of its positions in metres ("m, ...").

    With ``parts_only``, only the parts' positions (the TCP's left out). ``achieved_goal``
    is the part's position (m) where the observation has it.
    """
    base: Any = env.unwrapped
    units = {s.name: s.units for s in base.obs_layout.segments}
    out: dict[str, list[slice]] = {}
    for key, segments in base.key_segments().items():
        out[key] = [
            sl for name, sl in segments.items()
            if units.get(name, "").startswith("m,") and not (parts_only and name == "tcp_position")
        ]  # fmt: skip
    if "achieved_goal" in env.observation_space.spaces:  # type: ignore[attr-defined]
        out["achieved_goal"] = [slice(0, 3)]
    return {k: v for k, v in out.items() if v}


class PositionNoise(gym.ObservationWrapper[Any, Any, Any]):
    """Gaussian noise of ``sigma_m`` (m, per entry and step) on every measured position.

    The positions are the entries in metres of the vector keys (TCP position, part positions
    where the policy reads them, the achieved goal); velocities, the gripper opening, the goal
    from the cell layout and images are left alone.
    """

    def __init__(self, env: gym.Env[Any, Any], sigma_m: float) -> None:
        super().__init__(env)
        self.sigma_m = float(sigma_m)
        self._slices = position_slices(env, parts_only=False)

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The observation with noisy positions (float32 kept)."""
        out = dict(observation)
        for key, slices in self._slices.items():
            if key not in out:
                continue
            vec = out[key].copy()
            for sl in slices:
                n = sl.stop - sl.start
                vec[sl] += self.np_random.normal(0.0, self.sigma_m, n).astype(vec.dtype)
            out[key] = vec
        return out


class PartPoseError(gym.Wrapper[Any, Any, Any, Any]):
    """A constant horizontal error of ``error_m`` (m) on the part positions the policy reads.

    Its direction is drawn per episode: what a miscalibrated vision system gives a state policy.
    """

    def __init__(self, env: gym.Env[Any, Any], error_m: float) -> None:
        super().__init__(env)
        self.error_m = float(error_m)
        self._parts = position_slices(env, parts_only=True)
        self._offset = np.zeros(3, np.float32)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """New episode, new direction of the error."""
        obs, info = self.env.reset(**kwargs)
        angle = self.np_random.uniform(0.0, 2 * np.pi)
        self._offset = np.array([np.cos(angle), np.sin(angle), 0.0], np.float32) * self.error_m
        return self._shifted(obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """One step; the error stays for the episode."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._shifted(obs), reward, terminated, truncated, info

    def _shifted(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(observation)
        for key, slices in self._parts.items():
            if key in out:
                vec = out[key].copy()
                for sl in slices:
                    vec[sl] += self._offset
                out[key] = vec
        return out


class ImageLight(gym.ObservationWrapper[Any, Any, Any]):
    """Scene brightness times ``gain`` (-) on the RGB channels of every image (uint8 kept)."""

    def __init__(self, env: gym.Env[Any, Any], gain: float) -> None:
        super().__init__(env)
        self.gain = float(gain)

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The observation with scaled RGB (depth untouched)."""
        return _scale_rgb(observation, np.full(3, self.gain))


class ColourJitter(gym.Wrapper[Any, Any, Any, Any]):
    """Per-channel gains ``1 +- level`` on the images (a random sign per channel and episode).

    A white balance that differs from the one the policy was trained under.
    """

    def __init__(self, env: gym.Env[Any, Any], level: float) -> None:
        super().__init__(env)
        self.level = float(level)
        self._gains = np.ones(3)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """New episode, new white balance."""
        obs, info = self.env.reset(**kwargs)
        self._gains = 1.0 + self.level * self.np_random.choice([-1.0, 1.0], size=3)
        return _scale_rgb(obs, self._gains), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """One step with the episode's gains."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return _scale_rgb(obs, self._gains), reward, terminated, truncated, info


def _scale_rgb(observation: dict[str, np.ndarray], gains: np.ndarray) -> dict[str, np.ndarray]:
    """``observation`` with each image's RGB channels times ``gains`` (3,), clipped to uint8."""
    out = dict(observation)
    for key in IMAGE_KEYS:
        if key in out:
            image = out[key].copy()
            rgb = image[..., :3].astype(np.float32) * gains.astype(np.float32)
            image[..., :3] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
            out[key] = image
    return out
