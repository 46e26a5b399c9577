"""URDF helpers that need no physics engine: resolving data roots and low-poly variants."""

from __future__ import annotations

import hashlib
import os
import tempfile
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path


def data_root(root: str) -> Path:
    """Directory holding URDFs for a data root name ("pybullet_data" or "factoryfloor")."""
    if root == "pybullet_data":
        import pybullet_data  # a data-only package: no physics import

        return Path(pybullet_data.getDataPath())
    if root == "factoryfloor":
        return Path(str(files("factoryfloor.assets")))
    raise ValueError(f"unknown data root {root!r}; use 'pybullet_data' or 'factoryfloor'")


def asset_path(name: str) -> Path:
    """Absolute path of one of the project's own URDFs, e.g. ``asset_path("bin.urdf")``."""
    path = data_root("factoryfloor") / "urdf" / name
    if not path.is_file():
        raise FileNotFoundError(f"asset {name!r} is missing from factoryfloor/assets/urdf/")
    return path


def _resolve_mesh(filename: str, urdf_dir: Path) -> str:
    """Absolute mesh path for a URDF ``filename`` (relative or ``package://pkg/...``)."""
    if filename.startswith("package://"):
        rel = filename[len("package://") :]
        for parent in [urdf_dir, *urdf_dir.parents]:
            candidate = parent / rel
            if candidate.exists():
                return str(candidate)
        return str(urdf_dir / rel.split("/", 1)[1])
    return str((urdf_dir / filename).resolve())


def lowpoly_urdf(urdf: Path, cache_dir: Path | None = None) -> Path:
    """Write (once) a copy of ``urdf`` whose visual meshes are its collision meshes.

    Collision meshes of the arms in pybullet_data have 100-1,000 triangles per link, against
    10,000-20,000 for the visual ones, which makes TinyRenderer about ten times faster at camera
    resolutions while keeping every link's silhouette. Mesh paths are made absolute. The file is
    written atomically and cached by content hash.

    Args:
        urdf: Source URDF.
        cache_dir: Where to write the variant (default: the system temp dir).

    Returns:
        Path of the low-poly URDF.
    """
    text = urdf.read_bytes()
    digest = hashlib.sha256(text + str(urdf).encode()).hexdigest()[:16]
    out_dir = cache_dir or Path(tempfile.gettempdir()) / "factoryfloor-urdf"
    out = out_dir / f"{urdf.stem}-lowpoly-{digest}.urdf"
    if out.exists():
        return out
    tree = ET.ElementTree(ET.fromstring(text))
    for link in tree.getroot().iter("link"):
        _swap_visuals(link, urdf.parent)
    for mesh in tree.getroot().iter("mesh"):
        mesh.set("filename", _resolve_mesh(mesh.get("filename", ""), urdf.parent))
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        tree.write(fh)
    os.replace(tmp, out)
    return out


def _swap_visuals(link: ET.Element, urdf_dir: Path) -> None:
    """Replace the mesh of each visual of ``link`` with its first collision mesh."""
    collision_mesh = next(
        (c.find("geometry/mesh") for c in link.findall("collision") if c.find("geometry/mesh") is not None),
        None,
    )
    if collision_mesh is None:
        return
    for visual in link.findall("visual"):
        mesh = visual.find("geometry/mesh")
        if mesh is not None:
            mesh.set("filename", _resolve_mesh(collision_mesh.get("filename", ""), urdf_dir))
            if collision_mesh.get("scale"):
                mesh.set("scale", collision_mesh.get("scale", "1 1 1"))
