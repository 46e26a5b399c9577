"""factoryfloor: an open Physical-AI stack for factory floors.

Importing the package registers the Gymnasium environments (lazily, by string entry point), so
``gymnasium.make("factoryfloor/Reach-v0")`` works after ``import factoryfloor``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from factoryfloor.sim.registry import register_envs

register_envs()

__all__ = ["__version__"]
