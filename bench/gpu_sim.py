"""GPU simulation throughput: s2r's `warp` env against a bare MuJoCo Warp loop and the `cpu` backend.

For each task and world count, three loops step the same compiled model (`env.model`,
actuators included) with the same decimation and the same pre-generated random raw actions:

- s2r warp: `BatchEnv.step` on the `warp` backend, the full env (action mapping, physics in a
  CUDA graph, observations, rewards, auto-resets).
- ceiling: a bare MuJoCo Warp loop on the same model: per env step, copy that step's
  precomputed ctrl targets on the device into `d.ctrl` and launch `decimation` `mjw.step`
  calls captured in one CUDA graph; nothing observed, nothing leaves the GPU.
- cpu: `BatchEnv.step` on the `cpu` backend (MuJoCo's C engine on this machine's cores).

Throughput is env steps per second (one env step = `decimation` physics steps of one world).
`--ppo` adds PPO's wall time to the cartpole success threshold on the `warp` backend
(bench.train's rule: success rate over the last 100 episodes). Without a CUDA device it runs
on Warp's CPU device, which is only a smoke test of the script: the numbers mean nothing.

    PYTHONPATH=. python -m bench.gpu_sim --tasks cartpole reach --num-envs 1024 4096 16384 --ppo
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from bench.report import finite_or_none, machine, report
from bench.sim import WARMUP_STEPS, _seconds, _time_s2r
from s2r.sim.env import BatchEnv, make_env


def run(task: str = "cartpole", num_envs: int = 4096, steps: int = 200, seed: int = 0, *,
        cpu_steps: int = 50) -> dict[str, Any]:
    """Env steps per second of the s2r warp env, the bare MuJoCo Warp loop and the cpu env, and their ratios.

    The cpu backend is timed over `min(steps, cpu_steps)` steps (it is the slow one at these sizes).
    """
    env = make_env(task, num_envs, seed=seed, backend="warp")
    rng = np.random.default_rng(seed)
    actions = rng.standard_normal((WARMUP_STEPS + steps, num_envs, env.num_actions)).astype(np.float32)
    env.reset(seed=seed)
    qpos, qvel = env.data_field("qpos").copy(), env.data_field("qvel").copy()

    warp_s = _time_s2r(env, torch.from_numpy(actions), seed)  # each step reads its results back: synchronous
    ceiling_s = _time_bare_warp(env, actions, qpos, qvel)
    device = str(env.batch.device)
    env.close()
    cpu = make_env(task, num_envs, seed=seed, backend="cpu")
    n_cpu = min(steps, cpu_steps)
    cpu_s = _time_s2r(cpu, torch.from_numpy(actions[: WARMUP_STEPS + n_cpu]), seed)
    cpu.close()

    warp_rate, ceiling_rate, cpu_rate = num_envs * steps / warp_s, num_envs * steps / ceiling_s, num_envs * n_cpu / cpu_s
    return {
        "task": task,
        "num_envs": num_envs,
        "steps": steps,
        "cpu_steps": n_cpu,
        "decimation": env.decimation,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "warp_env_steps_per_s": warp_rate,
        "bare_warp_steps_per_s": ceiling_rate,
        "cpu_env_steps_per_s": cpu_rate,
        "ratio_vs_bare_warp": warp_rate / ceiling_rate,
        "ratio_vs_cpu": warp_rate / cpu_rate,
        "machine": machine(),
    }


def ppo_to_threshold(task: str = "cartpole", num_envs: int = 4096, *, threshold: float = 0.8,
                     max_iterations: int = 300, seed: int = 0) -> dict[str, Any]:
    """PPO wall time until the success rate reaches `threshold`, on the warp backend."""
    from bench.train import _train_s2r
    from s2r.policies.ppo import ActorCriticConfig, PPOConfig

    outcome = _train_s2r(make_env(task, num_envs, seed=seed, backend="warp"), PPOConfig(max_learning_rate=1e-3),
                         ActorCriticConfig(), seed, threshold, max_iterations)
    return {"task": task, "num_envs": num_envs, "success_threshold": threshold, "wall_s": outcome.wall_s,
            "iterations": outcome.iterations, "success_rate": finite_or_none(outcome.success_rate),
            "reached": outcome.reached}


def _time_bare_warp(env: BatchEnv, actions: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> float:
    """Seconds for the bare MuJoCo Warp loop over actions[WARMUP_STEPS:], from states qpos (N, nq), qvel (N, nv)."""
    import mujoco_warp as mjw
    import warp as wp

    device = env.batch.device
    with wp.ScopedDevice(device):
        m = mjw.put_model(env.model)
        d = mjw.make_data(env.model, nworld=len(qpos))
        targets = env.action_mapping.targets(actions.reshape(-1, env.num_actions).astype(np.float64))
        ctrl = wp.array(targets.reshape(len(actions), len(qpos), -1).astype(np.float32), dtype=float)

        def physics() -> None:
            for _ in range(env.decimation):
                mjw.step(m, d)

        graph = None
        if device.is_cuda and wp.is_mempool_enabled(device):
            with wp.ScopedCapture(device) as capture:
                physics()
            graph = capture.graph

        def step(k: int) -> None:
            wp.copy(d.ctrl, ctrl[k])
            if graph is not None:
                wp.capture_launch(graph)
            else:
                physics()

        def start_from_reset_states() -> None:
            mjw.reset_data(m, d)
            d.qpos.assign(qpos)
            d.qvel.assign(qvel)

        start_from_reset_states()
        _seconds(step, range(WARMUP_STEPS), wp.synchronize)
        start_from_reset_states()
        wp.synchronize()
        return _seconds(step, range(WARMUP_STEPS, len(actions)), wp.synchronize)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["cartpole", "reach"], help="tasks (reach is the arm)")
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1024, 4096, 16384])
    parser.add_argument("--steps", type=int, default=200, help="timed env steps of the warp loops")
    parser.add_argument("--cpu-steps", type=int, default=50, help="timed env steps of the cpu backend")
    parser.add_argument("--ppo", action="store_true", help="also time PPO to the cartpole threshold on warp")
    opts = parser.parse_args(args)
    results, rows = [], []
    for task in opts.tasks:
        for n in opts.num_envs:
            r = run(task, n, opts.steps, cpu_steps=opts.cpu_steps)
            results.append(r)
            rows.append((f"{task} {n:>6} worlds: warp env / bare warp / cpu env",
                         f"{r['warp_env_steps_per_s']:,.0f} / {r['bare_warp_steps_per_s']:,.0f} / "
                         f"{r['cpu_env_steps_per_s']:,.0f} steps/s  (ratio {r['ratio_vs_bare_warp']:.2f})"))
    result: dict[str, Any] = {"sim": results, "device": results[0]["device"], "gpu": results[0]["gpu"],
                              "machine": machine()}
    if opts.ppo:
        result["ppo"] = ppo_to_threshold()
        p = result["ppo"]
        rows.append((f"PPO cartpole to {p['success_threshold']:.0%} on warp ({p['num_envs']} worlds)",
                     f"{p['wall_s']:.1f} s, {p['iterations']} iterations" + ("" if p["reached"] else " (not reached)")))
    report("gpu_sim", f"GPU simulation on {result['gpu'] or result['device']}", rows, result)


if __name__ == "__main__":
    main()
