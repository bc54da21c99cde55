"""The on-policy training loop: rollouts, PPO updates, logging and checkpoints.

`OnPolicyRunner` drives any batched environment that follows `VecEnv`, stops
with a `TrainingDivergedError` at the first non-finite observation, reward or
action, and is deterministic for a given seed and environment: it seeds the
global generators when built, so build and train one run before the next.
Given a `Distributed` of several ranks it trains data-parallel
(`policies.distributed`): rank 0's parameters, averaged gradients, and a check
after every update that the ranks still agree; only rank 0 logs.

    runner = OnPolicyRunner(env, ppo=PPOConfig(), model=ActorCriticConfig(), log_dir=Path("runs/x"), seed=0)
    summary = runner.learn(300)
    runner.save(Path("runs/x/model.pt"), extra={"task": "cartpole"})
"""

from __future__ import annotations

import math
import os
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from s2r.policies.distributed import Distributed
from s2r.policies.ppo import PPO, ActorCritic, ActorCriticConfig, PPOConfig

POLICY_OBS = "policy"
"""Observation group the actor sees."""
CRITIC_OBS = "critic"
"""Observation group the critic sees (may hold privileged terms)."""
EPISODE_WINDOW = 100
"""Finished episodes the rolling return, length and success rate average over."""


class VecEnv(Protocol):
    """A batch of `num_envs` environments that reset themselves when an episode ends.

    Tensors are float32 on the CPU unless noted. `step` returns
    `(obs, reward (N,), terminated (N,) bool, truncated (N,) bool, info)` where
    `obs` already starts the next episode for envs that ended, and `info` holds
    `"final_critic_obs"` `(N, C)`, the critic observation of the state each
    env ended in (meaningful where terminated | truncated), and `"episode"`,
    a dict of `"return"`, `"length"`, `"success"` `(k,)` for the k envs that
    ended this step.
    """

    num_envs: int
    num_actions: int
    obs_dims: dict[str, int]

    def reset(self, seed: int | None = None) -> dict[str, Tensor]: ...

    def step(self, actions: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, dict[str, Any]]: ...


class TrainingDivergedError(RuntimeError):
    """A non-finite observation, reward or action; carries what it was, which envs and columns, and when."""

    def __init__(self, what: str, iteration: int, env_ids: list[int], columns: list[int] | None) -> None:
        self.what, self.iteration, self.env_ids, self.columns = what, iteration, env_ids, columns
        where = f"env ids {_shorten(env_ids)}" + (f", columns {_shorten(columns)}" if columns is not None else "")
        super().__init__(f"non-finite {what} at iteration {iteration}: {where}")


def _shorten(ids: list[int], limit: int = 10) -> str:
    return str(ids) if len(ids) <= limit else f"{ids[:limit]} and {len(ids) - limit} more"


def _symmetry(env: VecEnv, ppo: PPOConfig) -> Any:
    """The env's task's mirror for `PPOConfig.symmetry` (None without it)."""
    if not ppo.symmetry:
        return None
    symmetry = getattr(getattr(env, "task", None), "symmetry", None)
    if symmetry is None:
        raise ValueError("PPOConfig.symmetry: the env's task defines no symmetry(env) (a legged robot's mirror)")
    return symmetry(env)


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class OnPolicyRunner:
    """Trains an `ActorCritic` with `PPO` on a `VecEnv`."""

    def __init__(self, env: VecEnv, *, ppo: PPOConfig, model: ActorCriticConfig, log_dir: Path | None,
                 seed: int, progress: bool = True, distributed: Distributed = Distributed(),
                 device: torch.device | str = "cpu") -> None:
        """`seed` seeds this process's generators (give each rank its own); `log_dir` is ignored off rank 0;
        `device` holds the networks and the rollout (the env's tensors must live there too)."""
        missing = {POLICY_OBS, CRITIC_OBS} - set(env.obs_dims)
        if missing:
            raise KeyError(f"env.obs_dims lacks {sorted(missing)}; it has {sorted(env.obs_dims)}")
        seed_everything(seed)
        self.env, self.cfg, self.seed, self.distributed = env, ppo, seed, distributed
        self.show_progress = progress and distributed.is_main
        policy = ActorCritic(model, num_policy_obs=env.obs_dims[POLICY_OBS], num_critic_obs=env.obs_dims[CRITIC_OBS],
                             num_actions=env.num_actions).to(device)
        distributed.broadcast_parameters(policy)
        self.alg = PPO(policy, ppo, num_envs=env.num_envs, distributed=distributed, mirror=_symmetry(env, ppo))
        self.current_iteration = 0
        self.episode_returns: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self.episode_lengths: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self.episode_successes: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self.episode_extras: dict[str, deque[float]] = {}
        """The task's other per-episode figures (`info["episode"]` beyond return, length, success and reached:
        reward terms, tracking errors, falls), over the last `EPISODE_WINDOW` episodes."""
        self._obs: dict[str, Tensor] | None = None
        self.writer = None
        if log_dir is not None and distributed.is_main:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir)

    @property
    def policy(self) -> ActorCritic:
        """The model being trained."""
        return self.alg.policy

    def learn(self, num_iterations: int, *, callback: Callable[[dict[str, float]], bool] | None = None) -> dict[str, float]:
        """Runs up to `num_iterations` rollout-and-update iterations; returns this call's summary.

        The summary holds `mean_return`, `success_rate` (over the last
        `EPISODE_WINDOW` episodes, NaN before any ended), `env_steps`, `wall_s`,
        `env_steps_per_s`, `iterations` of this call and `episode/NAME` for the
        task's other per-episode figures (reward terms, tracking errors). `callback`, if given,
        gets the running summary after every iteration and stops training by
        returning True.
        """
        obs = self._obs if self._obs is not None else self._reset()
        steps_per_iteration = self.env.num_envs * self.cfg.num_steps_per_env
        start = time.perf_counter()
        self.policy.train()
        with self._progress_bar() as bar:
            task = bar.add_task("PPO", total=num_iterations, ret=math.nan, success=math.nan)
            done = 0
            while done < num_iterations:
                iteration_start = time.perf_counter()
                with torch.no_grad():
                    for _ in range(self.cfg.num_steps_per_env):
                        actions = self.alg.act(obs[POLICY_OBS], obs[CRITIC_OBS])
                        obs, rewards, terminated, truncated, info = self._step_env(actions)
                        final_values = self._final_values(info["final_critic_obs"], terminated, truncated)
                        self.alg.process_env_step(rewards, terminated, truncated, final_values)
                        self._record_episodes(info["episode"])
                    self.alg.compute_returns(obs[CRITIC_OBS])
                metrics = self.alg.update()
                self.distributed.check_in_sync(self.policy, self.current_iteration)
                metrics["perf/env_steps_per_s"] = steps_per_iteration / (time.perf_counter() - iteration_start)
                self.current_iteration += 1
                self._log(metrics)
                bar.update(task, advance=1, ret=_mean(self.episode_returns), success=_mean(self.episode_successes))
                done += 1
                if callback is not None and callback(self._summary(done, steps_per_iteration, start)):
                    break
        self._obs = obs
        if self.writer is not None:
            self.writer.flush()
        return self._summary(done, steps_per_iteration, start)

    def _summary(self, iterations: int, steps_per_iteration: int, start: float) -> dict[str, float]:
        wall_s = time.perf_counter() - start
        return {
            "mean_return": _mean(self.episode_returns),
            "success_rate": _mean(self.episode_successes),
            "env_steps": iterations * steps_per_iteration,
            "wall_s": wall_s,
            "env_steps_per_s": iterations * steps_per_iteration / wall_s,
            "iterations": iterations,
            "iteration": self.current_iteration,
            **{f"episode/{name}": _mean(values) for name, values in self.episode_extras.items()},
        }

    def _final_values(self, final_critic_obs: Tensor, terminated: Tensor, truncated: Tensor) -> Tensor:
        """The critic's values `(N,)` of the states the worlds ended in (`final_critic_obs` `(N, C)`), which PPO
        reads only where a world timed out (`truncated & ~terminated`, `(N,)`): in a step without a time-out the
        critic is not run and the values are zeros."""
        if (truncated & ~terminated).any():
            return self.policy.evaluate(final_critic_obs)
        return torch.zeros(truncated.shape, device=truncated.device)

    def save(self, path: Path, extra: dict[str, Any]) -> None:
        """Writes model, optimizer, iteration and `extra` to `path` atomically.

        `extra` must hold only plain Python values and tensors; otherwise this
        raises `TypeError` and leaves any previous checkpoint at `path` intact.
        """
        checkpoint = {
            "model": self.policy.state_dict(),
            "optimizer": self.alg.optimizer.state_dict(),
            "iteration": self.current_iteration,
            "extra": extra,
        }
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            torch.load(tmp, weights_only=True)
        except Exception as error:
            tmp.unlink()
            raise TypeError(f"checkpoint extra holds values weights_only loading refuses: {error}") from error
        os.replace(tmp, path)

    def load(self, path: Path) -> dict[str, Any]:
        """Restores model, optimizer and iteration count from `path`; returns the checkpoint's `extra`."""
        checkpoint = torch.load(path, weights_only=True, map_location=next(self.policy.parameters()).device)
        self.policy.load_state_dict(checkpoint["model"])
        self.alg.optimizer.load_state_dict(checkpoint["optimizer"])
        self.alg.learning_rate = self.alg.optimizer.param_groups[0]["lr"]
        self.current_iteration = checkpoint["iteration"]
        self.distributed.check_in_sync(self.policy, self.current_iteration)
        return checkpoint["extra"]

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()

    def _reset(self) -> dict[str, Tensor]:
        obs = self.env.reset(seed=self.seed)
        for group in (POLICY_OBS, CRITIC_OBS):
            expected = (self.env.num_envs, self.env.obs_dims[group])
            if group not in obs or tuple(obs[group].shape) != expected:
                shapes = {name: tuple(value.shape) for name, value in obs.items()}
                raise ValueError(f"env.reset() must return {group!r} of shape {expected}; got {shapes}")
            self._check_finite(f"{group} observation", obs[group])
        return obs

    def _step_env(self, actions: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, dict[str, Any]]:
        """`env.step` with every input and output the training reads checked for non-finite values."""
        self._check_finite("action", actions)
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self._check_finite("policy observation", obs[POLICY_OBS])
        self._check_finite("critic observation", obs[CRITIC_OBS])
        self._check_finite("reward", rewards)
        self._check_finite("final critic observation", info["final_critic_obs"], rows=truncated & ~terminated)
        return obs, rewards, terminated, truncated, info

    def _check_finite(self, what: str, x: Tensor, rows: Tensor | None = None) -> None:
        """Raises `TrainingDivergedError` if `x` `(N,)` or `(N, D)` is non-finite in the `rows` `(N,)` selected."""
        if torch.isfinite(x.sum()):    # a NaN or inf anywhere makes the sum non-finite (so does an overflow)
            return
        bad = ~torch.isfinite(x)
        if rows is not None:
            bad &= rows.reshape(-1, *([1] * (x.dim() - 1)))
        if not bad.any():
            return
        bad_rows = bad.reshape(x.shape[0], -1)
        env_ids = bad_rows.any(1).nonzero().flatten().tolist()
        columns = bad_rows.any(0).nonzero().flatten().tolist() if x.dim() > 1 else None
        raise TrainingDivergedError(what, self.current_iteration, env_ids, columns)

    def _record_episodes(self, episode: dict[str, Tensor]) -> None:
        self.episode_returns.extend(episode["return"].tolist())
        self.episode_lengths.extend(episode["length"].tolist())
        self.episode_successes.extend(episode["success"].tolist())
        for name, values in episode.items():
            if name not in ("return", "length", "success", "reached"):
                self.episode_extras.setdefault(name, deque(maxlen=EPISODE_WINDOW)).extend(values.tolist())

    def _log(self, metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        if self.episode_returns:
            metrics = {
                **metrics,
                "charts/episodic_return": _mean(self.episode_returns),
                "charts/success_rate": _mean(self.episode_successes),
                "charts/episode_length": _mean(self.episode_lengths),
                **{f"episode/{name}": _mean(values) for name, values in self.episode_extras.items()},
            }
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, self.current_iteration)

    def _progress_bar(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("return {task.fields[ret]:.2f}  success {task.fields[success]:.0%}"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not self.show_progress,
        )


def _mean(values: deque[float]) -> float:
    return sum(values) / len(values) if values else math.nan
