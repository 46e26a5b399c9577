"""The fixed cell camera: RGB and depth images rendered on the CPU (TinyRenderer)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factoryfloor.sim.backend import PyBullet


@dataclass(frozen=True, kw_only=True)
class CameraConfig:
    """A pinhole camera fixed in the cell.

    Attributes:
        eye_m: Camera position (m, world).
        target_m: Point it looks at (m, world).
        fov_deg: Vertical field of view (degrees).
        near_m: Near clipping plane (m).
        far_m: Far clipping plane (m); depth is scaled to [near_m, far_m].
    """

    eye_m: tuple[float, float, float] = (1.2, 0.0, 0.9)
    target_m: tuple[float, float, float] = (0.3, 0.0, 0.05)
    fov_deg: float = 55.0
    near_m: float = 0.1
    far_m: float = 2.5


class Camera:
    """Renders the cell camera; the eye can be jittered at each reset.

    Args:
        sim: The world.
        config: Placement and optics.
    """

    def __init__(self, sim: PyBullet, config: CameraConfig | None = None) -> None:
        self.sim, self.config = sim, config or CameraConfig()
        self._eye = np.asarray(self.config.eye_m)
        self._view = self._compute_view()
        self._projections: dict[tuple[int, int], list[float]] = {}

    def _compute_view(self) -> list[float]:
        return self.sim.view_matrix(self._eye, np.asarray(self.config.target_m), (0.0, 0.0, 1.0))

    def reset(self, rng: np.random.Generator | None, jitter_m: float) -> None:
        """Place the eye at its nominal position plus a uniform offset of +-``jitter_m`` (m)."""
        offset = (
            rng.uniform(-jitter_m, jitter_m, size=3) if rng is not None and jitter_m > 0 else 0.0
        )
        self._eye = np.asarray(self.config.eye_m) + offset
        self._view = self._compute_view()

    def _projection(self, width: int, height: int) -> list[float]:
        key = (width, height)
        if key not in self._projections:
            cfg = self.config
            self._projections[key] = self.sim.projection_matrix(
                cfg.fov_deg, width / height, cfg.near_m, cfg.far_m
            )
        return self._projections[key]

    def rgb(self, width: int, height: int) -> np.ndarray:
        """RGB image, uint8 of shape (height, width, 3)."""
        return self.sim.render(
            width, height, self._view, self._projection(width, height), depth=False
        )[0]

    def rgbd(self, width: int, height: int) -> np.ndarray:
        """RGB plus depth as a 4th channel, uint8 of shape (height, width, 4).

        Depth is the metric distance along the optical axis mapped linearly from
        [near_m, far_m] to [0, 255].
        """
        rgb, zbuf = self.sim.render(
            width, height, self._view, self._projection(width, height), depth=True
        )
        assert zbuf is not None
        near, far = self.config.near_m, self.config.far_m
        depth_m = far * near / (far - (far - near) * zbuf)
        depth = np.clip((depth_m - near) / (far - near) * 255.0, 0, 255).astype(np.uint8)
        return np.dstack([rgb, depth])
