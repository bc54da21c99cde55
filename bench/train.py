"""Training time to success: s2r's PPO against rsl_rl's PPO on the same BatchEnv.

Both train the same task configuration (`make_env(task, num_envs, seed=seed)`, a fresh env
each) from the same seed, with the same actor and critic (MLPs 128-128, ELU, observation
normalization inside the model), the same rollout length (24 steps per env) and the same PPO
hyperparameters (s2r's `PPOConfig` defaults, handed to rsl_rl's `PPO` field by field). rsl_rl
sees the env through `RslRlEnv`, an adapter to its `VecEnv`: observation groups policy/critic
in a TensorDict, `dones = terminated | truncated`, `time_outs` in the extras.

Each trainer runs one iteration at a time (`learn(1)`) until the success rate over the last
100 finished episodes reaches `success_threshold`, or `max_iterations`. Success is the env's
own rule (the task's condition held for its window at the end of a timed-out episode), read
from the same `info["episode"]["success"]` for both. The result is each side's wall time, the
ratio peer / s2r, the iterations and the final success rates. The two run one after the other
in one process; the shared machine makes single runs noisy, so read the ratio, not the times.
Torch runs on one intra-op thread by default: on this 2-core machine two threads stall each
other whenever another process holds a core (a PPO update then takes tens of times longer).

    result = run("cartpole", num_envs=512, max_iterations=300)
    result["ratio"]            # > 1: s2r reached the threshold sooner

    PYTHONPATH=. python -m bench.train --task cartpole
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rsl_rl.env import VecEnv
from rsl_rl.runners import OnPolicyRunner as RslRlRunner
from tensordict import TensorDict

from bench.report import finite_or_none, machine, report
from s2r.policies.ppo import ActorCriticConfig, PPOConfig
from s2r.policies.runner import EPISODE_WINDOW, OnPolicyRunner
from s2r.sim.env import BatchEnv, make_env


@dataclass
class Outcome:
    """How one trainer did: wall seconds in training, iterations run, last success rate, threshold reached."""

    wall_s: float
    iterations: int
    success_rate: float
    reached: bool


def run(task: str = "cartpole", *, num_envs: int = 512, max_iterations: int = 300, seed: int = 0,
        success_threshold: float = 0.8, torch_threads: int = 1, ppo: PPOConfig = PPOConfig(),
        model: ActorCriticConfig = ActorCriticConfig()) -> dict[str, Any]:
    """Wall time of s2r's and rsl_rl's PPO to reach `success_threshold` on `task`, and their ratio.

    Both train with `torch_threads` intra-op threads (restored afterwards).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        s2r = _train_s2r(make_env(task, num_envs, seed=seed), ppo, model, seed, success_threshold, max_iterations)
        peer = _train_rsl_rl(make_env(task, num_envs, seed=seed), ppo, model, seed, success_threshold, max_iterations)
    finally:
        torch.set_num_threads(threads)
    return {
        "task": task,
        "num_envs": num_envs,
        "seed": seed,
        "success_threshold": success_threshold,
        "torch_threads": torch_threads,
        "max_iterations": max_iterations,
        "s2r_wall_s": s2r.wall_s,
        "peer_wall_s": peer.wall_s,
        "ratio": peer.wall_s / s2r.wall_s,
        "s2r_iterations": s2r.iterations,
        "peer_iterations": peer.iterations,
        "s2r_success_rate": finite_or_none(s2r.success_rate),
        "peer_success_rate": finite_or_none(peer.success_rate),
        "s2r_reached": s2r.reached,
        "peer_reached": peer.reached,
        "s2r_s_per_iteration": s2r.wall_s / s2r.iterations,
        "peer_s_per_iteration": peer.wall_s / peer.iterations,
        "machine": machine(),
    }


def _train_s2r(env: BatchEnv, ppo: PPOConfig, model: ActorCriticConfig, seed: int, threshold: float,
               max_iterations: int) -> Outcome:
    runner = OnPolicyRunner(env, ppo=ppo, model=model, log_dir=None, seed=seed, progress=False)
    wall_s, success_rate = 0.0, math.nan
    for iteration in range(1, max_iterations + 1):
        start = time.perf_counter()
        success_rate = runner.learn(1)["success_rate"]
        wall_s += time.perf_counter() - start
        if success_rate >= threshold:
            return Outcome(wall_s, iteration, success_rate, reached=True)
    return Outcome(wall_s, max_iterations, success_rate, reached=False)


def _train_rsl_rl(env: BatchEnv, ppo: PPOConfig, model: ActorCriticConfig, seed: int, threshold: float,
                  max_iterations: int) -> Outcome:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    adapter = RslRlEnv(env, seed=seed)
    with contextlib.redirect_stdout(io.StringIO()):  # rsl_rl prints its models and observation sets
        runner = RslRlRunner(adapter, rsl_rl_config(ppo, model), log_dir=None, device="cpu")
    wall_s, success_rate = 0.0, math.nan
    for iteration in range(1, max_iterations + 1):
        start = time.perf_counter()
        runner.learn(1)
        wall_s += time.perf_counter() - start
        success_rate = adapter.success_rate
        if success_rate >= threshold:
            return Outcome(wall_s, iteration, success_rate, reached=True)
    return Outcome(wall_s, max_iterations, success_rate, reached=False)


def rsl_rl_config(ppo: PPOConfig, model: ActorCriticConfig) -> dict[str, Any]:
    """rsl_rl 5's runner configuration with s2r's PPO hyperparameters and network shapes."""
    if (ppo.min_learning_rate, ppo.max_learning_rate) != (1e-5, 1e-2):
        raise ValueError("rsl_rl's adaptive schedule is fixed to learning rates in [1e-5, 1e-2]; "
                         f"got min_learning_rate={ppo.min_learning_rate}, max_learning_rate={ppo.max_learning_rate}")

    def mlp(hidden: tuple[int, ...]) -> dict[str, Any]:
        return {"class_name": "MLPModel", "hidden_dims": list(hidden), "activation": model.activation,
                "obs_normalization": True}

    return {
        "num_steps_per_env": ppo.num_steps_per_env,
        "obs_groups": {"actor": ["policy"], "critic": ["critic"]},
        "actor": {**mlp(model.actor_hidden), "distribution_cfg": {
            "class_name": "GaussianDistribution", "init_std": model.init_noise_std, "std_type": "log"}},
        "critic": mlp(model.critic_hidden),
        "algorithm": {
            "class_name": "PPO",
            "num_learning_epochs": ppo.num_learning_epochs,
            "num_mini_batches": ppo.num_mini_batches,
            "clip_param": ppo.clip_param,
            "gamma": ppo.gamma,
            "lam": ppo.lam,
            "value_loss_coef": ppo.value_loss_coef,
            "entropy_coef": ppo.entropy_coef,
            "learning_rate": ppo.learning_rate,
            "max_grad_norm": ppo.max_grad_norm,
            "use_clipped_value_loss": ppo.use_clipped_value_loss,
            "schedule": ppo.schedule,
            "desired_kl": ppo.desired_kl,
        },
    }


class RslRlEnv(VecEnv):
    """A `BatchEnv` as rsl_rl's `VecEnv`; keeps the success of the last `EPISODE_WINDOW` finished episodes."""

    def __init__(self, env: BatchEnv, *, seed: int) -> None:
        self.env = env
        self.num_envs, self.num_actions = env.num_envs, env.num_actions
        self.max_episode_length = env.max_episode_length
        self.episode_length_buf = torch.zeros(env.num_envs, dtype=torch.long)
        self.device = "cpu"
        self.cfg = {"task": env.task.config.name}
        self.successes: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self._obs = self._groups(env.reset(seed=seed))

    @property
    def success_rate(self) -> float:
        """Mean success of the recent finished episodes; NaN before any ended."""
        return sum(self.successes) / len(self.successes) if self.successes else math.nan

    def get_observations(self) -> TensorDict:
        return self._obs

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.successes.extend(info["episode"]["success"].tolist())
        self._obs = self._groups(obs)
        return self._obs, reward, terminated | truncated, {"time_outs": truncated & ~terminated}

    def _groups(self, obs: dict[str, torch.Tensor]) -> TensorDict:
        return TensorDict(obs, batch_size=[self.num_envs])


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="cartpole", help="pendulum, cartpole or reach")
    parser.add_argument("--num-envs", type=int, default=512)
    parser.add_argument("--max-iterations", type=int, default=300)
    parser.add_argument("--success-threshold", type=float, default=0.8,
                        help="success rate over the last 100 finished episodes that ends training")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(args)
    r = run(opts.task, num_envs=opts.num_envs, max_iterations=opts.max_iterations, seed=opts.seed,
            success_threshold=opts.success_threshold)

    def outcome(side: str) -> str:
        reached = "reached" if r[f"{side}_reached"] else "not reached"
        success = r[f"{side}_success_rate"]
        return (f"{r[f'{side}_wall_s']:.1f} s, {r[f'{side}_iterations']} it, "
                f"success {'n/a' if success is None else f'{success:.0%}'} ({reached})")

    rows = [
        ("s2r OnPolicyRunner", outcome("s2r")),
        ("peer: rsl_rl OnPolicyRunner", outcome("peer")),
        ("s / iteration, s2r vs peer", f"{r['s2r_s_per_iteration']:.2f} vs {r['peer_s_per_iteration']:.2f}"),
        ("peer / s2r wall time", f"{r['ratio']:.2f}"),
    ]
    title = f"training to {opts.success_threshold:.0%} success: {opts.task}, {opts.num_envs} envs"
    report(f"train_{opts.task}", title, rows, r)


if __name__ == "__main__":
    main()
