"""Locomotion throughput: go2_flat's BatchEnv against a bare `mujoco.batch.Batch` on the same model.

Both loops step the same compiled Go2 (actuators included) with the same decimation (4 physics
steps of 5 ms per 20 ms control step) and the same pre-generated random raw actions, from the
env's reset states, as `bench.sim` does for the small tasks:

- s2r: `BatchEnv.step` of go2_flat: action mapping, physics, the floating-base quantities, ten
  reward terms, two terminations, the command generator, noisy observations, the critic's
  privileged terms, auto-resets;
- ceiling: the bare batch writing `ctrl = action_mapping.targets(action)` and stepping; it observes
  nothing and never resets.

Rows: the nominal model, and the task's default randomization (its command delay splits each
control step into per-substep calls, and pushes and resets redraw parameters). The ratio is the
result; absolute rates are notes on a shared machine.

    PYTHONPATH=. python -m bench.locomotion --num-envs 1024 --steps 100
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from bench.report import machine, report
from bench.sim import WARMUP_STEPS, _time_ceiling, _time_s2r
from s2r.sim.env import make_env


def run(num_envs: int = 1024, steps: int = 100, seed: int = 0) -> dict[str, Any]:
    """Env steps per second of go2_flat (nominal and randomized) and of the bare batch, and their ratios."""
    rows: dict[str, Any] = {}
    for label, randomize in (("nominal", None), ("randomized", "default")):
        env = make_env("go2_flat", num_envs, seed=seed, randomize=randomize)
        rng = np.random.default_rng(seed)
        actions = rng.standard_normal((WARMUP_STEPS + steps, num_envs, env.num_actions)).astype(np.float32)
        env.reset(seed=seed)
        qpos, qvel = env.batch.bind("qpos").copy(), env.batch.bind("qvel").copy()
        s2r_s = _time_s2r(env, torch.from_numpy(actions), seed)
        ceiling_s = _time_ceiling(env, actions, qpos, qvel)
        env.close()
        s2r_rate, ceiling_rate = num_envs * steps / s2r_s, num_envs * steps / ceiling_s
        rows[label] = {"s2r_steps_per_s": s2r_rate, "ceiling_steps_per_s": ceiling_rate,
                       "ratio_vs_ceiling": s2r_rate / ceiling_rate}
    return {"task": "go2_flat", "num_envs": num_envs, "steps": steps, **rows, "machine": machine()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.num_envs, args.steps, args.seed)
    table = []
    for label in ("nominal", "randomized"):
        row = result[label]
        table += [(f"{label}: s2r env steps/s", f"{row['s2r_steps_per_s']:,.0f}"),
                  (f"{label}: bare batch steps/s", f"{row['ceiling_steps_per_s']:,.0f}"),
                  (f"{label}: ratio (goal ≥ 0.8)", f"{row['ratio_vs_ceiling']:.2f}")]
    report("locomotion", f"go2_flat throughput, {args.num_envs} worlds (cpu)", table, result)
    return result


if __name__ == "__main__":
    main()
