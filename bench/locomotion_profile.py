"""Where a go2_flat PPO iteration's CPU goes: env steps, policy inference, GAE and the PPO update, in CPU seconds.

s2r's `OnPolicyRunner` iteration taken apart at the task's training defaults (`default_config("go2_flat")`),
with MuJoCo on `--threads` threads and torch on `--torch-threads` (1, as `s2r train` runs it): each of the
24 rollout steps is timed in three parts (the actor and critic on the step's observations, `BatchEnv.step`,
the critic on the final observations of the worlds that timed out), then the GAE and the PPO update. The
first iteration (allocations, first touches) is left out. CPU seconds are `time.process_time` (the process's
threads); wall seconds are printed beside them.

    PYTHONPATH=. taskset -c 0 python -m bench.locomotion_profile --threads 1 --iterations 6
    PYTHONPATH=. python -m bench.locomotion_profile --threads 2 --iterations 6      # as s2r train on 2 cores
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import torch

from bench.report import machine, report
from s2r.policies.runner import CRITIC_OBS, POLICY_OBS, OnPolicyRunner
from s2r.policies.train import default_config
from s2r.sim.env import make_env

PARTS = ("policy", "env", "final_values", "storage", "gae", "update")
"""The parts of an iteration: actor + critic on the rollout, env steps, critic on ended worlds' final observations,
the rollout storage and episode bookkeeping, GAE, the PPO update."""


def run(*, iterations: int = 6, threads: int = 1, torch_threads: int = 1, num_envs: int | None = None,
        symmetry: bool | None = None, seed: int = 0) -> dict[str, Any]:
    """CPU and wall seconds per iteration of each part (`PARTS`), averaged over `iterations` after a first one;
    `threads`: MuJoCo's, `torch_threads`: torch's intra-op threads."""
    cfg = default_config("go2_flat", num_envs=num_envs, seed=seed)
    if symmetry is not None:
        cfg = replace(cfg, ppo=replace(cfg.ppo, symmetry=symmetry))
    torch.set_num_threads(torch_threads)
    env = make_env("go2_flat", cfg.num_envs, seed=seed, nthread=threads)
    runner = OnPolicyRunner(env, ppo=cfg.ppo, model=cfg.model, log_dir=None, seed=seed, progress=False)
    alg, obs = runner.alg, runner._reset()
    cpu = dict.fromkeys(PARTS, 0.0)
    wall = dict.fromkeys(PARTS, 0.0)

    def timed(part: str, fn, *args):
        c, w = time.process_time(), time.perf_counter()
        out = fn(*args)
        cpu[part] += time.process_time() - c
        wall[part] += time.perf_counter() - w
        return out

    for iteration in range(iterations + 1):
        if iteration == 1:
            cpu, wall = dict.fromkeys(PARTS, 0.0), dict.fromkeys(PARTS, 0.0)
        runner.policy.train()
        with torch.no_grad():
            for _ in range(cfg.ppo.num_steps_per_env):
                actions = timed("policy", alg.act, obs[POLICY_OBS], obs[CRITIC_OBS])
                obs, rewards, terminated, truncated, info = timed("env", runner._step_env, actions)
                final_values = timed("final_values", runner._final_values, info["final_critic_obs"], terminated,
                                     truncated)
                timed("storage", alg.process_env_step, rewards, terminated, truncated, final_values)
                timed("storage", runner._record_episodes, info["episode"])
            timed("gae", alg.compute_returns, obs[CRITIC_OBS])
        timed("update", alg.update)
    env.close()
    per_iteration = {part: {"cpu_s": cpu[part] / iterations, "wall_s": wall[part] / iterations} for part in PARTS}
    return {"task": "go2_flat", "num_envs": cfg.num_envs, "steps_per_env": cfg.ppo.num_steps_per_env,
            "threads": threads, "torch_threads": torch_threads, "iterations": iterations, "symmetry": cfg.ppo.symmetry,
            "per_iteration": per_iteration,
            "total_cpu_s": sum(p["cpu_s"] for p in per_iteration.values()),
            "total_wall_s": sum(p["wall_s"] for p in per_iteration.values()), "machine": machine()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="MuJoCo's threads")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch's intra-op threads (s2r train: 1)")
    parser.add_argument("--num-envs", type=int)
    parser.add_argument("--symmetry", choices=("on", "off"), help="PPO's mirror augmentation (default: the task's)")
    args = parser.parse_args(argv)
    result = run(iterations=args.iterations, threads=args.threads, torch_threads=args.torch_threads,
                 num_envs=args.num_envs,
                 symmetry=None if args.symmetry is None else args.symmetry == "on")
    total = result["total_cpu_s"]
    rows = [(part, f"{p['cpu_s']:.3f} CPU s ({p['cpu_s'] / total:.0%}), {p['wall_s']:.3f} wall s")
            for part, p in result["per_iteration"].items()]
    rows.append(("iteration", f"{total:.3f} CPU s, {result['total_wall_s']:.3f} wall s"))
    report("locomotion_profile", f"go2_flat: one PPO iteration, {result['num_envs']} worlds × "
                                 f"{result['steps_per_env']} steps, {args.threads} MuJoCo and "
                                 f"{args.torch_threads} torch thread(s)", rows, result)
    return result


if __name__ == "__main__":
    main()
