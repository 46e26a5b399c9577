"""The package's layers: dependencies point one way (README, "Layout").

robots <- sim <- policies; robots <- edge_runtime; policies uses only the bundle format of the
edge runtime (``bundle`` and the interface fields of ``spec``); only ``stack`` (where the parts
meet) and ``cli`` combine the rest, and nothing imports ``cli``. Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import factoryfloor

ROOT = Path(factoryfloor.__file__).parent
PREFIX = "factoryfloor."
# layer -> the factoryfloor modules (prefixes) it may import
ALLOWED: dict[str, tuple[str, ...]] = {
    "robots": ("robots",),
    "assets": (),
    "sim": ("robots", "sim", "assets"),
    "edge_runtime": ("robots", "edge_runtime"),
    "policies": ("robots", "sim", "policies", "edge_runtime.bundle", "edge_runtime.spec"),
    "stack": ("robots", "sim", "policies", "edge_runtime", "stack"),
    "cli": ("robots", "sim", "policies", "edge_runtime", "stack", "cli"),
}


def factoryfloor_imports(path: Path) -> set[str]:
    """Every ``factoryfloor.X`` module a file imports (``import`` and ``from``, any depth)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            subs = {s for s in subs if _is_module(s.removeprefix(PREFIX))}
            names.update(subs or {node.module})  # ``from pkg import module``: the module
    return {n.removeprefix(PREFIX) for n in names if n.startswith(PREFIX)}


def layer_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def _allowed(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(f"{a}.") for a in allowed)


def _is_module(module: str) -> bool:
    """Whether ``factoryfloor.<module>`` is a module or package (not a name inside one)."""
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


LAYERED = sorted(p for p in ROOT.rglob("*.py") if len(p.relative_to(ROOT).parts) > 1)


def test_every_subpackage_has_a_layer():
    assert {layer_of(p) for p in LAYERED} == set(ALLOWED)


@pytest.mark.parametrize("path", LAYERED, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path):
    allowed = ALLOWED[layer_of(path)]
    bad = sorted(
        m for m in factoryfloor_imports(path) if _is_module(m) and not _allowed(m, allowed)
    )
    assert not bad, f"{path.relative_to(ROOT)} ({layer_of(path)}) imports {bad}"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from factoryfloor.stack import demo\n")
    found = {m for m in factoryfloor_imports(bad) if _is_module(m)}
    assert "stack.demo" in found and not _allowed("stack.demo", ALLOWED["policies"])


def test_library_code_never_starts_the_command_line():
    for path in LAYERED:
        if layer_of(path) == "cli":
            continue
        text = path.read_text(encoding="utf-8")
        assert "factoryfloor.cli" not in text.replace("``factoryfloor.cli``", ""), path


def test_the_bundle_shim_is_gone():
    assert not (ROOT / "policies" / "bundle.py").exists()
