"""The camera actor-critic: the actor reads no privileged key, the shift moves whole pixels."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import DummyVecEnv

import factoryfloor  # noqa: F401
from factoryfloor.policies.camera_policy import AsymmetricSACPolicy, random_shift


def test_random_shift_moves_each_image_by_whole_pixels_within_the_pad():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    shifted = random_shift(images, 1, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    for b in range(2):  # the centre 4x4 is the original's, moved by at most one pixel
        centre = shifted[b, 0, 1:5, 1:5]
        assert any(
            torch.equal(centre, images[b, 0, 1 + dy : 5 + dy, 1 + dx : 5 + dx])
            for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        )  # fmt: skip


def test_actor_action_does_not_depend_on_privileged_state_but_critic_does():
    env = DummyVecEnv([lambda: gym.make("factoryfloor/PickPlace-v0", obs_mode="camera")])
    keys = env.envs[0].unwrapped.actor_keys
    assert "privileged" not in keys and "achieved_goal" not in keys
    model = SAC(AsymmetricSACPolicy, env, policy_kwargs={"actor_keys": list(keys),
                "net_arch": [32, 32]}, buffer_size=10, device="cpu", seed=0)  # fmt: skip
    obs = {k: np.repeat(v[None], 2, 0) for k, v in model.observation_space.sample().items()}
    other = {
        **obs,
        "privileged": obs["privileged"] + 5.0,
        "achieved_goal": obs["achieved_goal"] + 1,
    }
    t, t2 = (model.policy.obs_to_tensor(o)[0] for o in (obs, other))
    model.policy.set_training_mode(False)  # no random shift
    with torch.no_grad():
        a1, a2 = (model.actor(x, deterministic=True) for x in (t, t2))
        q1, q2 = (model.critic(x, a1)[0] for x in (t, t2))
    assert torch.equal(a1, a2)
    assert not torch.allclose(q1, q2)
    assert not any(p.dim() == 4 for p in model.critic.parameters())  # no convolution in the critic


def _camera_model(**policy_kwargs: object) -> SAC:
    env = DummyVecEnv([lambda: gym.make("factoryfloor/PickPlace-v0", obs_mode="camera")])
    keys = list(env.envs[0].unwrapped.actor_keys)
    kwargs = {"actor_keys": keys, "net_arch": [32, 32], **policy_kwargs}
    return SAC(AsymmetricSACPolicy, env, policy_kwargs=kwargs, buffer_size=10, device="cpu", seed=0)


def test_estimate_only_actor_reads_the_state_estimate_not_the_keypoints():
    full, estimate_only = _camera_model(), _camera_model(keypoints_to_actor=False)
    dims = [m.actor.features_extractor.features_dim for m in (full, estimate_only)]
    keypoints = sum(e.out_dim for e in full.actor.features_extractor.encoders.values())
    assert dims[0] - dims[1] == keypoints == 2 * 2 * 16  # two cameras, 16 (x, y) keypoints each


def test_detached_estimate_trains_the_encoder_by_the_estimator_loss_alone():
    model = _camera_model(keypoints_to_actor=False, detach_estimate=True)
    obs = {k: np.repeat(v[None], 4, 0) for k, v in model.observation_space.sample().items()}
    t = model.policy.obs_to_tensor(obs)[0]
    extractor = model.actor.features_extractor
    conv = next(p for p in extractor.encoders.parameters() if p.dim() == 4)
    model.actor(t, deterministic=True).sum().backward()  # an action loss
    assert conv.grad is None or float(conv.grad.abs().sum()) == 0.0
    extractor.estimator_loss(t).backward()
    assert float(conv.grad.abs().sum()) > 0.0


def test_estimator_learns_the_visible_entries_only_with_its_weight():
    env = gym.make("factoryfloor/PickPlace-v0", obs_mode="camera").unwrapped
    visible = env.visible_privileged  # part position and shape, not its velocity
    assert visible == [0, 1, 2, 6, 7, 8]
    model = _camera_model(estimate_dims=visible)
    extractor = model.actor.features_extractor
    assert extractor.estimator[-1].out_features == len(visible)
    obs = {k: np.repeat(v[None], 4, 0) for k, v in model.observation_space.sample().items()}
    t = model.policy.obs_to_tensor(obs)[0]
    model.policy.set_training_mode(False)
    with torch.no_grad():
        model.actor(t, deterministic=True)
        loss = extractor.estimator_loss(t)
        moved = dict(t, privileged=t["privileged"].clone())
        moved["privileged"][:, 3:6] += 100.0  # the velocity: not the estimator's target
        assert torch.equal(extractor.estimator_loss(moved), loss)
        moved["privileged"][:, 0] += 1.0
        assert not torch.allclose(extractor.estimator_loss(moved), loss)  # the position is
        extractor.estimator_weight = 4.0
        assert torch.allclose(extractor.estimator_loss(t), 4.0 * loss)


def test_estimate_dims_outside_the_privileged_vector_are_refused():
    with pytest.raises(ValueError, match="estimate_dims"):
        _camera_model(estimate_dims=[0, 9])
