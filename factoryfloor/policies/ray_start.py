"""Start Ray the one way every command does (``--ray``): quiet, no dashboard, no worker logs."""

from __future__ import annotations

import logging


def start_ray(address: str | None = None, **kwargs: object) -> None:
    """``ray.init`` at ``address`` (None: a local Ray) unless Ray is already up.

    Ray's own start-up lines (INFO and WARNING) stay out of the terminal: only its errors show.
    ``kwargs`` go to ``ray.init`` (e.g. ``num_cpus``).
    """
    import ray

    if ray.is_initialized():
        return
    ray.init(
        address=address, include_dashboard=False, log_to_driver=False,
        logging_level=logging.ERROR, **kwargs,
    )  # fmt: skip
