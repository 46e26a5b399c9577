"""The built wheel ships every asset, and the declared entry points exist."""

from __future__ import annotations

import configparser
import importlib
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

# What a wheel is built from; copied so that the build never writes into the checkout
# (build/, *.egg-info) while someone else works in it.
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, repo_root) -> tuple[Path, float]:
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        if (repo_root / name).is_file():
            shutil.copy2(repo_root / name, src / name)
    shutil.copytree(
        repo_root / "factoryfloor",
        src / "factoryfloor",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    out = tmp_path_factory.mktemp("dist")
    start = time.perf_counter()
    # --skip-dependency-check: build-system.requires names "wheel", which setuptools >= 70.1 no
    # longer needs and which the dev environment does not install.
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check"),
            *("-o", str(out), str(src)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(out.glob("factoryfloor-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], elapsed


def _source_assets(repo_root: Path) -> list[str]:
    assets = repo_root / "factoryfloor" / "assets"
    return sorted(
        p.relative_to(repo_root).as_posix()
        for p in assets.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def test_wheel_contains_every_asset(wheel, repo_root):
    path, _ = wheel
    expected = _source_assets(repo_root)
    # The asset kinds the package relies on are present in the source tree to begin with.
    assert "factoryfloor/assets/LICENSES.md" in expected
    assert any(p.startswith("factoryfloor/assets/urdf/") and p.endswith(".urdf") for p in expected)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        missing = [p for p in [*expected, "factoryfloor/py.typed"] if p not in names]
        assert not missing, f"missing from {path.name}: {missing}"
        for p in expected:  # and byte-identical
            assert zf.read(p) == (repo_root / p).read_bytes(), p
        meshes = [p for p in expected if p.startswith("factoryfloor/assets/meshes/")]
        assert all(m in names for m in meshes)
        # what loading a bundle needs: the manifest schema and the release key's trust store
        for data in ("edge_runtime/schemas/bundle_manifest.schema.json",
                     "edge_runtime/trust/factoryfloor-release.pub"):  # fmt: skip
            assert f"factoryfloor/{data}" in names, data


def test_wheel_contains_every_module_and_nothing_else(wheel, repo_root):
    path, _ = wheel
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    dist_info = "-".join(path.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"factoryfloor", dist_info}
    modules = sorted(
        p.relative_to(repo_root).as_posix()
        for p in (repo_root / "factoryfloor").rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert not [m for m in modules if m not in names]


def test_console_scripts_resolve(wheel):
    path, _ = wheel
    with zipfile.ZipFile(path) as zf:
        entry_points = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        if entry_points:
            parser.read_string(zf.read(entry_points[0]).decode())
    scripts = dict(parser["console_scripts"]) if parser.has_section("console_scripts") else {}
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_wheel_contains_policy_configs_and_pretrained_bundles(wheel, repo_root):
    path, _ = wheel
    policies = repo_root / "factoryfloor" / "policies"
    expected = sorted(
        p.relative_to(repo_root).as_posix()
        for pattern in ("configs/*.yaml", "pretrained/*.ffpolicy", "pretrained/README.md")
        for p in policies.glob(pattern)
    )
    assert any(p.endswith(".ffpolicy") for p in expected)
    assert any(p.endswith("reach_sac.yaml") for p in expected)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert [p for p in expected if p not in names] == []
