"""The one evaluation loop: every world of a batched env run to the end of its first episode.

`s2r.policies.evaluate` runs it for ONNX files and run directories, the off-policy trainer to judge
a task's rule during training; `act` is whatever chooses the actions (a torch actor, the robot's
runtime), so the figures mean the same for every policy.

    result = run_episodes(env, "pendulum", lambda obs: actor(obs["policy"]), lambda ids: None)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from s2r.sim.env import BatchEnv
    from s2r.sim.render import EpisodeVideo


def run_episodes(env: BatchEnv, task: str, act: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                 on_reset: Callable[[np.ndarray], None], film: Callable[[BatchEnv], EpisodeVideo] | None = None
                 ) -> dict[str, Any]:
    """The episodes of every world of `env` to their first end, `act` choosing the actions (N, A); `film`
    opens a video of the first worlds."""
    episodes = env.num_envs
    returns = np.full(episodes, np.nan)
    final = np.full(episodes, np.nan)
    best = np.full(episodes, -np.inf)
    successes = np.zeros(episodes)
    reached = np.zeros(episodes, dtype=bool)
    started = time.perf_counter()
    obs = env.reset()
    video = film(env) if film is not None else None
    if video is not None:
        video.add(np.zeros(episodes))
    while np.isnan(returns).any():
        obs, reward, terminated, truncated, info = env.step(act(obs))
        if video is not None:
            video.add(reward.numpy(), ended=(terminated | truncated).numpy(), success=info["episode"]["success"].numpy())
        running = np.isnan(returns)
        best[running] = np.maximum(best[running], reward.numpy()[running])
        done = np.flatnonzero((terminated | truncated).numpy())
        first = np.isnan(returns[done])
        returns[done[first]] = info["episode"]["return"].numpy()[first]
        final[done[first]] = reward.numpy()[done[first]]
        successes[done[first]] = info["episode"]["success"].numpy()[first]
        reached[done[first]] = info["episode"]["reached"].numpy()[first] > 0
        on_reset(done)
    env.close()
    filmed = {}
    if video is not None:
        video.close()
        filmed = {"video": str(video.path), "video_frames": video.frames,
                  "video_still": str(video.path.with_suffix(".png"))}
    return {"task": task, "episodes": episodes, "mean_return": float(returns.mean()),
            "success_rate": float(successes.mean()), "reached_rate": float(reached.mean()),
            "mean_final_reward": float(final.mean()), "mean_max_reward": float(best.mean()),
            "wall_s": time.perf_counter() - started, **filmed}
