"""Build of the optional compiled edge hot path; everything else is in pyproject.toml.

``factoryfloor.edge_runtime._fastpath`` is a cffi extension (API mode) built from
``factoryfloor/edge_runtime/_fastpath.c``. It is optional: without a C compiler (or without
cffi) the install goes on, and ``factoryfloor.edge_runtime.fastpath`` serves its pure-Python
reference with one warning line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent


def fastpath_extensions() -> list:
    """The cffi extension, marked optional; none when cffi cannot be imported."""
    sys.path.insert(0, str(HERE / "factoryfloor" / "edge_runtime"))
    try:
        from _fastpath_build import ffibuilder
    except ImportError as exc:
        print(f"warning: compiled edge hot path skipped ({exc}); pure Python serves", flush=True)
        return []
    finally:
        sys.path.pop(0)
    extension = ffibuilder.distutils_extension(str(HERE / "build" / "cffi"))
    extension.optional = True  # a failed compile warns and the install goes on
    return [extension]


setup(ext_modules=fastpath_extensions())
