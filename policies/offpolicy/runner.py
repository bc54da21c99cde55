"""The off-policy training loop: vectorized collection, a replay buffer, TD3 or SAC updates.

`OffPolicyRunner` steps all `N` worlds of a `VecEnv` at once, stores their `N`
transitions per step in a `ReplayBuffer` and makes `updates_per_step`
gradient steps after each, once `learning_starts` transitions are held (until
then actions are uniform in [-1, 1], or the untrained actor's if the config's
`uniform_warmup` is off); the actor's steps begin at `actor_learning_starts`. It shares the on-policy runner's
pieces: `seed_everything`, the `VecEnv` protocol, the observation groups
(`policy` for the actor, `critic` for the critic), the `TrainingDivergedError`
NaN guard, TensorBoard scalars and a rich progress bar; checkpoints are
written atomically and `runner.agent` exports with `policies.export.export_onnx`.

With an env that reports its reward terms (`BatchEnv`: `info["reward_terms"]`,
`info["reward_weights"]`) the replay keeps each term's value and a sampled
transition's reward is priced with the weights in effect when it is sampled, so a
reward curriculum's new weights apply to all the data (Learning to Fly's
recomputed rewards). Worlds that time out (truncated) are not stored: the env reports the critic's
view of the final state but not the actor's, which the target needs; they are
`1 / episode length` of the data.

    runner = OffPolicyRunner(env, algo=TD3Config(), log_dir=Path("runs/x"), seed=0)
    summary = runner.learn(2_000)                       # env steps of all worlds
    runner.save(Path("runs/x/checkpoint.pt"), extra={"task": "pendulum"})
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from s2r.policies.offpolicy.networks import OffPolicyAgent
from s2r.policies.offpolicy.replay import ReplayBuffer, Transition
from s2r.policies.offpolicy.sac import SAC, SACConfig
from s2r.policies.offpolicy.td3 import TD3, TD3Config
from s2r.policies.runner import CRITIC_OBS, EPISODE_WINDOW, POLICY_OBS, TrainingDivergedError, VecEnv, seed_everything

ALGORITHMS: dict[type, type] = {TD3Config: TD3, SACConfig: SAC}
LOG_EVERY = 50
"""Env steps between TensorBoard writes."""


class OffPolicyRunner:
    """Trains an `OffPolicyAgent` with TD3 or SAC (chosen by the config's type) on a `VecEnv`."""

    def __init__(self, env: VecEnv, *, algo: TD3Config | SACConfig, log_dir: Path | None, seed: int,
                 progress: bool = True, device: torch.device | str = "cpu") -> None:
        missing = {POLICY_OBS, CRITIC_OBS} - set(env.obs_dims)
        if missing:
            raise KeyError(f"env.obs_dims lacks {sorted(missing)}; it has {sorted(env.obs_dims)}")
        if type(algo) not in ALGORITHMS:
            raise TypeError(f"algo: {type(algo).__name__}; expected one of {', '.join(c.__name__ for c in ALGORITHMS)}")
        seed_everything(seed)
        self.env, self.cfg, self.seed, self.show_progress = env, algo, seed, progress
        self.device = torch.device(device)
        self.agent: OffPolicyAgent = algo.build_agent(num_policy_obs=env.obs_dims[POLICY_OBS],
                                                      num_critic_obs=env.obs_dims[CRITIC_OBS],
                                                      num_actions=env.num_actions).to(self.device)
        self.alg = ALGORITHMS[type(algo)](self.agent, algo)
        self.reward_terms: tuple[str, ...] = getattr(env, "reward_terms", ())
        """The env's reward terms, whose values the replay keeps (envs without them: none)."""
        self.buffer = ReplayBuffer(algo.buffer_size, num_policy_obs=env.obs_dims[POLICY_OBS],
                                   num_critic_obs=env.obs_dims[CRITIC_OBS], num_actions=env.num_actions,
                                   num_reward_terms=len(self.reward_terms), device=self.device)
        self.reward_weights: Tensor | None = None
        """The reward terms' weights of the latest step `(K,)`: sampled transitions are priced with them."""
        self.generator = torch.Generator().manual_seed(seed)
        self.env_steps = 0
        """Env steps (of all worlds) taken so far, over every `learn` call."""
        self.episode_returns: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self.episode_lengths: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self.episode_successes: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self._obs: dict[str, Tensor] | None = None
        self.writer = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir)

    @property
    def policy(self) -> OffPolicyAgent:
        """The agent being trained (its `actor_normalizer` and `actor` are what export writes)."""
        return self.agent

    def learn(self, num_steps: int, *, callback: Callable[[dict[str, float]], bool] | None = None) -> dict[str, float]:
        """Runs up to `num_steps` env steps (each one of all `N` worlds, then the updates); returns the summary.

        The summary holds `mean_return`, `success_rate` (over the last
        `EPISODE_WINDOW` episodes, NaN before any ended), `env_steps`
        (transitions: steps × N), `wall_s`, `env_steps_per_s` and `updates` of
        this call. `callback` gets the running summary after every env step
        and stops training by returning True.
        """
        obs = self._obs if self._obs is not None else self._reset()
        start, updates, done = time.perf_counter(), 0, 0
        metrics: dict[str, float] = {}
        self.agent.train()
        with self._progress_bar() as bar:
            task = bar.add_task(self.alg.name.upper(), total=num_steps, ret=math.nan, success=math.nan)
            while done < num_steps:
                with torch.no_grad():
                    if self.cfg.normalize_observations:
                        self.agent.update_normalizers(obs[POLICY_OBS], obs[CRITIC_OBS])
                    if self.cfg.uniform_warmup and self.buffer.size < self.cfg.learning_starts:
                        actions = 2 * torch.rand(self.env.num_envs, self.env.num_actions, generator=self.generator) - 1
                        actions = actions.to(self.device)
                    else:
                        actions = self.alg.act(obs[POLICY_OBS])
                next_obs, rewards, terminated, truncated, info = self._step_env(actions)
                self._store(obs, actions, rewards, next_obs, terminated, truncated, info)
                self._record_episodes(info["episode"])
                obs = next_obs
                if self.buffer.size >= self.cfg.learning_starts:
                    update_actor = self.buffer.size >= self.cfg.actor_learning_starts
                    for _ in range(self.cfg.updates_per_step):
                        metrics = self.alg.update(self.price(self.buffer.sample(self.cfg.batch_size, self.generator)),
                                                  update_actor=update_actor)
                    updates += self.cfg.updates_per_step
                self.env_steps += 1
                done += 1
                if done % LOG_EVERY == 0:
                    self._log(metrics)
                    bar.update(task, advance=LOG_EVERY, ret=_mean(self.episode_returns),
                               success=_mean(self.episode_successes))
                if callback is not None and callback(self._summary(done, updates, start)):
                    break
        self._obs = obs
        if self.writer is not None:
            self.writer.flush()
        return self._summary(done, updates, start)

    def save(self, path: Path, extra: dict[str, Any], *, replay: bool = False) -> None:
        """Writes the agent, the optimizers, the target networks, the env step count, `extra` and, with `replay`, the replay
        buffer's transitions to `path` atomically (a run resumed without its replay collapses while it
        refills: docs/quadrotor.md).

        `extra` must hold only plain Python values and tensors; otherwise this
        raises `TypeError` and leaves any previous checkpoint at `path` intact.
        """
        checkpoint = {
            "algorithm": self.alg.name,
            "model": self.agent.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.alg.optimizers.items()},
            "targets": self.alg.state_dict(),
            "env_steps": self.env_steps,
            "extra": extra,
        }
        if replay:
            checkpoint["replay"] = self.buffer.state_dict()
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
        """Restores agent, optimizers, step count and the replay (if saved) from `path`; returns `extra`."""
        checkpoint = torch.load(path, weights_only=True, map_location=self.device)
        if checkpoint.get("algorithm") != self.alg.name:
            raise ValueError(f"{path}: algorithm: checkpoint is {checkpoint.get('algorithm')!r}, this runner "
                             f"{self.alg.name!r}")
        self.agent.load_state_dict(checkpoint["model"])
        for name, opt in self.alg.optimizers.items():
            opt.load_state_dict(checkpoint["optimizers"][name])
        self.alg.load_state_dict(checkpoint["targets"])
        self.env_steps = checkpoint["env_steps"]
        if "replay" in checkpoint:
            self.buffer.load_state_dict(checkpoint["replay"])
        return checkpoint["extra"]

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()

    # --- internals --------------------------------------------------------------------------
    def _store(self, obs: dict[str, Tensor], actions: Tensor, rewards: Tensor, next_obs: dict[str, Tensor],
               terminated: Tensor, truncated: Tensor, info: dict[str, Any]) -> None:
        """Adds this step's transitions, the final critic view for ended worlds, dropping truncated ones."""
        ended = terminated | truncated
        next_critic = torch.where(ended[:, None], info["final_critic_obs"], next_obs[CRITIC_OBS])
        keep = (~truncated).nonzero().flatten()
        terms = None
        if self.reward_terms:
            # stored: the reward outside the weighted terms (0 for a task made of terms) and the terms' values
            terms = info["reward_terms"][keep]
            rewards = rewards[keep] - terms @ (self.reward_weights if self.reward_weights is not None
                                               else info["reward_weights"])
            self.reward_weights = info["reward_weights"]
        else:
            rewards = rewards[keep]
        self.buffer.add(Transition(
            policy_obs=obs[POLICY_OBS][keep], critic_obs=obs[CRITIC_OBS][keep], actions=actions[keep],
            rewards=rewards, next_policy_obs=next_obs[POLICY_OBS][keep], next_critic_obs=next_critic[keep],
            terminated=terminated[keep].float(), reward_terms=terms,
        ))

    def price(self, batch: Transition) -> Transition:
        """`batch` from the replay with each reward priced at the reward weights in effect now (Learning to Fly
        recomputes its replay's rewards whenever its curriculum changes the weights); unchanged for envs that
        report no reward terms."""
        if batch.reward_terms is None:
            return batch
        return replace(batch, rewards=batch.rewards + batch.reward_terms @ self.reward_weights)

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
        self._check_finite("action", actions)
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self._check_finite("policy observation", obs[POLICY_OBS])
        self._check_finite("critic observation", obs[CRITIC_OBS])
        self._check_finite("reward", rewards)
        self._check_finite("final critic observation", info["final_critic_obs"], rows=terminated)
        return obs, rewards, terminated, truncated, info

    def _check_finite(self, what: str, x: Tensor, rows: Tensor | None = None) -> None:
        """Raises `TrainingDivergedError` if `x` `(N,)` or `(N, D)` is non-finite in the `rows` `(N,)` selected."""
        bad = ~torch.isfinite(x)
        if rows is not None:
            bad &= rows.reshape(-1, *([1] * (x.dim() - 1)))
        if not bad.any():
            return
        bad_rows = bad.reshape(x.shape[0], -1)
        env_ids = bad_rows.any(1).nonzero().flatten().tolist()
        columns = bad_rows.any(0).nonzero().flatten().tolist() if x.dim() > 1 else None
        raise TrainingDivergedError(what, self.env_steps, env_ids, columns)

    def _record_episodes(self, episode: dict[str, Tensor]) -> None:
        self.episode_returns.extend(episode["return"].tolist())
        self.episode_lengths.extend(episode["length"].tolist())
        self.episode_successes.extend(episode["success"].tolist())

    def _summary(self, steps: int, updates: int, start: float) -> dict[str, float]:
        wall_s = time.perf_counter() - start
        transitions = steps * self.env.num_envs
        return {"mean_return": _mean(self.episode_returns), "success_rate": _mean(self.episode_successes),
                "env_steps": transitions, "wall_s": wall_s, "env_steps_per_s": transitions / wall_s,
                "updates": updates}

    def _log(self, metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        if self.episode_returns:
            metrics = {**metrics, "charts/episodic_return": _mean(self.episode_returns),
                       "charts/success_rate": _mean(self.episode_successes),
                       "charts/episode_length": _mean(self.episode_lengths)}
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, self.env_steps * self.env.num_envs)

    def _progress_bar(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("return {task.fields[ret]:.2f}  success {task.fields[success]:.0%}"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not self.show_progress,
        )


def _mean(values: deque[float]) -> float:
    return sum(values) / len(values) if values else math.nan
