"""ChunkEnv: a batched env stepped one action chunk at a time, the MDP DPPO and DSRL fine-tune on.

One step of a `ChunkEnv` is what one plan of the robot's `ChunkedPolicy` does (synchronous,
no cross-fade, as the push_t figures are measured): the chunk planned from the observation
window of this tick is executed time-aligned, its actions obs_horizon-1 … obs_horizon-1+H-1
(H = action_horizon) over the next H control ticks, and the next window is observed. The
observations are built by the exported BC policy's `DiffusionRuntime` from each world's
RobotState with the shared terms, exactly as on the robot, and chunks are mapped to raw
actions by its `unnormalize` (the action normalizer and, for relative actions, the reference
at the planning tick), then clipped by the contract's action mapping.

    step:       t    t+1  …  t+7   t+8
    executed:   a1   a2   …  a8                    one ChunkEnv step (H = 8 ticks)
    observed:   o_t                o_t+8           the policy's window (obs_horizon frames)

    env = ChunkEnv(make_env("push_t", 50), DiffusionRuntime("bc.onnx", spec=spec, num_envs=50))
    obs = env.reset()                         # {"policy": (50, To*D), "critic": (50, C + 1)}
    obs, reward, terminated, truncated, info = env.step(chunks)   # chunks: (50, Tp, A) normalized

- reward (N,): with `reward="task"`, the task's reward summed over the executed ticks; with
  `reward="success"` (what fine-tuning uses by default), the fraction of the executed ticks at which
  the task's success condition held (push_t: the block placed, coverage above 95 %), in [0, 1]: the
  papers' sparse success reward, per tick because push_t's episodes do not end at success. A world
  whose episode ends at a tick counts that tick as held if the episode succeeded.
- A step ends early, for every world, at the tick an episode ends (its world restarts and plans
  afresh, as the robot's executor does after a reset); push_t's 300-tick episodes end together,
  so its 38th step is 4 ticks long.
- The critic's observation is the env's (privileged) critic observation of the newest state
  and the fraction of the episode elapsed: with the clock in its view the time-out is a true
  end of this finite-horizon MDP, so an episode's end is `terminated` (no bootstrapping past
  it) and `truncated` is always False. `info["final_critic_obs"]` holds the critic view of the
  state each ended world stopped in; `info["episode"]` the task's per-episode figures.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from s2r.observations import LAST_ACTION
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.sim.env import BatchEnv

POLICY_OBS, CRITIC_OBS = "policy", "critic"
Reward = Literal["task", "success"]
REWARDS: tuple[Reward, ...] = ("task", "success")


class ChunkEnv:
    """`env`'s worlds stepped one chunk of `runtime`'s policy at a time (a `VecEnv` over chunk steps)."""

    def __init__(self, env: BatchEnv, runtime: DiffusionRuntime, *, reward: Reward = "task") -> None:
        if runtime.num_envs != env.num_envs:
            raise ValueError(f"ChunkEnv: the runtime observes {runtime.num_envs} worlds, the env has {env.num_envs}")
        if reward not in REWARDS:
            raise ValueError(f"ChunkEnv: reward {reward!r} (expected one of {', '.join(REWARDS)})")
        self.env, self.runtime, self.reward = env, runtime, reward
        self.num_envs = env.num_envs
        self.chunk_shape = (runtime.pred_horizon, runtime.mapping.num_actions)
        """(Tp, A) of a chunk."""
        self.num_actions = int(np.prod(self.chunk_shape))
        self.obs_dims = {POLICY_OBS: runtime.obs_horizon * runtime.contract.obs_dim,
                         CRITIC_OBS: env.obs_dims[CRITIC_OBS] + 1}
        self.control_ticks = 0
        """Control ticks of all worlds taken so far (env steps × num_envs): the budget both methods share."""
        self.window = np.zeros((self.num_envs, self.obs_dims[POLICY_OBS]), dtype=np.float32)
        """(N, To*D) float32: every world's observation window at the current tick, the one chunks are planned at."""
        self._critic = torch.zeros(self.num_envs, env.obs_dims[CRITIC_OBS])

    @property
    def steps_per_episode(self) -> int:
        """Chunk steps of one episode (its last one shorter where action_horizon does not divide it)."""
        return -(-self.env.max_episode_length // self.runtime.action_horizon)

    @property
    def executed(self) -> slice:
        """The chunk indices a step executes (at most): obs_horizon-1 … obs_horizon-1+H-1."""
        start = self.runtime.obs_horizon - 1
        return slice(start, start + self.runtime.action_horizon)

    def reset(self, seed: int | None = None) -> dict[str, Tensor]:
        """Reset every world; the first observations."""
        obs = self.env.reset(seed=seed)
        self.runtime.reset()
        self._critic = obs[CRITIC_OBS]
        self._observe()
        return self._obs()

    def raw_actions(self, chunks: np.ndarray) -> np.ndarray:
        """Normalized chunks (N, Tp, A) planned at this step's window → raw actions (N, Tp, A)."""
        return self.runtime.unnormalize(chunks, self.window)

    def step(self, chunks: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, dict[str, Any]]:
        """Execute normalized chunks (N, Tp, A) planned at the current windows; see the module docstring."""
        if tuple(chunks.shape[1:]) != self.chunk_shape or len(chunks) != self.num_envs:
            raise ValueError(f"ChunkEnv.step: chunks: shape {tuple(chunks.shape)} (expected "
                             f"({self.num_envs}, {self.chunk_shape[0]}, {self.chunk_shape[1]}))")
        raw = self.raw_actions(chunks.detach().cpu().numpy())
        rewards = torch.zeros(self.num_envs)
        episodes: list[dict[str, Tensor]] = []
        final_critic = torch.zeros(self.num_envs, self.obs_dims[CRITIC_OBS])
        ended = torch.zeros(self.num_envs, dtype=torch.bool)
        for tick, index in enumerate(range(self.executed.start, self.executed.stop)):
            if tick:
                self._observe()
            action = self.runtime.mapping.clip_action(raw[:, index])
            obs, reward, terminated, truncated, info = self.env.step(torch.from_numpy(action))
            self.runtime.last_action[:] = action
            self.control_ticks += self.num_envs
            self._critic = obs[CRITIC_OBS]
            ended = terminated | truncated
            done = ended.nonzero().flatten()
            if self.reward == "task":
                rewards += reward
            else:
                held = torch.from_numpy(self.env.success_held > 0).float()
                held[done] = info["episode"]["success"]        # the ended worlds have been reset already
                rewards += held / self.runtime.action_horizon
            episodes.append(info["episode"])
            if len(done):
                final_critic[done] = torch.cat([info["final_critic_obs"][done], torch.ones(len(done), 1)], dim=-1)
                self.runtime.reset(done.numpy())
                break
        self._observe()
        episode = {key: torch.cat([e[key] for e in episodes]) for key in episodes[0]}
        return (self._obs(), rewards, ended, torch.zeros_like(ended),
                {"final_critic_obs": final_critic, "episode": episode})

    def close(self) -> None:
        self.env.close()

    def _observe(self) -> None:
        """Push this tick's observation of every world into the runtime's history (one push per tick)."""
        inputs = {k: v for k, v in self.env.inputs.items() if k != LAST_ACTION}
        self.window = self.runtime.observe(self.env.read_state(), inputs)

    def _obs(self) -> dict[str, Tensor]:
        elapsed = torch.from_numpy(self.env.episode_length / self.env.max_episode_length).float()[:, None]
        return {POLICY_OBS: torch.from_numpy(self.window.copy()), CRITIC_OBS: torch.cat([self._critic, elapsed], -1)}
