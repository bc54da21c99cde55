"""Locomotion throughput: go2_flat's and go2_rough's BatchEnv against a bare `mujoco.batch.Batch` on the same model.

Both loops step the same compiled Go2 (actuators included) with the same decimation (4 physics
steps of 5 ms per 20 ms control step) and the same pre-generated random raw actions, from the
env's reset states, as `bench.sim` does for the small tasks:

- s2r: `BatchEnv.step` of go2_flat: action mapping, physics, the floating-base quantities, ten
  reward terms, two terminations, the command generator, noisy observations, the critic's
  privileged terms, auto-resets;
- go2_rough adds the heightfield tiles in the model (the ceiling steps the same model), spawning on
  each world's tile at resets, the terrain curriculum and the critic's 187-point height scan;
- ceiling: the bare batch writing `ctrl = action_mapping.targets(action)` and stepping; it observes
  nothing and never resets.

Rows per task: the nominal model, and the task's default randomization (its command delay splits each
control step into per-substep calls, and pushes and resets redraw parameters). The ratio is the
result; absolute rates are notes on a shared machine.

    PYTHONPATH=. python -m bench.locomotion --num-envs 1024 --steps 100
    PYTHONPATH=. python -m bench.locomotion --tasks go2_rough --rows nominal
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from bench.report import machine, report
from bench.sim import WARMUP_STEPS, _time_ceiling, _time_s2r
from s2r.sim.env import make_env


ROWS = {"nominal": None, "randomized": "default"}
"""Each row's `make_env(randomize=...)`."""


def run(num_envs: int = 1024, steps: int = 100, seed: int = 0, *, tasks: tuple[str, ...] = ("go2_flat", "go2_rough"),
        rows: tuple[str, ...] = tuple(ROWS)) -> dict[str, Any]:
    """Env steps per second of each task (nominal and randomized) and of the bare batch, and their ratios."""
    return {"num_envs": num_envs, "steps": steps,
            **{task: _task_rows(task, num_envs, steps, seed, rows) for task in tasks}, "machine": machine()}


def _task_rows(task: str, num_envs: int, steps: int, seed: int, labels: tuple[str, ...]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for label in labels:
        env = make_env(task, num_envs, seed=seed, randomize=ROWS[label])
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
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=["go2_flat", "go2_rough"])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args(argv)
    result = run(args.num_envs, args.steps, args.seed, tasks=tuple(args.tasks), rows=tuple(args.rows))
    table = []
    for task in args.tasks:
        for label in args.rows:
            row = result[task][label]
            table += [(f"{task} {label}: s2r env steps/s", f"{row['s2r_steps_per_s']:,.0f}"),
                      (f"{task} {label}: bare batch steps/s", f"{row['ceiling_steps_per_s']:,.0f}"),
                      (f"{task} {label}: ratio (goal ≥ 0.8)", f"{row['ratio_vs_ceiling']:.2f}")]
    report("locomotion", f"locomotion throughput, {args.num_envs} worlds (cpu)", table, result)
    return result


if __name__ == "__main__":
    main()
