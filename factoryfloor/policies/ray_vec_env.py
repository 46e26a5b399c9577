"""``RayVecEnv``: an SB3 ``VecEnv`` whose environments live in Ray actors (issue: scale-out).

Each actor hosts a batch of environments and steps them together, returning NumPy arrays, so a
vectorised step costs one remote call per actor, not per env. Semantics follow SB3's
``SubprocVecEnv``: auto-reset with ``terminal_observation`` and ``TimeLimit.truncated`` in the
info, seeds from ``seed()`` used at the next ``reset()``, and ``env_method`` / ``get_attr`` /
``set_attr`` / ``env_is_wrapped`` forwarded to the envs (so HER's ``compute_reward`` calls and
evaluation callbacks work unchanged).

An actor that dies is replaced by a new one whose envs are reset (seeded with the next unused
seeds); the event is logged and counted in ``restarts``. The step in which it died reports its
envs as truncated episodes whose ``terminal_observation`` is their last known observation, with
``actor_restarted`` in the info, and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

log = logging.getLogger(__name__)


class EnvBatch:
    """A Ray actor body: ``n`` envs of ``task`` stepped together."""

    def __init__(self, task: str, env_kwargs: dict[str, Any], n: int) -> None:
        from stable_baselines3.common.monitor import Monitor

        import factoryfloor  # noqa: F401  (registers the envs in the actor's process)

        # Monitor, as make_vec_env wraps each env: episode returns reach SB3's logger
        self.envs = [Monitor(gym.make(task, **env_kwargs)) for _ in range(n)]

    def spaces(self) -> tuple[gym.Space[Any], gym.Space[Any]]:
        """Observation and action spaces."""
        return self.envs[0].observation_space, self.envs[0].action_space

    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def reset(
        self, seeds: list[int | None], options: list[dict[str, Any]]
    ) -> tuple[Any, list[Any]]:
        """Reset every env (``seeds[i]`` None keeps its generator); stacked obs and infos."""
        results = [
            env.reset(seed=seed, **({"options": opt} if opt else {}))
            for env, seed, opt in zip(self.envs, seeds, options, strict=True)
        ]
        return _stack([r[0] for r in results]), [r[1] for r in results]

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, list[Any], list[Any]]:
        """Step every env with its action; done envs are reset (SubprocVecEnv's semantics)."""
        obs, rewards, dones, infos, reset_infos = [], [], [], [], []
        for env, action in zip(self.envs, actions, strict=True):
            observation, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            reset_info: dict[str, Any] = {}
            if done:
                info["terminal_observation"] = observation
                observation, reset_info = env.reset()
            obs.append(observation)
            rewards.append(reward)
            dones.append(done)
            infos.append(info)
            reset_infos.append(reset_info)
        return _stack(obs), np.asarray(rewards, np.float32), np.asarray(dones), infos, reset_infos

    def call(
        self, local: list[int], kind: str, name: str, args: Any = (), kwargs: Any = None
    ) -> list[Any]:
        """``env_method``, ``get_attr``, ``set_attr``, ``has_attr`` or ``is_wrapped`` on envs."""
        from stable_baselines3.common.env_util import is_wrapped

        out = []
        for i in local:
            env = self.envs[i]
            if kind == "env_method":
                out.append(env.get_wrapper_attr(name)(*args, **(kwargs or {})))
            elif kind == "get_attr":
                out.append(env.get_wrapper_attr(name))
            elif kind == "set_attr":
                out.append(setattr(env, name, args))
            elif kind == "has_attr":
                out.append(hasattr(env, name) or hasattr(env.unwrapped, name))
            else:
                out.append(is_wrapped(env, args))
        return out

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


def _stack(obs: list[Any]) -> Any:
    if isinstance(obs[0], dict):
        return {k: np.stack([o[k] for o in obs]) for k in obs[0]}
    return np.stack(obs)


class RayVecEnv(VecEnv):
    """``n_envs`` envs of ``task`` in ``ceil(n_envs / envs_per_actor)`` Ray actors.

    Args:
        task: Gymnasium id.
        n_envs: Environments in all.
        envs_per_actor: Environments per actor (the last actor may hold fewer).
        env_kwargs: Keyword arguments of ``gymnasium.make``.
        num_cpus_per_actor: CPUs Ray reserves per actor.
    """

    def __init__(
        self,
        task: str,
        n_envs: int,
        envs_per_actor: int = 4,
        env_kwargs: dict[str, Any] | None = None,
        num_cpus_per_actor: float = 1.0,
    ) -> None:
        if not ray.is_initialized():
            raise RuntimeError("RayVecEnv needs Ray: call ray.init() (or pass --ray) first")
        if n_envs < 1 or envs_per_actor < 1:
            raise ValueError(f"n_envs={n_envs}, envs_per_actor={envs_per_actor}: use >= 1")
        self.task, self.env_kwargs = task, dict(env_kwargs or {})
        self._remote = ray.remote(num_cpus=num_cpus_per_actor)(EnvBatch)
        sizes = [envs_per_actor] * (n_envs // envs_per_actor)
        if n_envs % envs_per_actor:
            sizes.append(n_envs % envs_per_actor)
        self.sizes = sizes
        self.starts = [int(s) for s in np.cumsum([0, *sizes[:-1]])]
        self.actors = [self._remote.remote(task, self.env_kwargs, n) for n in sizes]
        obs_space, act_space = ray.get(self.actors[0].spaces.remote())
        super().__init__(n_envs, obs_space, act_space)
        self.restarts = 0
        self._pending: list[Any] = []
        self._last_obs: Any = None
        self._next_restart_seed = 2**31  # seeds for envs of replaced actors, never reused

    @property
    def n_actors(self) -> int:
        """Actors hosting the envs."""
        return len(self.actors)

    def reset(self) -> Any:
        """Reset all envs (with the seeds of ``seed()`` if given)."""
        refs = [
            actor.reset.remote(self._seeds[s : s + n], self._options[s : s + n])
            for actor, s, n in zip(self.actors, self.starts, self.sizes, strict=True)
        ]
        results = [self._get_or_restart(i, ref) for i, ref in enumerate(refs)]
        obs = self._concat([r[0] for r in results])
        self.reset_infos = [info for r in results for info in r[1]]
        self._reset_seeds()
        self._reset_options()
        self._last_obs = obs
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """One remote call per actor with its envs' actions."""
        self._pending = [
            actor.step.remote(actions[s : s + n])
            for actor, s, n in zip(self.actors, self.starts, self.sizes, strict=True)
        ]

    def step_wait(self) -> VecEnvStepReturn:
        """Gather every actor's step; replace an actor that died (see the module docstring)."""
        parts = []
        for i, ref in enumerate(self._pending):
            try:
                parts.append(ray.get(ref))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
                parts.append(self._replace(i, exc))
        self._pending = []
        obs = self._concat([p[0] for p in parts])
        rewards = np.concatenate([p[1] for p in parts])
        dones = np.concatenate([p[2] for p in parts])
        infos = [info for p in parts for info in p[3]]
        self.reset_infos = [info for p in parts for info in p[4]]
        self._last_obs = obs
        return obs, rewards, dones, infos

    def _restart(self, i: int, exc: BaseException, during: str, seeds: list[int | None]) -> Any:
        """Replace dead actor ``i`` (logged, counted) and reset its envs with ``seeds``."""
        self.restarts += 1
        n, s = self.sizes[i], self.starts[i]
        log.warning("Ray actor %d (envs %d-%d) died %s (%s); restarting it", i, s, s + n - 1,
                    during, exc)  # fmt: skip
        self.actors[i] = self._remote.remote(self.task, self.env_kwargs, n)
        return ray.get(self.actors[i].reset.remote(seeds, [{}] * n))

    def _replace(self, i: int, exc: BaseException) -> tuple[Any, ...]:
        """A new actor for actor ``i`` during a step; its envs end truncated, start afresh."""
        n, s = self.sizes[i], self.starts[i]
        seeds: list[int | None] = list(range(self._next_restart_seed, self._next_restart_seed + n))
        self._next_restart_seed += n
        obs, reset_infos = self._restart(i, exc, "during a step", seeds)
        last = self._slice(self._last_obs, s, n)
        infos = [
            {"TimeLimit.truncated": True, "actor_restarted": True,
             "terminal_observation": self._row(last, j)}
            for j in range(n)
        ]  # fmt: skip
        return obs, np.zeros(n, np.float32), np.ones(n, dtype=bool), infos, reset_infos

    def _get_or_restart(self, i: int, ref: Any) -> Any:
        try:
            return ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
            n, s = self.sizes[i], self.starts[i]
            return self._restart(i, exc, "during a reset", self._seeds[s : s + n])

    def _concat(self, parts: list[Any]) -> Any:
        if isinstance(parts[0], dict):
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return np.concatenate(parts)

    @staticmethod
    def _slice(obs: Any, s: int, n: int) -> Any:
        if obs is None:
            return None
        return (
            {k: v[s : s + n] for k, v in obs.items()} if isinstance(obs, dict) else obs[s : s + n]
        )

    @staticmethod
    def _row(obs: Any, j: int) -> Any:
        if obs is None:
            return None
        return {k: v[j] for k, v in obs.items()} if isinstance(obs, dict) else obs[j]

    def _by_actor(self, indices: VecEnvIndices) -> dict[int, list[int]]:
        """Actor -> local env indices, for the global ``indices``."""
        groups: dict[int, list[int]] = {}
        for g in self._get_indices(indices):
            a = next(
                i
                for i, (s, n) in enumerate(zip(self.starts, self.sizes, strict=True))
                if s <= g < s + n
            )
            groups.setdefault(a, []).append(g - self.starts[a])
        return groups

    def _call(
        self, indices: VecEnvIndices, kind: str, name: str, args: Any = (), kwargs: Any = None
    ) -> list[Any]:
        groups = self._by_actor(indices)
        refs = [
            self.actors[a].call.remote(local, kind, name, args, kwargs)
            for a, local in groups.items()
        ]
        return [x for part in ray.get(refs) for x in part]

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call ``method_name`` on the envs (in env order)."""
        return self._call(indices, "env_method", method_name, method_args, method_kwargs)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of the envs (in env order)."""
        return self._call(indices, "get_attr", attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on the envs."""
        self._call(indices, "set_attr", attr_name, value)

    def has_attr(self, attr_name: str) -> bool:
        """Whether every env has the attribute."""
        return all(self._call(None, "has_attr", attr_name))

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether the envs are wrapped with ``wrapper_class``."""
        return self._call(indices, "is_wrapped", "", wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Not supported across machines: the envs render where they run."""
        return [None] * self.num_envs

    def node_ids(self) -> list[str]:
        """The Ray node of each actor."""
        return list(ray.get([a.node_id.remote() for a in self.actors]))

    def close(self) -> None:
        """Close the envs and end the actors."""
        for actor in self.actors:
            with contextlib.suppress(Exception):  # a dead actor has nothing to close
                ray.get(actor.close.remote(), timeout=10)
            ray.kill(actor)
