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


def test_serving_a_bundle_leaves_torch_and_pybullet_out_and_reports_its_memory():
    """A server answers a real client with the shipped bundle; then sys.modules is checked."""
    code = (
        "import sys, threading, numpy as np\n"
        "import factoryfloor, pathlib\n"
        "from factoryfloor.edge_runtime.bundle import load_bundle\n"
        "from factoryfloor.edge_runtime.served import BundleServedPolicy\n"
        "from factoryfloor.edge_runtime.server import PolicyServer, ServerConfig\n"
        "from factoryfloor.edge_runtime.client import EdgeClient\n"
        "from factoryfloor.edge_runtime.metrics import resident_memory_mb\n"
        "from factoryfloor.edge_runtime import protocol as p\n"
        "root = pathlib.Path(factoryfloor.__file__).parent  # not importing policies\n"
        "path = root / 'policies' / 'pretrained' / 'pick_place_panda.ffpolicy'\n"
        "policy = BundleServedPolicy(load_bundle(str(path)))\n"
        "server = PolicyServer(policy, ServerConfig(bind='tcp://127.0.0.1:0', poll_timeout_ms=5))\n"
        "threading.Thread(target=server.serve_forever, daemon=True).start()\n"
        "s = policy.spec\n"
        "client = EdgeClient(server.endpoint)\n"
        "client.handshake({'protocol_version': 2, 'controller': 'isolation',\n"
        "    'robot': s.robot, 'task_id': s.task_id,\n"
        "    'observation': s.observation, 'action': s.action,\n"
        "    'control_rate_hz': s.control_rate_hz, 'schema_sha256': s.schema_sha256,\n"
        "    'model_sha256': s.model_sha256})\n"
        "client.send_observation(np.zeros(s.obs_size, np.float32))\n"
        "action = client.receive_action(5.0)\n"
        "print(action.shape[0], resident_memory_mb())\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, modules = out.stdout.strip().splitlines()[-2:]
    size, rss_mb = first.split()
    loaded = set(modules.split())
    assert int(size) == 4
    for name in ("pybullet", "torch", "stable_baselines3", "cv2", "factoryfloor.policies"):
        assert name not in loaded
    assert "onnxruntime" in loaded  # the bundle ran on onnxruntime
    assert 0 < float(rss_mb) <= 150  # the budget for the server


def test_the_edge_extra_pulls_neither_torch_nor_pybullet(repo_root):
    import tomllib

    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    light = project["dependencies"] + project["optional-dependencies"]["edge"]
    for heavy in ("torch", "pybullet", "stable-baselines3", "opencv"):
        assert not any(dep.startswith(heavy) for dep in light), light
