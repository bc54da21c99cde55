"""Evaluate a policy in simulation: an exported ONNX file or a training run directory.

An ONNX file runs through `PolicyRuntime`, exactly as on the robot: it builds
its own observations from each world's RobotState with the shared terms and
its own action mapping; only the physics is simulated. A run directory runs
the torch actor on the env's observations. One episode per world, so short
(failed) episodes do not crowd out long ones.

    result = evaluate(Path("policy.onnx"), episodes=64)   # {"task", "episodes", "mean_return", "success_rate"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2r.contract import ContractError
from s2r.observations import LAST_ACTION
from s2r.policies.diffusion.train import CHECKPOINT as DIFFUSION_CHECKPOINT
from s2r.policies.train import load_policy
from s2r.runtime.mlp import PolicyRuntime, read_contract
from s2r.sim.env import make_env


def evaluate(source: Path, *, task: str | None = None, episodes: int = 64, seed: int = 1,
             backend: str = "cpu", randomize: str | None = None, **sampler: Any) -> dict[str, float | int | str]:
    """Run `episodes` episodes (one per world) and report mean return and success rate.

    `randomize` evaluates on perturbed worlds: "default" (the task's training randomization)
    or a randomization YAML, e.g. a fixed perturbed robot. Diffusion policies (an ONNX file of kind
    "diffusion" or a diffusion run directory) go to `policies.diffusion.evaluate`, which adds `mean_coverage`
    and takes the sampler's options (`warm_start`, `action_horizon`); an mlp policy refuses them.
    """
    contract = read_contract(source) if source.suffix == ".onnx" else None
    diffusion = contract.kind == "diffusion" if contract is not None else (source / DIFFUSION_CHECKPOINT).is_file()
    if diffusion:
        from s2r.policies.diffusion.evaluate import evaluate_diffusion

        return evaluate_diffusion(source, task=task, episodes=episodes, seed=seed, backend=backend,
                                  randomize=randomize, **sampler)
    if sampler:
        raise ValueError(f"{source}: {', '.join(sampler)}: options of diffusion policies; this one is an mlp")
    if contract is not None:
        task = task or contract.provenance.get("task")
        if task is None:
            raise ContractError(f"{source}: the contract names no task; pass --task")
        env = make_env(task, episodes, seed=seed, backend=backend, randomize=randomize)
        runtime = PolicyRuntime(source, spec=env.spec, num_envs=episodes)

        def act(obs: dict[str, torch.Tensor]) -> torch.Tensor:
            inputs = {k: v for k, v in env.inputs.items() if k != LAST_ACTION}
            return torch.from_numpy(runtime.action(env.read_state(), inputs))

        on_reset = runtime.reset
    else:
        policy, contract, cfg = load_policy(source, task=task)
        task = cfg.task
        env = make_env(task, episodes, seed=seed, backend=backend, randomize=randomize)

        def act(obs: dict[str, torch.Tensor]) -> torch.Tensor:
            with torch.no_grad():
                return policy.act_inference(obs["policy"])

        on_reset = lambda ids: None  # noqa: E731

    returns = np.full(episodes, np.nan)
    successes = np.zeros(episodes)
    obs = env.reset()
    while np.isnan(returns).any():
        obs, _, terminated, truncated, info = env.step(act(obs))
        done = np.flatnonzero((terminated | truncated).numpy())
        first = np.isnan(returns[done])
        returns[done[first]] = info["episode"]["return"].numpy()[first]
        successes[done[first]] = info["episode"]["success"].numpy()[first]
        on_reset(done)
    env.close()
    return {"task": task, "episodes": episodes, "mean_return": float(returns.mean()),
            "success_rate": float(successes.mean())}

