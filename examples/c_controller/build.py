"""Build the reference C controller: ``python examples/c_controller/build.py OUT``.

Links against the system libzmq when ``pkg-config libzmq`` finds it (using its zmq.h), else
against the libzmq that ships inside the pyzmq wheel (with ``zmq_min.h``), so that it builds
wherever ``pip install pyzmq`` worked. Needs a C compiler (``cc``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def libzmq_flags() -> list[str]:
    """Compiler and linker flags for libzmq."""
    if shutil.which("pkg-config"):
        probe = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "libzmq"], capture_output=True, text=True
        )
        if probe.returncode == 0:
            return ["-DUSE_ZMQ_H", *probe.stdout.split()]
    import zmq

    libs = sorted((Path(zmq.__file__).parent.parent / "pyzmq.libs").glob("libzmq*.so*"))
    if not libs:
        sys.exit("no libzmq found: install libzmq3-dev (apt) or pyzmq (pip)")
    return [str(libs[0]), f"-Wl,-rpath,{libs[0].parent}"]


def main() -> int:
    """Compile ffep_controller.c to the path given as the first argument."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/ffep_controller")
    out.parent.mkdir(parents=True, exist_ok=True)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("no C compiler: install gcc (apt install build-essential)")
    cmd = [cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out),
           str(HERE / "ffep_controller.c"), *libzmq_flags(), "-lm"]  # fmt: skip
    print(" ".join(cmd))
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    raise SystemExit(main())
