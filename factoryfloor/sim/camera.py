"""Cell and wrist cameras: RGB and depth images rendered on the CPU (TinyRenderer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from factoryfloor.sim.backend import PyBullet
from factoryfloor.sim.robot import rotate


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


class _Pinhole:
    """What both cameras share: a projection per image size, and rendering one view.

    Subclasses set ``sim``, ``config`` (``fov_deg``, ``near_m``, ``far_m``) and an empty
    ``_projections``.
    """

    sim: PyBullet
    config: Any
    _projections: dict[tuple[int, int], list[float]]

    def _projection(self, width: int, height: int) -> list[float]:
        key = (width, height)
        if key not in self._projections:
            cfg = self.config
            self._projections[key] = self.sim.projection_matrix(
                cfg.fov_deg, width / height, cfg.near_m, cfg.far_m
            )
        return self._projections[key]

    def _render(self, width: int, height: int, view: list[float], depth: bool) -> np.ndarray:
        """uint8 (height, width, 3) RGB, or (height, width, 4) with depth (see ``with_depth``)."""
        rgb, zbuf = self.sim.render(
            width, height, view, self._projection(width, height), depth=depth
        )
        return with_depth(rgb, zbuf, self.config.near_m, self.config.far_m) if depth else rgb


class Camera(_Pinhole):
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

    def shift(self, offset_m: np.ndarray) -> None:
        """Move the eye by ``offset_m`` (m, world, shape (3,)) until the next reset."""
        self._eye = self._eye + np.asarray(offset_m, dtype=float)
        self._view = self._compute_view()

    def rgb(self, width: int, height: int) -> np.ndarray:
        """RGB image, uint8 of shape (height, width, 3)."""
        return self._render(width, height, self._view, depth=False)

    def rgbd(self, width: int, height: int) -> np.ndarray:
        """RGB plus depth as a 4th channel, uint8 of shape (height, width, 4).

        Depth is the metric distance along the optical axis mapped linearly from
        [near_m, far_m] to [0, 255].
        """
        return self._render(width, height, self._view, depth=True)

    def image(self, width: int, height: int, depth: bool) -> np.ndarray:
        """``rgbd`` when ``depth``, else ``rgb``."""
        return self._render(width, height, self._view, depth)

    def info(self, width: int, height: int, depth: bool) -> dict[str, Any]:
        """Intrinsics and pose of the current episode (eye jitter included), JSON-ready."""
        return {
            "mount": "world",
            "width": width,
            "height": height,
            "depth": depth,
            **asdict(self.config),
            "eye_m": [float(v) for v in self._eye],
        }


# The cell camera of obs_mode="camera": nearly overhead (11 degrees off vertical), framing the
# table's work area (parts x 0.35-0.6 m, y -0.25-0.0 m; bins up to y 0.32 m) and the arm's
# approach, not the whole cell: 0.74 m across at the table, 0.9 cm/px at 84 px, so a 4 cm
# part spans 4-5 px (the cell-view default above gives ~1.5 cm/px and leaves half the image
# to empty table). A real cell mounts such a camera above the table.
WORKSPACE_CAMERA = CameraConfig(eye_m=(0.62, 0.03, 1.0), target_m=(0.42, 0.03, 0.0), fov_deg=40.0)


def with_depth(rgb: np.ndarray, zbuf: np.ndarray | None, near: float, far: float) -> np.ndarray:
    """RGB (H, W, 3) and an OpenGL depth buffer in [0, 1] (H, W) -> uint8 (H, W, 4).

    Depth is the metric distance along the optical axis, mapped linearly from [near, far] (m)
    to [0, 255].
    """
    assert zbuf is not None
    depth_m = far * near / (far - (far - near) * zbuf)
    depth = np.clip((depth_m - near) / (far - near) * 255.0, 0, 255).astype(np.uint8)
    return np.dstack([rgb, depth])


@dataclass(frozen=True, kw_only=True)
class WristCameraConfig:
    """A pinhole camera fixed to a link of the arm (it moves with the wrist).

    Offsets are in the frame of ``link`` relative to the tool centre point. For both arms
    the link's +z is the approach direction (down when the gripper points down) and +x points
    away from the robot then, so the default camera sits 9 cm behind and 7 cm ahead of the
    TCP on the hand and looks past the fingertips at the table, like a hand-mounted RGB-D
    camera.

    Attributes:
        link: Link name it is mounted on; None: the robot's ``ee_link``.
        eye_from_tcp_m: Camera position relative to the TCP (m, link frame).
        target_from_tcp_m: Point it looks at relative to the TCP (m, link frame).
        up_link: Image-up direction (link frame).
        fov_deg: Vertical field of view (degrees).
        near_m: Near clipping plane (m).
        far_m: Far clipping plane (m).
    """

    link: str | None = None
    eye_from_tcp_m: tuple[float, float, float] = (0.07, 0.0, -0.09)
    target_from_tcp_m: tuple[float, float, float] = (0.0, 0.0, 0.15)
    up_link: tuple[float, float, float] = (1.0, 0.0, 0.0)
    fov_deg: float = 70.0
    near_m: float = 0.02
    far_m: float = 1.5


class WristCamera(_Pinhole):
    """Renders from a camera mounted on a named link of a body; the view follows the link.

    Args:
        sim: The world.
        body: Body name (the arm).
        link: Link name (resolved to its index once).
        tcp_offset_m: TCP in the link frame (m), the origin of the config's offsets.
        config: Mount and optics.
    """

    def __init__(
        self,
        sim: PyBullet,
        body: str,
        link: str,
        tcp_offset_m: Sequence[float],
        config: WristCameraConfig | None = None,
    ) -> None:
        self.sim, self.body, self.link = sim, body, link
        self.config = config or WristCameraConfig()
        self._link_idx = sim.link_index(body, link)
        self._tcp = np.asarray(tcp_offset_m, dtype=float)
        self._offset = np.zeros(3)
        self._projections: dict[tuple[int, int], list[float]] = {}

    def reset(self, rng: np.random.Generator | None, jitter_m: float) -> None:
        """Offset the eye by a uniform +-``jitter_m`` per axis (m, link frame): mount error."""
        if rng is not None and jitter_m > 0:
            self._offset = rng.uniform(-jitter_m, jitter_m, size=3)
        else:
            self._offset = np.zeros(3)

    def _eye_target_up_link(self) -> tuple[list[float], list[float], list[float]]:
        """Eye, target (m) and up vector in the link frame."""
        cfg = self.config
        eye = (self._tcp + cfg.eye_from_tcp_m + self._offset).tolist()
        return eye, (self._tcp + cfg.target_from_tcp_m).tolist(), list(cfg.up_link)

    def _view(self) -> list[float]:
        position, orientation = self.sim.get_link_pose(self.body, self._link_idx)
        eye, target, up = self._eye_target_up_link()
        to_world = [rotate(orientation, v) for v in (eye, target)]
        ux, uy, uz = rotate(orientation, up)
        return self.sim.view_matrix(
            np.add(position, to_world[0]), np.add(position, to_world[1]), (ux, uy, uz)
        )

    def image(self, width: int, height: int, depth: bool) -> np.ndarray:
        """RGB uint8 (height, width, 3), or with depth (as ``Camera.rgbd``) (height, width, 4)."""
        return self._render(width, height, self._view(), depth)

    def info(self, width: int, height: int, depth: bool) -> dict[str, Any]:
        """Intrinsics and mount of the current episode (jitter included), JSON-ready."""
        eye, target, up = self._eye_target_up_link()
        return {
            "mount": "link",
            "body": self.body,
            "link": self.link,
            "width": width,
            "height": height,
            "depth": depth,
            "fov_deg": self.config.fov_deg,
            "near_m": self.config.near_m,
            "far_m": self.config.far_m,
            "eye_in_link_m": eye,
            "target_in_link_m": target,
            "up_in_link": up,
        }
