"""What runs inside ``model.learn``: evaluation, best/last checkpoints, stopping on signals."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from factoryfloor.policies import checkpoint as ckpt
from factoryfloor.policies import run_files as rf
from factoryfloor.policies.rollout import run_episode
from factoryfloor.policies.train_config import TrainConfig


class RunCallback(BaseCallback):
    """Periodic evaluation, best and last checkpoints, and stopping on a signal.

    Args:
        cfg: The run's config.
        run_dir: The run folder.
        eval_env: A single (not vectorised) env for evaluation episodes.
        last: The checkpoint being resumed (a "best" one when "last" was never written), or
            None for a new run.
        start: ``time.perf_counter()`` when this session started (s).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        eval_env: gym.Env[Any, Any],
        last: ckpt.Checkpoint | None,
        start: float,
    ) -> None:
        super().__init__()
        self.cfg, self.run_dir, self.eval_env, self.start = cfg, run_dir, eval_env, start
        meta = last.manifest if last is not None else {}
        # a "best" checkpoint: the times, score and step are those of its evaluation
        evaluation = meta.get("evaluation", {})
        self.time_before_s = float(meta.get("wall_time_s", evaluation.get("wall_time_s", 0.0)))
        self.eval_time_s = float(
            meta.get("eval_wall_time_s", evaluation.get("eval_wall_time_s", 0.0))
        )
        best_return = meta.get("best_mean_return", evaluation.get("mean_return"))
        self.best = (
            meta.get("best_success_rate", evaluation.get("success_rate", -1.0)),
            -np.inf if best_return is None else best_return,
        )
        self.last_eval_step = int(meta.get("last_eval_step", evaluation.get("num_timesteps", -1)))
        self.stop: StopRequest | None = None
        self.next_eval = self.next_ckpt = 0
        self.evaluate_at_start = False
        self.stopped_because: str | None = None
        self.stop_reason: str | None = None  # set before a step, acted on at the next one
        self.on_evaluation: Any = None  # called with each evaluation record

    def _init_callback(self) -> None:
        n, every = self.model.num_timesteps, self.cfg.eval_every_steps
        self.next_eval = (n // every + 1) * every
        if self.cfg.checkpoint_every_steps:
            self.next_ckpt = (
                n // self.cfg.checkpoint_every_steps + 1
            ) * self.cfg.checkpoint_every_steps

    def _on_training_start(self) -> None:
        if not self.evaluate_at_start:  # e.g. the behaviour-cloned actor, before any update
            return
        if self.evaluate()["success_rate"] >= (self.cfg.target_success or np.inf):
            self.stop_reason = f"target success rate {self.cfg.target_success} reached"

    def _on_step(self) -> bool:
        if self.stop is not None and self.stop.signum is not None:
            # SB3 stops before storing this step's transitions: uncount them, so that the
            # step counter matches the replay buffer that is saved.
            self.model.num_timesteps -= self.training_env.num_envs
            return False
        if self.stop_reason is not None:
            return self._stop_early(self.stop_reason)
        n = self.num_timesteps
        if n >= self.next_eval:
            self.next_eval = (n // self.cfg.eval_every_steps + 1) * self.cfg.eval_every_steps
            if self.evaluate()["success_rate"] >= (self.cfg.target_success or np.inf):
                return self._stop_early(f"target success rate {self.cfg.target_success} reached")
        if self.cfg.max_wall_time_s and self.wall_time_s() >= self.cfg.max_wall_time_s:
            return self._stop_early(f"wall-time budget of {self.cfg.max_wall_time_s} s spent")
        every = self.cfg.checkpoint_every_steps
        if every and n >= self.next_ckpt:
            self.next_ckpt = (n // every + 1) * every
            self.save_last(None)
        return True

    def _stop_early(self, reason: str) -> bool:
        """Stop ``learn`` now (returns False), as a signal does, for ``reason``."""
        self.model.num_timesteps -= self.training_env.num_envs  # this step is not stored
        # Stops come right after an evaluation or a budget check, before any further update:
        # the latest evaluation scores the final model.
        self.last_eval_step = min(self.last_eval_step, self.model.num_timesteps)
        self.stopped_because = reason
        return False

    def wall_time_s(self) -> float:
        """Wall time of the run so far, over all its sessions (s)."""
        return self.time_before_s + time.perf_counter() - self.start

    def finish(self, signum: int | None) -> None:
        """Final evaluation (unless stopped by a signal) and the "last" checkpoint."""
        if signum is None and self.last_eval_step != self.model.num_timesteps:
            self.evaluate()
        self.save_last(signal.Signals(signum).name if signum is not None else None)

    def evaluate(self) -> dict[str, Any]:
        """Run the evaluation episodes, append them to evaluations.jsonl, keep the best."""
        t0 = time.perf_counter()
        vecnorm = self.model.get_vec_normalize_env()
        result = evaluate_model(
            self.model,
            self.eval_env,
            self.cfg.eval_episodes,
            self.cfg.eval_seed,
            vecnorm.normalize_obs if vecnorm is not None else None,
        )
        self.eval_time_s += time.perf_counter() - t0
        score = (result["success_rate"], result["mean_return"])
        record = {
            "num_timesteps": self.model.num_timesteps,
            **result,
            "wall_time_s": round(self.wall_time_s(), 3),
            "eval_wall_time_s": round(self.eval_time_s, 3),
            "time_unix_s": round(time.time(), 3),
            "best": score > self.best,
        }
        with open(self.run_dir / "evaluations.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.last_eval_step = self.model.num_timesteps
        self.logger.record("eval/success_rate", result["success_rate"])
        self.logger.record("eval/mean_return", result["mean_return"])
        if record["best"]:
            self.best = score
            self._save_best(record)
        if self.on_evaluation is not None:
            self.on_evaluation(record)
        return record

    def _writers(self, full: bool) -> dict[str, tuple[str, ckpt.Writer]]:
        """Role -> (suffix, writer) of a checkpoint; ``full``: all that ``--resume`` needs."""
        writers: dict[str, tuple[str, ckpt.Writer]] = {"model": (".zip", self.model.save)}
        vecnorm = self.model.get_vec_normalize_env()
        if vecnorm is not None:
            writers["vecnormalize"] = (".json", rf.vecnormalize_writer(vecnorm))
        if full and self.cfg.off_policy and self.cfg.save_replay_buffer:
            buffer = self.model.replay_buffer  # type: ignore[attr-defined]
            writers["replay_buffer"] = (".npz", rf.replay_buffer_writer(buffer))
        if full:
            env = self.model.get_env()
            assert env is not None
            rng = rf.rng_writer(self.model.action_space.np_random, env.get_attr("np_random"))
            writers["rng"] = (".json", rng)
        return writers

    def _meta(self) -> dict[str, Any]:
        return {"task": self.cfg.task, "algo": self.cfg.algo, "saved_at": _now()}

    def _save_best(self, record: dict[str, Any]) -> None:
        folder = self.run_dir / "checkpoints" / "best"
        meta = {**self._meta(), "evaluation": record}
        ckpt.write_checkpoint(folder, self.model.num_timesteps, self._writers(False), meta)

    def save_last(self, interrupted_by: str | None) -> None:
        """Write ``checkpoints/last``: everything ``--resume`` needs."""
        meta = {
            **self._meta(),
            "complete": self.model.num_timesteps >= self.cfg.timesteps,
            "interrupted_by": interrupted_by,
            "stopped_because": self.stopped_because,
            "wall_time_s": round(self.wall_time_s(), 3),
            "eval_wall_time_s": round(self.eval_time_s, 3),
            "best_success_rate": self.best[0],
            "best_mean_return": self.best[1] if np.isfinite(self.best[1]) else None,
            "last_eval_step": self.last_eval_step,
        }
        folder = self.run_dir / "checkpoints" / "last"
        ckpt.write_checkpoint(folder, self.model.num_timesteps, self._writers(True), meta)


def evaluate_model(
    model: BaseAlgorithm,
    env: gym.Env[Any, Any],
    episodes: int,
    seed: int,
    normalize: Any = None,
) -> dict[str, Any]:
    """Deterministic episodes seeded ``seed``, ``seed + 1``, ...: success rate and returns.

    Args:
        model: The policy to run.
        env: A single env (``gymnasium.make``).
        episodes: Number of episodes.
        seed: Seed of the first episode.
        normalize: Observation normalisation (e.g. ``VecNormalize.normalize_obs``) or None.
    """

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(
            model.predict(normalize(obs) if normalize else obs, deterministic=True)[0]
        )

    runs = [run_episode(env, act, seed + episode) for episode in range(episodes)]
    successes = [r.success for r in runs]
    returns = [r.total_return for r in runs]
    lengths = [r.length for r in runs]
    return {
        "success_rate": float(np.mean(successes)),
        "mean_return": float(np.mean(returns)),
        "mean_episode_length": float(np.mean(lengths)),
        "episodes": episodes,
    }


class StopRequest:
    """Set by the signal handler; the callback stops training when ``signum`` is set."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn SIGINT/SIGTERM into a stop request while training (main thread only)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: abort without saving
        stop.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
