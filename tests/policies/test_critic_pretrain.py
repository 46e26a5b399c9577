"""Critic pre-training fits the critic to the demonstrations and leaves the actor as it is."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC

import factoryfloor  # noqa: F401
from factoryfloor.policies.critic_pretrain import pretrain_critic
from factoryfloor.policies.demos import dataset_folder, load_demos, record_demos, seed_replay_buffer

REACH = "factoryfloor/Reach-v0"


def test_critic_learns_the_demo_values_and_the_actor_is_untouched(tmp_path):
    index = record_demos(REACH, 4, tmp_path, seed=0, command="test", progress=False)
    demos = load_demos(dataset_folder(index["dataset_id"], tmp_path), env_id=REACH)
    env = gym.make(REACH)
    model = SAC("MultiInputPolicy", env, buffer_size=2_000, policy_kwargs={"net_arch": [64, 64]},
                device="cpu", seed=0, learning_rate=1e-3, ent_coef="auto_0.001")  # fmt: skip
    # (a small entropy coefficient, as the camera config's: with alpha = 1 the soft value of an
    # untrained actor is its entropy bonus, which grows with the steps left, not the reward)
    seed_replay_buffer(model, demos)
    actor = {k: v.clone() for k, v in model.actor.state_dict().items()}
    ent = model.log_ent_coef.detach().clone()
    target0 = {k: v.clone() for k, v in model.critic_target.state_dict().items()}
    result = pretrain_critic(model, 300, 64, progress=False)
    assert result.steps == 300 and result.last_loss < 0.5 * result.first_loss, result
    # Q of the demonstrated (s, a) now ranks them as their discounted returns do.
    q, returns = demo_values(model, demos)
    assert np.corrcoef(q, returns)[0, 1] > 0.7, np.corrcoef(q, returns)[0, 1]
    assert all(torch.equal(actor[k], v) for k, v in model.actor.state_dict().items())
    assert torch.equal(ent, model.log_ent_coef.detach())
    # The target network followed the critic (Polyak averaging), not left at its init.
    assert any(not torch.equal(target0[k], v) for k, v in model.critic_target.state_dict().items())
    env.close()


def demo_values(model: SAC, demos) -> tuple[np.ndarray, np.ndarray]:
    """Q1 of every demonstrated (s, a) and its discounted return from there (gamma of model)."""
    qs, returns = [], []
    for ep in demos.episodes:
        obs = {k[4:]: v[:-1] for k, v in ep.items() if k.startswith("obs/")}
        tensor, _ = model.policy.obs_to_tensor(obs)
        actions = torch.as_tensor(model.policy.scale_action(ep["actions"]), dtype=torch.float32)
        with torch.no_grad():
            qs.append(model.critic(tensor, actions)[0].numpy().ravel())
        g, out = 0.0, []
        for r in ep["rewards"][::-1]:
            g = float(r) + model.gamma * g
            out.append(g)
        returns.append(np.asarray(out[::-1]))
    return np.concatenate(qs), np.concatenate(returns)


def test_an_empty_buffer_is_refused():
    model = SAC("MultiInputPolicy", gym.make(REACH), buffer_size=10, device="cpu")
    with pytest.raises(ValueError, match="filled buffer"):
        pretrain_critic(model, 1, 8, progress=False)
