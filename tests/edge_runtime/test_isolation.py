"""The edge runtime stays light: no sim, pybullet, torch or stable-baselines3."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import factoryfloor.edge_runtime

EDGE = Path(factoryfloor.edge_runtime.__file__).parent
FORBIDDEN = ("factoryfloor.sim", "factoryfloor.policies", "pybullet", "torch", "stable_baselines3")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_edge_module_imports_sim_policies_pybullet_or_torch():
    modules = sorted(EDGE.rglob("*.py"))
    assert len(modules) >= 2
    for path in modules:
        bad = [m for m in imported_modules(path) if m.startswith(FORBIDDEN)]
        assert not bad, f"{path.name} imports {bad}"


def test_importing_the_edge_runtime_loads_none_of_them():
    """``import factoryfloor`` loads only the env-id table (factoryfloor.sim.registry, which
    imports gymnasium alone), so that ``gymnasium.make`` works after it; nothing else of sim."""
    code = (
        "import sys, pkgutil, importlib, factoryfloor.edge_runtime as e\n"
        "for m in pkgutil.iter_modules(e.__path__):\n"
        "    importlib.import_module(f'{e.__name__}.{m.name}')\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "factoryfloor.edge_runtime.protocol" in loaded
    for name in ("pybullet", "torch", "stable_baselines3", "onnx", "factoryfloor.policies"):
        assert name not in loaded
    assert {m for m in loaded if m.startswith("factoryfloor.sim")} <= {
        "factoryfloor.sim", "factoryfloor.sim.registry"
    }  # fmt: skip
