"""SAC whose actor stays anchored to the demonstrations while it fine-tunes (SAC + BC).

A cloned actor handed to plain SAC is pulled by the critic's action gradient alone, and that
gradient is only as good as a critic that has seen the demonstrations and little else: measured
on the PickPlace camera actor, plain SAC took the clone from 98% to 0% success within 2,500
env steps, a pre-trained critic notwithstanding. TD3+BC (Fujimoto & Gu, 2021) keeps an
offline-trained actor near the data with one change to the actor's loss, and works the same in
fine-tuning; here it is applied to SAC's actor loss::

    L_actor = bc_alpha * mean(alpha log pi(a|s) - min_i Q_i(s, a)) / mean|Q(s, a)|
              + mean((tanh(mu(s_d)) - a_d)^2)                  (a ~ pi(s), (s_d, a_d) demos)

The RL term is divided by the batch's mean |Q| (not differentiated), so that ``bc_alpha`` weighs
the two terms whatever the scale of the returns (TD3+BC's alpha, 2.5 there). On the PickPlace
camera clone (98%), with the critic pre-trained on 1,000 expert episodes, 2.5 still trusts the
critic too much: 200 updates took it to 0% (10 episodes). At 0.2 it held 100%, 90%, 100% after
300, 600 and 900 updates, so the camera configs use 0.2. The demonstration
batch is drawn from the demonstrations themselves (``set_anchor``), not the replay buffer, so
that it stays the expert's however long the run. A camera actor's state estimator keeps its
supervised loss on both batches (the replay buffer holds the sim-only state it estimates).

Everything else is SAC's update as stable-baselines3 2.x writes it (entropy coefficient,
clipped double-Q soft Bellman target, Polyak targets); SB3 has no BC-regularised SAC, so the
update is written here. The anchor tensors are not saved with the model: a resumed run sets
them again from the config's demonstrations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.utils import polyak_update

from factoryfloor.policies.bc import deterministic_action
from factoryfloor.policies.critic_pretrain import critic_step

DEFAULT_BC_ALPHA = 2.5  # TD3+BC's weight of the normalised RL term


class AnchoredSAC(SAC):
    """SAC with TD3+BC's behaviour-cloning term in the actor's loss.

    Args:
        *args: As ``SAC``.
        bc_alpha: Weight of the RL term against the behaviour-cloning term (> 0; larger trusts
            the critic more).
        **kwargs: As ``SAC``.
    """

    def __init__(self, *args: Any, bc_alpha: float = DEFAULT_BC_ALPHA, **kwargs: Any) -> None:
        if not np.isfinite(bc_alpha) or bc_alpha <= 0:
            raise ValueError(f"bc_alpha={bc_alpha!r}: use a finite weight > 0, e.g. 2.5")
        self.bc_alpha = float(bc_alpha)
        self.anchor_obs: dict[str, torch.Tensor] | None = None
        self.anchor_actions: torch.Tensor | None = None
        super().__init__(*args, **kwargs)

    def set_anchor(self, obs: dict[str, torch.Tensor], actions: torch.Tensor) -> None:
        """The demonstrations the actor is held to, as the policy takes them.

        Args:
            obs: ``{key: (N, *shape)}`` on the model's device: vectors normalised as the
                policy sees them, images uint8 channel-first (``bc.policy_inputs``).
            actions: ``(N, A)`` actions scaled to [-1, 1].

        Raises:
            ValueError: For no transitions, or observations and actions of different lengths.
        """
        n = len(actions)
        lengths = {k: len(v) for k, v in obs.items()}
        if n == 0 or any(length != n for length in lengths.values()):
            raise ValueError(f"anchor of {n} actions and observations of lengths {lengths}")
        self.anchor_obs, self.anchor_actions = obs, actions

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "anchor_obs", "anchor_actions"]

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """``gradient_steps`` updates of the entropy coefficient, critic and anchored actor."""
        if self.anchor_obs is None or self.anchor_actions is None:
            raise RuntimeError("AnchoredSAC.train needs the demonstrations: call set_anchor first")
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        logs: dict[str, list[float]] = {"ent_coef": [], "critic_loss": [], "actor_loss": []}
        logs.update(bc_loss=[], q_scale=[])
        for step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            actions_pi, log_prob, estimate_loss = self._actions_on(data.observations)
            ent_coef = self._entropy_step(log_prob)
            logs["critic_loss"].append(critic_step(self, data, ent_coef))
            q_pi = torch.cat(self.critic(data.observations, actions_pi), dim=1)
            min_q_pi = torch.min(q_pi, dim=1, keepdim=True)[0]
            q_scale = min_q_pi.abs().mean().detach().clamp(min=1e-6)
            rl_loss = (ent_coef * log_prob - min_q_pi).mean() / q_scale
            bc_loss = self._bc_loss(batch_size)
            actor_loss = self.bc_alpha * rl_loss + bc_loss + estimate_loss
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()
            if step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
            logs["ent_coef"].append(float(ent_coef))
            logs["actor_loss"].append(float(actor_loss.detach()))
            logs["bc_loss"].append(float(bc_loss.detach()))
            logs["q_scale"].append(float(q_scale))
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for name, values in logs.items():
            self.logger.record(f"train/{name}", float(np.mean(values)))

    def _actions_on(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled actions ``(B, A)``, their log-probability ``(B, 1)``, the estimator loss.

        The RL term reaches the actor's head only: the features are detached, so that the
        critic's action gradient never reshapes the image encoder, which the demonstrations
        and the estimator's supervision train (as DrQ keeps actor gradients out of its encoder).
        """
        actor = self.actor
        features = actor.extract_features(obs, actor.features_extractor)
        estimate_loss = self._estimator_loss(obs)
        latent = actor.latent_pi(features.detach())
        mean = actor.mu(latent)
        log_std = torch.clamp(actor.log_std(latent), -20, 2)  # SB3's LOG_STD_MIN, LOG_STD_MAX
        actions, log_prob = actor.action_dist.log_prob_from_params(mean, log_std)
        return actions, log_prob.reshape(-1, 1), estimate_loss

    def _entropy_step(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Update the entropy coefficient (when learnt) and return its value (no gradient)."""
        if self.ent_coef_optimizer is None or self.log_ent_coef is None:
            return self.ent_coef_tensor  # type: ignore[no-any-return]
        ent_coef = torch.exp(self.log_ent_coef.detach())
        target = float(self.target_entropy)  # type: ignore[arg-type]
        loss = -(self.log_ent_coef * (log_prob + target).detach()).mean()
        self.ent_coef_optimizer.zero_grad()
        loss.backward()
        self.ent_coef_optimizer.step()
        return ent_coef

    def _bc_loss(self, batch_size: int) -> torch.Tensor:
        """Mean squared error of the deterministic action on a random demonstration batch.

        Indices come from torch's global generator, which run checkpoints save and restore.
        """
        assert self.anchor_obs is not None and self.anchor_actions is not None
        n = len(self.anchor_actions)
        idx = torch.randint(n, (min(batch_size, n),)).to(self.anchor_actions.device)
        batch = {k: v[idx] for k, v in self.anchor_obs.items()}
        loss = torch.mean((deterministic_action(self, batch) - self.anchor_actions[idx]) ** 2)
        return loss + self._estimator_loss(batch)

    def _estimator_loss(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The camera actor's estimator loss of its last forward on ``obs``; 0 without one.

        Call it right after the actor's forward on ``obs``.
        """
        extractor = self.actor.features_extractor
        if getattr(extractor, "estimator", None) is None:
            return torch.zeros((), device=self.device)
        return extractor.estimator_loss(obs)  # type: ignore[no-any-return,operator]
