"""Learning to Fly: s2r TD3 and s2r PPO on quadrotor_hover vs RLtools' own L2F TD3, in one run, the same budget each.

Each trainer gets `budget_s` seconds of training (compilation and evaluations not counted):
wall seconds, or with `--clock cpu` the process's CPU seconds, a budget that other jobs on a
shared machine do not eat (both are recorded either way); every `eval_every_s` its deterministic
actor flies `episodes` fresh episodes of s2r's `quadrotor_hover` without guidance
(`policies.rule.rule_task`), and the success rule of docs/quadrotor.md is judged:
position error < 0.1 m and attitude < 10° through the last 2 s of the 5 s episode, in 95 % of
episodes. Trainers run one after another in this process, on the same cores.

RLtools' actor is judged in s2r's simulator (a sim-to-sim transfer: its training Crazyflie is
rltools 2.2.1's, not the paper's; docs/quadrotor.md lists the differences), through
`State.action` on s2r's observations, which have L2F's layout (its 2.2.1 default keeps the last
16 actions, s2r the paper's 32: the first 18 values and the last 16 actions are passed).
RLtools builds with OpenBLAS when `-lblas` links (Debian: libopenblas-dev), else with its
generic matrix code; the table says which.

    .venv/bin/python -m bench.l2f --budget-s 300 --json bench/l2f.json
    .venv/bin/python -m bench.l2f --budget-s 300 --clock cpu --json bench/l2f.json   # on a shared machine
    .venv/bin/python -m bench.l2f --throughput-s 20     # training transitions/s of both TD3s
    .venv/bin/python -m bench.l2f --update-cost 2000    # s2r TD3's gradient step: eager, compiled, larger batches
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

from s2r.policies.offpolicy.train import OffPolicyTrainConfig, train_offpolicy
from s2r.policies.rule import rule_success_rate
from s2r.policies.runner import OnPolicyRunner
from s2r.policies.train import default_config
from s2r.sim.env import make_env

TASK = "quadrotor_hover"
RLTOOLS_ENV = Path(__file__).parent / "l2f_rltools"
RULE = 0.95
RLTOOLS_HISTORY = 16
"""Actions in the observation of rltools 2.2.1's L2F (ACTION_HISTORY_LENGTH; the paper's 32)."""
TRAINERS = ("s2r_td3", "s2r_ppo", "rltools_td3")


class TrainingClock:
    """Training wall and CPU seconds, paused while the rule is judged; `spent` is the budget's (`kind`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.wall_s = self.cpu_s = 0.0
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    @property
    def spent(self) -> float:
        return self.wall_s if self.kind == "wall" else self.cpu_s

    def lap(self) -> None:
        """Adds the time since the last lap (or resume) to the training time."""
        self.wall_s += time.perf_counter() - self._wall
        self.cpu_s += time.process_time() - self._cpu
        self.resume()

    def resume(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()


def judge(clock: TrainingClock, act: Callable[[torch.Tensor], torch.Tensor], env_steps: int, episodes: int,
          seed: int) -> dict:
    """One point of a rule curve: the clock's training time so far and the success rate of `act`."""
    clock.lap()
    point = {"wall_s": clock.wall_s, "cpu_s": clock.cpu_s, "env_steps": env_steps,
             "success_rate": rule_success_rate(act, TASK, episodes=episodes, seed=seed)}
    clock.resume()
    return point


def s2r_td3(budget_s: float, eval_every_s: float, episodes: int, seed: int, clock: str) -> dict:
    """s2r TD3 (`s2r train quadrotor_hover --algo td3`'s defaults) for `budget_s` of training; its rule curve."""
    cfg = OffPolicyTrainConfig(task=TASK, env_steps=10**9, seed=seed, evaluate_every_s=eval_every_s,
                               eval_episodes=episodes, stop_at_success=None, max_train_s=budget_s, save_replay=False,
                               clock=clock)
    with TemporaryDirectory() as out:
        metrics = train_offpolicy(cfg, Path(out), progress=False)
        curve = json.loads((Path(out) / "curve.json").read_text())
    return {"curve": curve, "env_steps": metrics["env_steps"], "env_steps_per_s": metrics["env_steps"] / curve[-1]["wall_s"]}


def s2r_ppo(budget_s: float, eval_every_s: float, episodes: int, seed: int, clock: str) -> dict:
    """s2r PPO (`s2r train quadrotor_hover`'s defaults, policies.train.TASK_DEFAULTS) for `budget_s` of training."""
    cfg = default_config(TASK, seed=seed)
    torch.set_num_threads(cfg.torch_threads)
    env = make_env(TASK, cfg.num_envs, seed=seed)
    runner = OnPolicyRunner(env, ppo=cfg.ppo, model=cfg.model, log_dir=None, seed=seed, progress=False)
    timer, curve, next_eval = TrainingClock(clock), [], eval_every_s

    def evaluate(summary: dict[str, float]) -> bool:
        nonlocal next_eval
        timer.lap()
        if timer.spent < next_eval and timer.spent < budget_s:
            return False
        next_eval = timer.spent + eval_every_s
        curve.append(judge(timer, runner.policy.act_inference, int(summary["env_steps"]), episodes, seed + 1))
        return timer.spent >= budget_s

    runner.learn(10**9, callback=evaluate)
    runner.close()
    env.close()
    return {"curve": curve, "env_steps": curve[-1]["env_steps"], "env_steps_per_s": curve[-1]["env_steps"] / timer.wall_s}


def rltools_td3(budget_s: float, eval_every_s: float, episodes: int, seed: int, clock: str) -> dict:
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

    def act(policy_obs: torch.Tensor) -> torch.Tensor:
        policy = policy_obs.numpy().astype(np.float32)
        l2f = np.concatenate([policy[:, :18], policy[:, -4 * RLTOOLS_HISTORY:]], axis=-1)   # its last 16 actions
        return torch.from_numpy(np.stack([np.asarray(state.action(row)) for row in l2f]))

    timer, curve, steps = TrainingClock(clock), [], 0
    while timer.spent < budget_s:
        until = min(timer.spent + eval_every_s, budget_s)
        while timer.spent < until:
            for _ in range(100):
                state.step()
            steps += 100
            timer.lap()
        curve.append(judge(timer, act, steps, episodes, seed + 1))
    return {"curve": curve, "env_steps": steps, "env_steps_per_s": steps / timer.wall_s, "compile_s": compile_s,
            "blas": blas}


def training_throughput(seconds: float, seed: int = 0) -> dict:
    """Transitions per second of training once updates run (after each trainer's warm-up), s2r TD3 (`HOVER_TD3`,
    32 worlds) and RLtools' L2F TD3 (one environment), each timed for `seconds` of wall time in this process."""
    from s2r.policies.offpolicy.runner import OffPolicyRunner
    from s2r.policies.offpolicy.train import HOVER_TD3

    torch.set_num_threads(1)
    env = make_env(TASK, 32, seed=seed)
    runner = OffPolicyRunner(env, algo=HOVER_TD3, log_dir=None, seed=seed, progress=False)
    runner.learn(HOVER_TD3.learning_starts // 32 + 1)
    started = time.perf_counter()
    summary = runner.learn(10**9, callback=lambda _: time.perf_counter() - started > seconds)
    result = {"s2r_td3": summary["env_steps"] / summary["wall_s"], "s2r_env_only": _env_only(env, seconds / 4)}
    runner.close()
    os.environ.setdefault("RL_TOOLS_DISABLE_MKL", "1")
    import rltools

    model = rltools.TD3({"path": str(RLTOOLS_ENV), "action_dim": 4, "observation_dim": 18 + 4 * RLTOOLS_HISTORY},
                        STEP_LIMIT=3_000_000, REPLAY_BUFFER_CAP=300_000, N_WARMUP_STEPS=10_000, EPISODE_STEP_LIMIT=500,
                        enable_evaluation=False, interface_name="l2f_bench")
    state = model.State(seed)
    for _ in range(10_001):
        state.step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            state.step()
        steps += 100
    result["rltools_td3"] = steps / (time.perf_counter() - started)
    return result


def _env_only(env, seconds: float) -> float:
    """Transitions per second of the env alone (zero actions: motors at half thrust), the TD3 run's worlds."""
    actions = torch.zeros(env.num_envs, env.num_actions)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        env.step(actions)
        steps += 1
    return steps * env.num_envs / (time.perf_counter() - started)


def first_at_rule(curve: list[dict], clock: str) -> float | None:
    return next((c[clock] for c in curve if c["success_rate"] >= RULE), None)


def run(budget_s: float = 300.0, eval_every_s: float = 20.0, episodes: int = 256, seed: int = 0,
        trainers: tuple[str, ...] = TRAINERS, clock: str = "wall") -> dict:
    results = {name: globals()[name](budget_s, eval_every_s, episodes, seed, clock) for name in trainers}
    for result in results.values():
        result["wall_s_to_rule"] = first_at_rule(result["curve"], "wall_s")
        result["cpu_s_to_rule"] = first_at_rule(result["curve"], "cpu_s")
        result["success_at_budget"] = result["curve"][-1]["success_rate"]
        result["best_success"] = max(c["success_rate"] for c in result["curve"])
    return {"budget_s": budget_s, "clock": clock, "episodes": episodes, "rule": RULE, "load_average": os.getloadavg(),
            **results}


def update_cost(updates: int, seed: int = 0) -> dict:
    """The cost of s2r TD3's gradient step on quadrotor_hover's shapes (146 actor, 153 critic inputs, 4 actions,
    HOVER_TD3's 64-unit networks; random transitions: the arithmetic does not depend on the values), `updates`
    critic steps (every second with an actor step) per variant, in this process:

    - eager, batch 256 (HOVER_TD3's) and batch 1024 (a quarter of the steps for the same samples);
    - the actor and critic under `torch.compile` (batch 256), its compilation timed apart and counted in the
      wall time of the run's updates (a 300k-transition HOVER_TD3 run makes about 37k of them).

    Each variant: ms per gradient step (median of 10 blocks), transitions learned from per second, and for the
    compiled one its compile (first steps) seconds."""
    from s2r.policies.offpolicy.replay import Transition
    from s2r.policies.offpolicy.td3 import TD3
    from s2r.policies.offpolicy.train import HOVER_TD3

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    run_updates = round(300_000 / 32 * HOVER_TD3.updates_per_step)
    results = {}

    def batch_of(n: int) -> Transition:
        return Transition(policy_obs=torch.randn(n, 146), critic_obs=torch.randn(n, 153), actions=torch.rand(n, 4) * 2 - 1,
                          rewards=torch.randn(n), next_policy_obs=torch.randn(n, 146), next_critic_obs=torch.randn(n, 153),
                          terminated=torch.zeros(n))

    for name, batch_size, compiled in (("eager_256", 256, False), ("eager_1024", 1024, False),
                                        ("compiled_256", 256, True)):
        agent = HOVER_TD3.build_agent(num_policy_obs=146, num_critic_obs=153, num_actions=4)
        td3 = TD3(agent, HOVER_TD3)
        batch = batch_of(batch_size)
        compile_s = 0.0
        if compiled:
            agent.actor, agent.critic = torch.compile(agent.actor), torch.compile(agent.critic)
            td3.target_actor, td3.target_critic = torch.compile(td3.target_actor), torch.compile(td3.target_critic)
            started = time.perf_counter()
            for _ in range(4):                        # both graphs (with and without the actor step), compiled
                td3.update(batch)
            compile_s = time.perf_counter() - started
        for _ in range(20):
            td3.update(batch)
        blocks = []
        for _ in range(10):
            started = time.perf_counter()
            for _ in range(max(updates // 10, 1)):
                td3.update(batch)
            blocks.append((time.perf_counter() - started) / max(updates // 10, 1))
        step_s = float(np.median(blocks))
        results[name] = {"batch_size": batch_size, "ms_per_step": step_s * 1e3,
                         "transitions_per_s": batch_size / step_s, "compile_s": compile_s,
                         "run_updates_wall_s": compile_s + step_s * run_updates * 256 / batch_size}
    results["run_updates"] = run_updates
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=300.0, help="training seconds per trainer")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what the budget and --eval-every-s count: wall seconds or the process's CPU seconds")
    parser.add_argument("--eval-every-s", type=float, default=20.0)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    parser.add_argument("--throughput-s", type=float,
                        help="instead: time each TD3's training (transitions/s once updates run) for this many seconds")
    parser.add_argument("--update-cost", type=int, metavar="UPDATES",
                        help="instead: time s2r TD3's gradient step (eager, compiled, batch 1024) over UPDATES steps")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.update_cost is not None:
        result = update_cost(args.update_cost, args.seed)
        last = f"wall s of {result['run_updates']} updates of 256"
        print(f"{'variant':<13} {'ms/step':>8} {'samples/s':>10} {'compile s':>10} {last:>32}")
        for name, r in result.items():
            if name != "run_updates":
                print(f"{name:<13} {r['ms_per_step']:>8.2f} {r['transitions_per_s']:>10.0f} {r['compile_s']:>10.1f} "
                      f"{r['run_updates_wall_s']:>32.1f}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    if args.throughput_s is not None:
        result = training_throughput(args.throughput_s, args.seed)
        for name, value in result.items():
            print(f"{name:<13} {value:>9.0f} transitions/s")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    result = run(args.budget_s, args.eval_every_s, args.episodes, args.seed, tuple(args.trainers), args.clock)
    print(f"{'trainer':<13} {'env steps/s':>12} {'to rule: wall s':>16} {'CPU s':>7} "
          f"{f'success at {args.budget_s:.0f} {args.clock} s':>20} {'best':>6}")
    for name in args.trainers:
        r = result[name]
        wall = "not met" if r["wall_s_to_rule"] is None else f"{r['wall_s_to_rule']:.0f}"
        cpu = "-" if r["cpu_s_to_rule"] is None else f"{r['cpu_s_to_rule']:.0f}"
        print(f"{name:<13} {r['env_steps_per_s']:>12.0f} {wall:>16} {cpu:>7} {r['success_at_budget']:>20.0%} "
              f"{r['best_success']:>6.0%}")
    if "rltools_td3" in result:
        print(f"RLtools built {'with' if result['rltools_td3']['blas'] else 'without'} BLAS, "
              f"compiled in {result['rltools_td3']['compile_s']:.0f} s")
    print(f"load average at the end: {result['load_average'][0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
