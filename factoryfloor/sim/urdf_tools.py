"""URDF helpers that need no physics engine: data roots and simulation variants of URDFs."""

from __future__ import annotations

import hashlib
import os
import tempfile
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from factoryfloor.robots.spec import JointOverride


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


BoxOverride = tuple[tuple[float, float, float], tuple[float, float, float]]


def robot_urdf(
    urdf: Path,
    lowpoly: bool = False,
    collision_boxes: dict[str, BoxOverride] | None = None,
    cache_dir: Path | None = None,
    joint_overrides: dict[str, JointOverride] | None = None,
    visual_only_links: tuple[str, ...] = (),
) -> Path:
    """Write (once) a variant of ``urdf`` adapted for simulation; return its path.

    * ``lowpoly``: visual meshes become the collision meshes. Collision meshes of the arms in
      pybullet_data have 100-1,000 triangles per link against 10,000-20,000 for the visual
      ones, which makes TinyRenderer about ten times faster at camera resolutions.
    * ``collision_boxes``: link name -> (size (m), centre (m)) of a box that replaces the link's
      collision geometry, the centre given in the frame of the original collision element.
      Used for finger pads: a convex finger mesh touches a part at one point, a box face at
      four, which is what keeps a parallel grasp from pivoting.
    * ``joint_overrides``: joint name -> changes to that joint (type, parent, origin, axis,
      limits); its ``<mimic>`` tag is dropped. Used to re-express a closed linkage, which
      pybullet cannot simulate, as the motion it produces.
    * ``visual_only_links``: links whose collision geometry (and soft ``<contact>``) is dropped.

    Mesh paths are made absolute; the file is named by the hash of its content and written
    atomically, so concurrent processes share it safely.
    """
    boxes = collision_boxes or {}
    overrides = joint_overrides or {}
    if not lowpoly and not boxes and not overrides and not visual_only_links:
        return urdf
    root = ET.fromstring(urdf.read_bytes())
    links = {link.get("name", "") for link in root.iter("link")}
    joints = {joint.get("name", ""): joint for joint in root.iter("joint")}
    unknown = (set(boxes) | set(visual_only_links)) - links
    unknown |= set(overrides) - set(joints)
    if unknown:
        raise ValueError(f"{urdf.name} has no link or joint named {sorted(unknown)}")
    for link in root.iter("link"):
        if lowpoly:
            _swap_visuals(link, urdf.parent)
        if link.get("name") in boxes:
            _replace_collision(link, *boxes[link.get("name", "")])
        if link.get("name") in visual_only_links:
            for element in link.findall("collision") + link.findall("contact"):
                link.remove(element)
    for name, override in overrides.items():
        _override_joint(joints[name], override, links)
    for mesh in root.iter("mesh"):
        mesh.set("filename", _resolve_mesh(mesh.get("filename", ""), urdf.parent))
    text = ET.tostring(root)
    out_dir = cache_dir or Path(tempfile.gettempdir()) / "factoryfloor-urdf"
    out = out_dir / f"{urdf.stem}-{hashlib.sha256(text).hexdigest()[:16]}.urdf"
    if not out.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
        os.replace(tmp, out)
    return out


def _numbers(values: tuple[float, ...]) -> str:
    """Full precision: pybullet warns about an axis that is not unit to double precision."""
    return " ".join(repr(float(v)) for v in values)


def _override_joint(joint: ET.Element, override: JointOverride, links: set[str]) -> None:
    """Apply a JointOverride to a URDF ``<joint>`` element in place."""
    if override.type is not None:
        joint.set("type", override.type)
    if override.parent is not None:
        if override.parent not in links:
            raise ValueError(f"joint {joint.get('name')!r}: no parent link {override.parent!r}")
        parent = joint.find("parent")
        if parent is None:
            parent = ET.SubElement(joint, "parent")
        parent.set("link", override.parent)
    for tag, attribute, value in (
        ("origin", "xyz", override.xyz),
        ("origin", "rpy", override.rpy),
        ("axis", "xyz", override.axis),
    ):
        if value is not None:
            element = joint.find(tag)
            if element is None:
                element = ET.SubElement(joint, tag)
            element.set(attribute, _numbers(value))
    for attribute, limit in (("lower", override.lower), ("upper", override.upper)):
        if limit is not None:
            element = joint.find("limit")
            if element is None:
                element = ET.SubElement(joint, "limit", effort="0", velocity="0")
            element.set(attribute, repr(float(limit)))
    for mimic in joint.findall("mimic"):
        joint.remove(mimic)


def _rpy_matrix(rpy: list[float]) -> np.ndarray:
    """Rotation matrix of URDF roll-pitch-yaw angles (rad), fixed axes x, y, z."""
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _replace_collision(
    link: ET.Element, size: tuple[float, ...], centre: tuple[float, ...]
) -> None:
    """Replace the collision geometry of ``link`` by one box (size and centre in m).

    A ``<contact>`` block (soft-contact stiffness and damping) is dropped too: with it a pad
    sinks centimetres into a part under the gripper's force instead of pressing on it.
    """
    for contact in link.findall("contact"):
        link.remove(contact)
    old = link.find("collision")
    origin = old.find("origin") if old is not None else None
    xyz = [
        float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()
    ]
    rpy = [
        float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()
    ]
    for c in link.findall("collision"):
        link.remove(c)
    xyz_new = np.asarray(xyz) + _rpy_matrix(rpy) @ np.asarray(centre)
    col = ET.SubElement(link, "collision")
    ET.SubElement(
        col,
        "origin",
        xyz=" ".join(f"{v:.6g}" for v in xyz_new),
        rpy=" ".join(f"{v:.6g}" for v in rpy),
    )
    ET.SubElement(ET.SubElement(col, "geometry"), "box", size=" ".join(f"{v:.6g}" for v in size))


def _swap_visuals(link: ET.Element, urdf_dir: Path) -> None:
    """Replace the mesh of each visual of ``link`` with its first collision mesh."""
    collision_mesh = next(
        (
            c.find("geometry/mesh")
            for c in link.findall("collision")
            if c.find("geometry/mesh") is not None
        ),
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
