"""Pre-train an off-policy critic on the demonstrations, the cloned actor held fixed.

A cloned actor meets a fresh critic in RL fine-tuning: the critic's first, arbitrary gradients
then pull the actor away from the demonstrations (measured on PickPlace: a cloned actor from
96% success to 0% within the first updates). So before any RL update, the critic (and its
target) learn the value of the cloned actor by temporal-difference on the replay buffer the
demonstrations seeded (SAC's soft Bellman target, entropy coefficient fixed at its current
value, actor and entropy untouched). This is the critic warm-up of offline-to-online methods
(e.g. "calibrated" Q-learning and AWAC start RL from a critic fitted to the data).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional

from factoryfloor.policies.progress import Progress


@dataclass(frozen=True)
class CriticResult:
    """What critic pre-training did: steps, TD loss first and last (per 10% block), seconds."""

    steps: int
    first_loss: float
    last_loss: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def soft_target(model: Any, data: Any, ent_coef: torch.Tensor) -> torch.Tensor:
    """Soft Bellman target r + gamma (1 - done) (min_i Q'_i(s', a') - alpha log pi(a'|s')).

    ``a'`` is drawn from the actor at ``s'``; ``(batch, 1)``.
    """
    with torch.no_grad():
        next_actions, next_log_prob = model.actor.action_log_prob(data.next_observations)
        next_q = torch.cat(model.critic_target(data.next_observations, next_actions), dim=1)
        next_q = next_q.min(dim=1, keepdim=True)[0] - ent_coef * next_log_prob.reshape(-1, 1)
        discounts = data.discounts if data.discounts is not None else model.gamma
        return data.rewards + (1 - data.dones) * discounts * next_q  # type: ignore[no-any-return]


def critic_step(model: Any, data: Any, ent_coef: torch.Tensor) -> float:
    """One TD step of every critic toward ``soft_target`` on ``data``; the loss (targets kept)."""
    target = soft_target(model, data, ent_coef)
    current = model.critic(data.observations, data.actions)
    loss = 0.5 * sum(functional.mse_loss(q, target) for q in current)
    model.critic.optimizer.zero_grad()
    loss.backward()  # type: ignore[union-attr]
    model.critic.optimizer.step()
    return float(loss.detach())  # type: ignore[union-attr]


def pretrain_critic(model: Any, steps: int, batch_size: int, progress: bool = True) -> CriticResult:
    """Fit ``model``'s critic to its current actor on its replay buffer (in place).

    Args:
        model: An SB3 SAC or TQC-free SAC-like model (``critic``, ``critic_target``, ``actor``,
            ``replay_buffer``) whose buffer holds the demonstrations.
        steps: Gradient steps (>= 1).
        batch_size: Transitions per step.
        progress: Show progress (a bar on a terminal, lines elsewhere).

    Raises:
        ValueError: For a model without a Q critic or an empty replay buffer.
    """
    buffer = getattr(model, "replay_buffer", None)
    if not hasattr(model, "critic_target") or buffer is None or buffer.size() == 0:
        raise ValueError("critic pre-training needs an off-policy model with a filled buffer")
    if getattr(model, "log_ent_coef", None) is not None:
        ent_coef = torch.exp(model.log_ent_coef.detach())
    else:
        ent_coef = model.ent_coef_tensor
    start = time.perf_counter()
    model.policy.set_training_mode(False)  # the actor as deployed: no augmentation
    model.critic.set_training_mode(True)
    losses: list[float] = []
    with Progress("pre-training the critic", steps, "steps", enabled=progress) as bar:
        for _ in range(steps):
            data = buffer.sample(batch_size, env=model._vec_normalize_env)
            losses.append(critic_step(model, data, ent_coef))
            polyak_update(model.critic.parameters(), model.critic_target.parameters(), model.tau)
            bar.advance(note=f"TD loss {losses[-1]:.4f}")
    model.policy.set_training_mode(False)
    block = max(len(losses) // 10, 1)
    return CriticResult(
        steps,
        round(sum(losses[:block]) / block, 6),
        round(sum(losses[-block:]) / block, 6),
        round(time.perf_counter() - start, 3),
    )
