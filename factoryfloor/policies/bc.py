"""Behaviour cloning of an off-policy actor from scripted-expert demonstrations.

``behaviour_clone(model, demos, ...)`` fits the deterministic action of a SAC, TQC or TD3 actor
to the demonstrations' actions by mean-squared error (SAC/TQC: the tanh-squashed Gaussian mean,
which is what ``predict(deterministic=True)`` and the exported bundle return; TD3: the actor,
copied to its target network afterwards). Observations are normalised with the model's
VecNormalize statistics, so call it after ``demos.seed_replay_buffer`` has updated them. The
learning rate decays to zero on a cosine schedule, and the minibatch order comes from a
``torch.Generator`` seeded by the caller: the same seed gives the same actor.

Reinforcement learning then continues from the cloned actor (``factoryfloor train`` with
``bc_epochs`` > 0); the run's first evaluation, at step 0, scores the cloned actor alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from factoryfloor.policies.progress import Progress

if TYPE_CHECKING:
    from factoryfloor.policies.demos import Demos


@dataclass(frozen=True)
class CloneResult:
    """What behaviour cloning did.

    Attributes:
        epochs: Passes over the demonstration transitions.
        transitions: Demonstration transitions (observation, action) pairs fitted.
        first_loss: Mean squared action error of the first epoch (normalised action units^2).
        final_loss: Mean squared action error of the last epoch.
        wall_time_s: Time spent (s).
    """

    epochs: int
    transitions: int
    first_loss: float
    final_loss: float
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def demo_pairs(demos: Demos) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every (observation, action) pair of the demonstrations.

    Returns:
        Observations ``{key: (N, *shape)}`` (the observation each action was taken in) and the
        actions ``(N, A)`` float32, in the env's action units.
    """
    keys = [k[4:] for k in demos.episodes[0] if k.startswith("obs/")]
    obs = {k: np.concatenate([ep[f"obs/{k}"][:-1] for ep in demos.episodes]) for k in keys}
    actions = np.concatenate([ep["actions"] for ep in demos.episodes]).astype(np.float32)
    return obs, actions


def policy_inputs(model: Any, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Demonstration observations as the policy takes them, on its device.

    Vectors are normalised with the model's VecNormalize statistics (float32); images stay
    uint8 (4x less memory than float; the policy scales them per batch) and are made
    channel-first where SB3 transposed the env's images (``VecTransposeImage``).

    Args:
        model: The SB3 model.
        obs: ``{key: (N, *shape)}`` as recorded (the env's layout).
    """
    from stable_baselines3.common.preprocessing import is_image_space, maybe_transpose

    space = model.observation_space
    images = {
        k for k in obs if k in space.spaces and is_image_space(space[k], check_channels=False)
    }
    vectors = {k: v for k, v in obs.items() if k in space.spaces and k not in images}
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None:  # (it deep-copies what it is given: never the images)
        vectors = vecnorm.normalize_obs(vectors)
    out: dict[str, torch.Tensor] = {}
    for key, value in {**vectors, **{k: obs[k] for k in images}}.items():
        if key in images:
            image = np.ascontiguousarray(maybe_transpose(value, space[key]), dtype=np.uint8)
            out[key] = torch.as_tensor(image, device=model.device)
        else:
            out[key] = torch.as_tensor(value, dtype=torch.float32, device=model.device)
    return out


def demo_tensors(model: Any, demos: Demos) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every demonstration pair as the policy takes it: ``policy_inputs`` and scaled actions.

    Returns:
        Observations ``{key: (N, *shape)}`` on the model's device, and the actions ``(N, A)``
        float32 scaled to the policy's [-1, 1] (clipped).
    """
    obs, actions = demo_pairs(demos)
    scaled = np.clip(model.policy.scale_action(actions), -1.0, 1.0)
    return policy_inputs(model, obs), torch.as_tensor(
        scaled, dtype=torch.float32, device=model.device
    )


def deterministic_action(model: Any, obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The actor's deterministic action in [-1, 1], differentiable (SAC/TQC/TD3 policies)."""
    actor = model.actor
    if hasattr(actor, "get_action_dist_params"):  # SAC, TQC: squashed Gaussian mean
        mean, _, _ = actor.get_action_dist_params(obs)
        return torch.tanh(mean)
    return actor(obs)  # type: ignore[no-any-return]  # TD3: tanh output already


def behaviour_clone(
    model: Any,
    demos: Demos,
    epochs: int,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    tensors: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None,
) -> CloneResult:
    """Fit ``model``'s actor to the demonstrations (in place).

    Args:
        model: An SB3 SAC, TQC or TD3 model built for the demonstrations' env.
        demos: Loaded demonstrations (``demos.load_demos``).
        epochs: Passes over every transition (>= 1).
        batch_size: Transitions per gradient step.
        learning_rate: Initial Adam learning rate, decayed to 0 by a cosine schedule.
        seed: Seed of the minibatch order.
        progress: Show progress per epoch (a bar on a terminal, lines elsewhere).
        tensors: ``demo_tensors(model, demos)`` when the caller has them already.

    Raises:
        ValueError: For a model without an actor (e.g. PPO) or ``epochs`` < 1.
    """
    if not hasattr(model, "actor") or epochs < 1:
        raise ValueError("behaviour cloning needs an off-policy actor (sac, tqc, td3), epochs >= 1")
    start = time.perf_counter()
    t_obs, t_act = tensors if tensors is not None else demo_tensors(model, demos)
    device = model.device
    optimizer = torch.optim.Adam(model.actor.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    model.policy.set_training_mode(True)
    extractor = model.actor.features_extractor
    estimator = extractor if getattr(extractor, "estimator", None) is not None else None
    losses = []
    n = len(t_act)
    label = f"behaviour cloning on {n:,} transitions"
    with Progress(label, epochs, "epochs", enabled=progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            total = 0.0
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                batch = {k: v[idx] for k, v in t_obs.items()}
                predicted = deterministic_action(model, batch)
                loss = torch.mean((predicted - t_act[idx]) ** 2)
                if estimator is not None:
                    loss = loss + estimator.estimator_loss(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            schedule.step()
            losses.append(total / n)
            bar.advance(note=f"loss {losses[-1]:.4f}")
    model.policy.set_training_mode(False)
    if hasattr(model, "actor_target"):  # TD3: the target starts from the cloned actor
        model.actor_target.load_state_dict(model.actor.state_dict())
    return CloneResult(epochs, n, losses[0], losses[-1], round(time.perf_counter() - start, 3))
