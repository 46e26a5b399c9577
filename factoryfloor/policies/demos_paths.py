"""Where demonstration datasets live and what they are called (Minari ids and folders).

``demos.py`` re-exports these: ``datasets_root``, ``default_dataset_id``, ``dataset_folder``,
``resolve_dataset`` (a folder or an id to the dataset's ``data`` folder, one ``DemosError`` line
when it is neither).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from factoryfloor.policies.demos_checks import DATASET_ID, METADATA, DemosError

ID_EXAMPLE = "factoryfloor/reach-panda-state-v0"


def datasets_root(root: Path | str | None = None) -> Path:
    """``root``, or Minari's datasets root (``MINARI_DATASETS_PATH``, ``~/.minari/datasets``)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def default_dataset_id(env_id: str, robot: str = "panda", obs_mode: str = "state") -> str:
    """``factoryfloor/<task>-<robot>-<obs_mode>-v0``: ``factoryfloor/pick-place-panda-state-v0``."""
    name = re.sub(r"-v\d+$", "", env_id.split("/")[-1])
    task = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()
    return f"factoryfloor/{task}-{robot}-{obs_mode}-v0"


def dataset_folder(dataset_id: str, root: Path | str | None = None) -> Path:
    """The ``data`` folder of the dataset ``dataset_id`` under ``root`` (``datasets_root``)."""
    return datasets_root(root) / dataset_id / "data"


def check_id(dataset_id: str) -> None:
    """Refuse (``DemosError``, one line) an id that is not a Minari id like ``ID_EXAMPLE``."""
    if DATASET_ID.fullmatch(dataset_id) is None or ".." in dataset_id.split("/"):
        raise DemosError(
            f"dataset id {dataset_id!r} is not a Minari id like {ID_EXAMPLE!r} "
            f"([namespace/]name-vN: letters, digits, '_', '.', '-')"
        )


def resolve_dataset(path_or_id: Path | str) -> Path:
    """The ``data`` folder of a dataset given as a folder path or as an id under the root.

    A folder may be the dataset's ``data`` folder or the one above it (``ROOT/<id>``).

    Raises:
        DemosError: When it is neither.
    """
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
        for folder in (path, path / "data"):
            if (folder / METADATA).is_file():
                return folder
        if (path / "demos.json").is_file():
            raise DemosError(
                f"{path} holds demonstrations in the retired .npz format (demos.json); record "
                f"them again as a Minari dataset: `factoryfloor demos record TASK --episodes N`"
            )
        found = _datasets_under(path)
        if len(found) == 1:
            return path / found[0] / "data"
        if found:
            raise DemosError(
                f"{path} is a datasets root holding {len(found)} datasets; give one of them: "
                f"{', '.join(found[:5])}{', ...' if len(found) > 5 else ''}"
            )
        raise DemosError(
            f"{path} holds no Minari dataset (no {METADATA}, nor data/{METADATA}); record one "
            f"with `factoryfloor demos record TASK --episodes N [--out ROOT]`"
        )
    if path.exists():
        raise DemosError(f"{path} is a file: give a Minari dataset id or its folder")
    if DATASET_ID.fullmatch(text) is None or ".." in text.split("/"):
        raise DemosError(
            f"{text!r} is neither a dataset folder nor a Minari dataset id like {ID_EXAMPLE!r}"
        )
    folder = dataset_folder(text)
    if not (folder / METADATA).is_file():
        raise DemosError(
            f"no Minari dataset {text!r} under {datasets_root()} (MINARI_DATASETS_PATH); record "
            f"it with `factoryfloor demos record TASK --episodes N`, or give its folder"
        )
    return folder


def _datasets_under(root: Path, depth: int = 3) -> list[str]:
    """Ids of the datasets under a Minari root (``<id>/data/metadata.json``; not hidden ones)."""
    found = []
    for pattern in ("/".join(["*"] * n) + f"/data/{METADATA}" for n in range(1, depth + 1)):
        for meta in root.glob(pattern):
            rel = meta.parent.parent.relative_to(root).as_posix()
            if not any(part.startswith(".") for part in rel.split("/")):
                found.append(rel)
    return sorted(found)
