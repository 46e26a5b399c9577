"""Provenance of a training session: versions, device and source revision (environment.json)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import factoryfloor
from factoryfloor.policies.checkpoint import atomic_write_text

VERSIONED = ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "pybullet", "numpy")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment_info(device: str) -> dict[str, Any]:
    """Versions, device and source revision of this session."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in (*VERSIONED, "factoryfloor"):
        try:
            info[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name.replace("-", "_")] = None
    cuda = device.startswith("cuda")
    info.update(
        device=device,
        cuda_device_name=torch.cuda.get_device_name(torch.device(device)) if cuda else None,
        torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        **_git_revision(),
        command=sys.argv,
        started_at=_now(),
    )
    return info


def _git_revision() -> dict[str, Any]:
    """Commit and dirty flag of the checkout this package was imported from, if any."""
    package = Path(factoryfloor.__file__).resolve().parent
    try:
        git = partial(subprocess.run, capture_output=True, text=True, timeout=10, cwd=package)
        top = git(["git", "rev-parse", "--show-toplevel"]).stdout.strip()
        if not top or Path(top).resolve() / "factoryfloor" != package:
            return {"git_commit": None, "git_dirty": None}
        commit = git(["git", "rev-parse", "HEAD"]).stdout.strip() or None
        dirty = bool(git(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def write_environment(run_dir: Path, device: str, resumed: bool) -> None:
    """Write ``run_dir/environment.json``; on resume, earlier sessions go to previous_sessions."""
    path = run_dir / "environment.json"
    info = environment_info(device)
    if resumed and path.is_file():
        with contextlib.suppress(ValueError):
            old = json.loads(path.read_text())
            info["previous_sessions"] = [
                *old.pop("previous_sessions", []),
                old,
            ]
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
