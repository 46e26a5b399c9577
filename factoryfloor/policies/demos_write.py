"""Writing a Minari dataset so that a crash never leaves one that looks complete.

``DatasetWriter`` builds the dataset in a hidden folder beside its target
(``ROOT/<namespace>/.<name>.partial-XXXXXXXX``), episode by episode through Minari's own
storage, writes the ``factoryfloor.json`` sidecar (the SHA-256 of every file) last, and only then
renames the folder to ``ROOT/<dataset id>``: the rename is atomic, so the target either does not
exist or holds a finished, hashed dataset. On an exception the partial folder is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from factoryfloor.policies.atomic import atomic_write_stream
from factoryfloor.policies.demos_checks import (
    FORMAT,
    FORMAT_VERSION,
    SIDECAR,
    DemosError,
    data_files,
    digest,
    file_sha256,
)
from factoryfloor.policies.rollout import Episode

NAMESPACE_METADATA = "namespace_metadata.json"


class DatasetWriter:
    """A Minari dataset being written to ``root / dataset_id`` (its ``data`` folder inside).

    Args:
        root: Minari datasets root folder.
        dataset_id: Minari dataset id, e.g. ``factoryfloor/reach-panda-state-v0``.
        env: The env the episodes come from (its spaces and spec are recorded).
        storage: ``"arrow"`` or ``"parquet"``.
        jpeg_encoding: Store image observations as JPEG (lossy) rather than raw uint8.
    """

    def __init__(
        self, root: Path, dataset_id: str, env: gym.Env[Any, Any], storage: str, jpeg_encoding: bool
    ) -> None:
        from minari import __version__
        from minari.dataset.minari_storage import MinariStorage

        self.root, self.dataset_id = root, dataset_id
        self.target = root / dataset_id
        if self.target.exists():
            raise DemosError(
                f"a dataset {dataset_id!r} already exists under {root}; choose another "
                f"--dataset-id or --out root (or delete {self.target})"
            )
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.target.parent / f".{self.target.name}.partial-{uuid.uuid4().hex[:8]}"
        self.partial.mkdir()
        self.data = self.partial / "data"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an env spec Minari cannot serialise: kept out
                self.storage = MinariStorage.new(
                    self.data, env.observation_space, env.action_space, env_spec=env.spec,
                    data_format=storage, jpeg_encoding=jpeg_encoding,
                )  # fmt: skip
            self.storage.update_metadata({
                "dataset_id": dataset_id, "minari_version": __version__,
                "algorithm_name": "factoryfloor scripted expert", "author": {"factoryfloor"},
                "description": "Scripted-expert demonstrations recorded by factoryfloor "
                               "(`factoryfloor demos record`).",
            })  # fmt: skip
        except BaseException:
            self.abort()
            raise

    def add(self, episode: Episode) -> None:
        """Append one kept episode (its seed goes to the episode's Minari metadata)."""
        from minari.data_collector.episode_buffer import EpisodeBuffer

        arrays = episode.arrays()
        buffer = EpisodeBuffer(
            seed=episode.seed,
            observations={k[4:]: v for k, v in arrays.items() if k.startswith("obs/")},
            actions=arrays["actions"], rewards=arrays["rewards"],
            terminations=arrays["terminated"], truncations=arrays["truncated"],
            # Minari's convention: the reset's info first (nothing is a success before a step);
            # a list of bools, as Minari's arrow storage reads 1-D info arrays back wrongly
            infos={"is_success": [False, *map(bool, arrays["is_success"])]},
        )  # fmt: skip
        self.storage.update_episodes([buffer])

    def finish(self, sidecar: dict[str, Any]) -> dict[str, Any]:
        """Hash every file, write the sidecar last, and rename the dataset into place.

        Args:
            sidecar: The sidecar's fields but ``format``, ``format_version``, ``dataset_id``,
                ``files`` and ``sidecar_sha256``, which are added here.

        Returns:
            The sidecar written.
        """
        files = {rel: file_sha256(path) for rel, path in data_files(self.data).items()}
        body = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "dataset_id": self.dataset_id, **sidecar, "files": files}  # fmt: skip
        body["sidecar_sha256"] = digest(body)
        text = json.dumps(body, indent=1) + "\n"
        atomic_write_stream(self.data / SIDECAR, lambda f: f.write(text.encode("utf-8")))
        self._namespace()
        try:
            os.rename(self.partial, self.target)
        except OSError as exc:
            self.abort()
            raise DemosError(f"cannot move the new dataset to {self.target}: {exc}") from None
        return body

    def abort(self) -> None:
        """Remove the partial folder."""
        shutil.rmtree(self.partial, ignore_errors=True)

    def _namespace(self) -> None:
        """Minari's ``namespace_metadata.json`` for the id's namespace, if it has none yet."""
        from minari.dataset.minari_dataset import parse_dataset_id

        namespace = parse_dataset_id(self.dataset_id)[0]
        if namespace is None:
            return
        path = self.root / namespace / NAMESPACE_METADATA
        if not path.exists():
            text = json.dumps({"description": "factoryfloor demonstrations"})
            atomic_write_stream(path, lambda f: f.write(text.encode("utf-8")))


def episode_entry(number: int, episode: Episode) -> dict[str, Any]:
    """The sidecar's entry of episode ``number``."""
    rewards = np.asarray(episode.rewards, dtype=np.float32)
    return {
        "id": number, "seed": episode.seed, "length": episode.length,
        "success": episode.success, "return": float(rewards.sum(dtype=np.float64)),
    }  # fmt: skip
