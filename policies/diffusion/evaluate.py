"""Evaluate a diffusion policy in simulation through `DiffusionRuntime`, as it runs on the robot.

One episode per world, all worlds batched (each DDIM step is one session run for every world
that plans). A run directory is exported to a temporary ONNX file first, so what is measured
is always the exported graph and the numpy sampler. Push-T's reward is the goal coverage, so
the reward of an episode's last step is its final coverage.

`success_rate` is the task's rule (success held for its window at the time-out: the block
placed and left there); `reached_rate` is the rule of Diffusion Policy's and LeRobot's Push-T
(the success condition held at any step, where their episode ends), and `mean_max_coverage`
their coverage figure (the best coverage of each episode).

    evaluate_diffusion(Path("dp.onnx"), episodes=50)   # {"success_rate", "mean_coverage", ...}
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2r.contract import ContractError
from s2r.observations import LAST_ACTION
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.runtime.mlp import read_contract
from s2r.sim.env import make_env


def evaluate_diffusion(source: Path, *, task: str | None = None, episodes: int = 50, seed: int = 1,
                       backend: str = "cpu", randomize: str | None = None, warm_start: bool = False,
                       warm_start_steps: int | None = None, action_horizon: int | None = None) -> dict[str, Any]:
    """Success rate and mean final coverage of the policy in `source` (ONNX file or diffusion run directory)."""
    source = Path(source)
    if source.is_dir():
        from s2r.policies.diffusion.export import export_diffusion

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_diffusion(source, Path(tmp) / "policy.onnx")
            return evaluate_diffusion(onnx_path, task=task, episodes=episodes, seed=seed, backend=backend,
                                      randomize=randomize, warm_start=warm_start, warm_start_steps=warm_start_steps,
                                      action_horizon=action_horizon)
    contract = read_contract(source)
    task = task or contract.provenance.get("task")
    if task is None:
        raise ContractError(f"{source}: the contract names no task; pass --task")
    env = make_env(task, episodes, seed=seed, backend=backend, randomize=randomize)
    runtime = DiffusionRuntime(source, spec=env.spec, num_envs=episodes, warm_start=warm_start,
                               warm_start_steps=warm_start_steps, action_horizon=action_horizon, seed=seed)
    returns = np.full(episodes, np.nan)
    coverage = np.full(episodes, np.nan)
    successes = np.zeros(episodes)
    best = np.zeros(episodes)
    reached = np.zeros(episodes, dtype=bool)
    env.reset()
    runtime.reset()
    started = time.perf_counter()
    while np.isnan(returns).any():
        inputs = {k: v for k, v in env.inputs.items() if k != LAST_ACTION}
        action = runtime.act(runtime.observe(env.read_state(), inputs))
        _, reward, terminated, truncated, info = env.step(torch.from_numpy(action))
        running = np.isnan(returns)
        best[running] = np.maximum(best[running], reward.numpy()[running])
        done = np.flatnonzero((terminated | truncated).numpy())
        first = np.isnan(returns[done])
        returns[done[first]] = info["episode"]["return"].numpy()[first]
        coverage[done[first]] = reward.numpy()[done[first]]
        successes[done[first]] = info["episode"]["success"].numpy()[first]
        reached[done[first]] = info["episode"]["reached"].numpy()[first] > 0
        runtime.reset(done)
    env.close()
    return {"task": task, "episodes": episodes, "success_rate": float(successes.mean()),
            "mean_coverage": float(coverage.mean()), "reached_rate": float(reached.mean()),
            "mean_max_coverage": float(best.mean()), "mean_return": float(returns.mean()),
            "warm_start": warm_start, "action_horizon": runtime.action_horizon, "wall_s": time.perf_counter() - started}
