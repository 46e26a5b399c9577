"""A bundle whose actor takes a uint8 camera image: loaded, checked, run and served end to end.

The graph is built here with ``onnx.helper`` (state (7,) float32 and a 16x16x3 uint8 image in,
``tanh([state, mean(image) / 255] @ W + b)`` out), so that the test knows the exact action of
every observation without a trained camera policy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from factoryfloor.edge_runtime import bundle as bd  # noqa: E402
from factoryfloor.edge_runtime.client import EdgeClient  # noqa: E402
from factoryfloor.edge_runtime.served import BundleServedPolicy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge_runtime"))
from edge_helpers import running_server  # noqa: E402

RNG = np.random.default_rng(3)
W = RNG.normal(scale=0.5, size=(8, 4)).astype(np.float32)
B = RNG.normal(scale=0.1, size=4).astype(np.float32)
IMAGE = (16, 16, 3)
CAMERA = {"width": 16, "height": 16, "fov_deg": 55.0, "near_m": 0.1, "far_m": 2.5,
          "eye_m": [1.2, 0.0, 0.9], "target_m": [0.3, 0.0, 0.05]}  # fmt: skip


def graph(image_type: int = TensorProto.UINT8) -> bytes:
    """The test actor as ONNX bytes (opset 17)."""
    nodes = [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["image_f"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "col"], ["mean_col"]),
        helper.make_node("Div", ["mean_col", "k255"], ["brightness"]),
        helper.make_node("Concat", ["observation", "brightness"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "W"], ["pre"]),
        helper.make_node("Add", ["pre", "B"], ["pre_b"]),
        helper.make_node("Tanh", ["pre_b"], ["action"]),
    ]
    consts = [
        numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "col"),
        numpy_helper.from_array(np.array(255.0, np.float32), "k255"),
    ]  # fmt: skip
    inputs = [
        helper.make_tensor_value_info("image", image_type, ["batch", *IMAGE]),
        helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", 7]),
    ]
    outputs = [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 4])]
    model = helper.make_model(
        helper.make_graph(nodes, "camera_actor", inputs, outputs, consts),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def manifest(**image_space: object) -> dict:
    image = {"shape": list(IMAGE), "dtype": "uint8", "units": "RGB 0-255 from the cell camera",
             "channel_order": "HWC", "camera": CAMERA, **image_space}  # fmt: skip
    return {
        "format": bd.FORMAT, "format_version": bd.FORMAT_VERSION,
        "task_id": "factoryfloor/PickPlace-v0", "robot": "panda", "control_rate_hz": 25.0,
        "observation": {
            "keys": ["image", "observation"],
            "spaces": {"image": image,
                       "observation": {"shape": [7], "dtype": "float32", "units": "robot"}},
        },
        "action": {"shape": [4], "dtype": "float32", "low": [-1.0] * 4, "high": [1.0] * 4,
                   "control": "ee", "units": "normalised"},
        "normalization": None, "actor": {"algo": "sac", "numpy": False},
        "training": {}, "metrics": {}, "command": {},
    }  # fmt: skip


def expected(obs: dict[str, np.ndarray]) -> np.ndarray:
    brightness = obs["image"].reshape(len(obs["image"]), -1).mean(axis=1, keepdims=True) / 255
    features = np.concatenate([obs["observation"], brightness], axis=1)
    return np.tanh(features @ W + B)


def sample(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, *IMAGE), dtype=np.uint8),
        "observation": rng.normal(size=(n, 7)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def policy() -> bd.BundlePolicy:
    data = bd.pack_bundle(manifest(), {bd.ONNX: graph()})
    return bd.bundle_from_bytes(data, "onnxruntime", "camera.ffpolicy", trust=bd.TrustStore())


def test_a_uint8_image_bundle_runs_the_graph_exactly(policy):
    obs = sample(32, seed=0)
    assert np.allclose(policy.act_batch(obs), expected(obs), atol=1e-5)
    assert policy.has_images and policy.dtypes["image"] == np.uint8
    camera = policy.manifest["observation"]["spaces"]["image"]["camera"]
    assert camera == CAMERA  # the intrinsics and pose the images were rendered with


def test_images_must_come_as_uint8(policy):
    obs = sample(2, seed=1)
    with pytest.raises(ValueError, match="is float64; this bundle takes it as uint8"):
        policy.act_batch({**obs, "image": obs["image"].astype(np.float64)})
    with pytest.raises(ValueError, match="takes uint8 images: give act_batch a dict"):
        policy.act_flat(np.zeros((1, policy.obs_size), np.float32))


@pytest.mark.parametrize(
    ("members", "space", "fragment"),
    [
        ({bd.ONNX: graph(TensorProto.FLOAT)}, {}, "input image is tensor(float)"),
        ({bd.ONNX: graph()}, {"dtype": "float32"}, "input image is tensor(uint8)"),
        ({bd.ONNX: graph()}, {"channel_order": None}, "channel_order"),
        ({bd.ONNX: graph()}, {"dtype": "int16"}, "dtype"),
    ],
)
def test_image_specs_and_graphs_that_disagree_are_refused(members, space, fragment):
    m = manifest(**space)
    if space.get("channel_order", "") is None:
        del m["observation"]["spaces"]["image"]["channel_order"]
    data = bd.pack_bundle(m, members)
    with pytest.raises(bd.BundleError, match=None) as info:
        bd.bundle_from_bytes(data, "onnxruntime", "camera.ffpolicy", trust=bd.TrustStore())
    assert fragment in str(info.value), str(info.value)


def test_an_image_bundle_is_served_with_uint8_payloads(policy):
    served = BundleServedPolicy(policy)
    assert [f.get("dtype") for f in served.spec.observation] == ["uint8", "float32"]
    with running_server(served) as server:
        client = EdgeClient(server.endpoint)
        try:
            client.handshake(served.spec.hello("test", 20.0, served.spec.model_sha256))
            obs = sample(5, seed=2)
            for i in range(5):
                one = {k: v[i] for k, v in obs.items()}
                client.send_observation(one, episode_start=i == 0)
                action = client.receive_action(2.0)
                assert action is not None
                assert np.allclose(action, expected({k: v[i : i + 1] for k, v in obs.items()})[0],
                                   atol=1e-5)  # fmt: skip
        finally:
            client.close()
