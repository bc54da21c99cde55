"""Learning to Fly: s2r TD3 on quadrotor_hover vs RLtools' own L2F TD3, in one run, the same wall budget each.

Each trainer gets `budget_s` seconds of training (compilation and evaluations not counted);
every `eval_every_s` its deterministic actor flies `episodes` fresh episodes of s2r's
`quadrotor_hover` without guidance (`policies.offpolicy.train.rule_task`), and the success
rule of docs/quadrotor.md is judged: position error < 0.1 m and attitude < 10° through the
last 2 s of the 5 s episode. RLtools' actor is judged in s2r's simulator (a sim-to-sim
transfer: its training Crazyflie is rltools 2.2.1's, not the paper's; docs/quadrotor.md lists
the differences), through `State.action` on s2r's observations, which have L2F's layout
(its 2.2.1 default keeps the last 16 actions, s2r the paper's 32: the first 18 values and the
last 16 actions are passed).
RLtools builds with OpenBLAS when `-lblas` links (Debian: libopenblas-dev), else with its
generic matrix code; the table says which.

    .venv/bin/python -m bench.l2f --budget-s 300 --json bench/l2f.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

from s2r.policies.episodes import run_episodes
from s2r.policies.offpolicy.train import OffPolicyTrainConfig, rule_task, train_offpolicy
from s2r.sim.env import BatchEnv

RLTOOLS_ENV = Path(__file__).parent / "l2f_rltools"
RULE = 0.95
RLTOOLS_HISTORY = 16
"""Actions in the observation of rltools 2.2.1's L2F (ACTION_HISTORY_LENGTH; the paper's 32)."""


def s2r_td3(budget_s: float, eval_every_s: float, episodes: int, seed: int) -> dict:
    """s2r TD3 (`s2r train quadrotor_hover --algo td3`'s defaults) for `budget_s` of training; its rule curve."""
    cfg = OffPolicyTrainConfig(task="quadrotor_hover", env_steps=10**9, seed=seed, evaluate_every_s=eval_every_s,
                               eval_episodes=episodes, stop_at_success=None, max_train_s=budget_s)
    with TemporaryDirectory() as out:
        metrics = train_offpolicy(cfg, Path(out), progress=False)
        curve = json.loads((Path(out) / "curve.json").read_text())
    return {"curve": curve, "env_steps": metrics["env_steps"], "env_steps_per_s": metrics["env_steps_per_s"]}


def rltools_success(state, episodes: int, seed: int) -> float:
    """The rule's success rate of RLtools' current actor flown in s2r's quadrotor_hover."""
    env = BatchEnv(rule_task("quadrotor_hover"), episodes, seed=seed)

    def act(obs: dict[str, torch.Tensor]) -> torch.Tensor:
        policy = obs["policy"].numpy().astype(np.float32)
        l2f = np.concatenate([policy[:, :18], policy[:, -4 * RLTOOLS_HISTORY:]], axis=-1)   # its last 16 actions
        return torch.from_numpy(np.stack([np.asarray(state.action(row)) for row in l2f]))

    return run_episodes(env, "quadrotor_hover", act, lambda done: None)["success_rate"]


def rltools_td3(budget_s: float, eval_every_s: float, episodes: int, seed: int) -> dict:
    """RLtools' L2F TD3 (its defaults: one environment, 64-unit networks) for `budget_s` of training."""
    os.environ.setdefault("RL_TOOLS_DISABLE_MKL", "1")   # no MKL here; its loader refuses a process with torch
    import rltools
    from rltools.src.link_blas import link_blas

    blas, _ = link_blas("l2f_bench")
    started = time.perf_counter()
    model = rltools.TD3({"path": str(RLTOOLS_ENV), "action_dim": 4, "observation_dim": 18 + 4 * RLTOOLS_HISTORY},
                        STEP_LIMIT=3_000_000, REPLAY_BUFFER_CAP=300_000,
                        N_WARMUP_STEPS=10_000, EPISODE_STEP_LIMIT=500, enable_evaluation=False,
                        interface_name="l2f_bench")
    compile_s = time.perf_counter() - started
    state = model.State(seed)
    curve, train_s, steps = [], 0.0, 0
    while train_s < budget_s:
        start = time.perf_counter()
        deadline = start + min(eval_every_s, budget_s - train_s)
        while time.perf_counter() < deadline:
            for _ in range(100):
                state.step()
            steps += 100
        train_s += time.perf_counter() - start
        curve.append({"wall_s": train_s, "env_steps": steps, "success_rate": rltools_success(state, episodes, seed + 1)})
    return {"curve": curve, "env_steps": steps, "env_steps_per_s": steps / train_s, "compile_s": compile_s,
            "blas": blas}


def first_at_rule(curve: list[dict]) -> float | None:
    return next((c["wall_s"] for c in curve if c["success_rate"] >= RULE), None)


def run(budget_s: float = 300.0, eval_every_s: float = 20.0, episodes: int = 256, seed: int = 0) -> dict:
    results = {"rltools_td3": rltools_td3(budget_s, eval_every_s, episodes, seed),
               "s2r_td3": s2r_td3(budget_s, eval_every_s, episodes, seed)}
    for result in results.values():
        result["wall_s_to_rule"] = first_at_rule(result["curve"])
        result["success_at_budget"] = result["curve"][-1]["success_rate"]
    return {"budget_s": budget_s, "episodes": episodes, "rule": RULE, **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=300.0, help="training seconds per trainer")
    parser.add_argument("--eval-every-s", type=float, default=20.0)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = run(args.budget_s, args.eval_every_s, args.episodes, args.seed)
    print(f"{'trainer':<13} {'env steps/s':>12} {'to rule (s)':>12} {f'success at {args.budget_s:.0f} s':>18}")
    for name in ("s2r_td3", "rltools_td3"):
        r = result[name]
        to_rule = "not met" if r["wall_s_to_rule"] is None else f"{r['wall_s_to_rule']:.0f}"
        print(f"{name:<13} {r['env_steps_per_s']:>12.0f} {to_rule:>12} {r['success_at_budget']:>18.0%}")
    print(f"RLtools built {'with' if result['rltools_td3']['blas'] else 'without'} BLAS, "
          f"compiled in {result['rltools_td3']['compile_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
