"""Walking on go2_flat: s2r's PPO against rsl_rl's PPO on the same env, and the walking rule.

Both trainers drive `make_env("go2_flat", num_envs)` from the same seed with the same networks
and samples per iteration (`s2r.policies.train.default_config("go2_flat")`: its networks, worlds
and 24 steps per env). s2r's PPO runs s2r's go2_flat defaults; rsl_rl's runs `LEGGED_GYM_PPO`,
the PPO settings legged_gym and Isaac Lab train quadrupeds with. Each stops when its last 100
training episodes meet the walking rule, or at `--iterations` or `--budget-s` wall seconds of
its own iterations. Wall and CPU seconds (`time.process_time`: the process's threads, MuJoCo's
pool included) count only each trainer's own iterations. The curves are the training episodes'
tracking errors and fall rate against wall time (one PNG, both trainers); each final policy is
then judged by the walking rule on fresh episodes (`evaluate_walking`).

Side by side, one core each (`--trainer` runs one side; `--combine` merges the two results into
one table and PNG), or both in one process taking turns, one iteration each, so that a shared
machine's load falls on both alike (`--trainer both`, the default).

The walking rule (docs/locomotion.md): over one 20 s episode per world of random commands
within the trained ranges (±1 m/s in x and y, ±1 rad/s yaw, resampled every 10 s), with the
policy's mean action and the training observation noise, the mean linear-velocity tracking
error is under 0.2 m/s, the yaw-rate error under 0.3 rad/s, and under 5 % of episodes end in
a fall.

    PYTHONPATH=. taskset -c 0 python -m bench.locomotion_train --trainer s2r --threads 1 --iterations 3000 \
        --budget-s 1200 &                                                   # to the rule, 20 min at most
    PYTHONPATH=. taskset -c 1 python -m bench.locomotion_train --trainer rsl_rl --threads 1 --iterations 3000 \
        --budget-s 1200; wait
    PYTHONPATH=. python -m bench.locomotion_train --combine bench/results/locomotion_train_s2r.json \
        bench/results/locomotion_train_rsl_rl.json                         # the table and the PNG of both
    PYTHONPATH=. python -m bench.locomotion_train --evaluate runs/go2_flat   # the rule on a trained run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rsl_rl.runners import OnPolicyRunner as RslRlRunner
from tensordict import TensorDict

from bench.report import finite_or_none, machine, report
from bench.train import RslRlEnv, rsl_rl_config
from s2r.policies.ppo import PPOConfig
from s2r.policies.runner import EPISODE_WINDOW, OnPolicyRunner
from s2r.policies.train import (CHECKPOINT, LOCOMOTION_CURVE, default_config, load_policy, plain_data,
                                plot_locomotion_curves)
from s2r.sim.env import make_env

RULE = {"lin_vel_error": 0.2, "yaw_rate_error": 0.3, "fall_rate": 0.05}
"""The walking rule's bounds: m/s, rad/s, fraction of episodes."""


def evaluate_walking(act: Callable[[torch.Tensor], torch.Tensor], *, episodes: int = 128, seed: int = 1,
                     randomize: str | None = None) -> dict[str, Any]:
    """The walking figures of `act` (policy observations (N, P) → actions (N, A)): one episode per world."""
    env = make_env("go2_flat", episodes, seed=seed, randomize=randomize)
    obs = env.reset(seed=seed)
    first: dict[str, np.ndarray] = {k: np.full(episodes, np.nan) for k in ("lin_vel_error", "yaw_rate_error", "fell")}
    with torch.no_grad():
        for _ in range(env.max_episode_length):
            obs, _, terminated, truncated, info = env.step(act(obs["policy"]))
            done = np.flatnonzero((terminated | truncated).numpy())
            for key in first:
                values = info["episode"][key].numpy()
                fresh = np.isnan(first[key][done])
                first[key][done[fresh]] = values[fresh]
    env.close()
    figures = {"lin_vel_error": float(np.mean(first["lin_vel_error"])),
               "yaw_rate_error": float(np.mean(first["yaw_rate_error"])), "fall_rate": float(np.mean(first["fell"]))}
    return {**figures, "episodes": episodes, "walks": all(figures[k] < RULE[k] for k in RULE)}


class _CurveEnv(RslRlEnv):
    """RslRlEnv that also keeps the locomotion figures of the last finished episodes."""

    def __init__(self, env, *, seed: int) -> None:
        super().__init__(env, seed=seed)
        self.figures = {key: deque(maxlen=EPISODE_WINDOW) for key in LOCOMOTION_CURVE}

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        for key in LOCOMOTION_CURVE:
            self.figures[key].extend(info["episode"][key.removeprefix("episode/")].tolist())
        self._obs = self._groups(obs)
        return self._obs, reward, terminated | truncated, {"time_outs": truncated & ~terminated}


class _Trainer:
    """One side of the comparison: `step()` runs one PPO iteration and returns its locomotion figures (the
    last `EPISODE_WINDOW` training episodes); wall and CPU seconds accumulate over its own iterations only."""

    def __init__(self, name: str, step: Callable[[], dict[str, float]], act: Callable[[torch.Tensor], torch.Tensor],
                 save: Callable[[], None] | None = None):
        self.name, self._step, self.act, self.save = name, step, act, save
        self.wall_s = self.cpu_s = 0.0
        self.iterations = 0
        self.curve: list[dict[str, float]] = []
        self.rule_at: dict[str, float] | None = None
        """Wall s, CPU s and iteration when the training episodes first met the walking rule."""

    def step(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        figures = self._step()
        self.wall_s += time.perf_counter() - wall
        self.cpu_s += time.process_time() - cpu
        self.iterations += 1
        self.curve.append({"wall_s": self.wall_s, "cpu_s": self.cpu_s, **figures})
        if self.rule_at is None and _meets_rule(figures):
            self.rule_at = {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "iteration": self.iterations}


def _meets_rule(figures: dict[str, float]) -> bool:
    """The training episodes' figures (`LOCOMOTION_CURVE` keys) within the walking rule."""
    keys = dict(zip(("lin_vel_error", "yaw_rate_error", "fall_rate"), LOCOMOTION_CURVE))
    return all(key in figures and figures[key] < RULE[name] for name, key in keys.items())


LEGGED_GYM_PPO = PPOConfig(num_steps_per_env=24, num_learning_epochs=5, num_mini_batches=4, clip_param=0.2, gamma=0.99,
                           lam=0.95, value_loss_coef=1.0, entropy_coef=0.01, learning_rate=1e-3, max_grad_norm=1.0,
                           schedule="adaptive", desired_kl=0.01)
"""rsl_rl's PPO as legged_gym and Isaac Lab train quadrupeds with it (their base PPO config): what rsl_rl's side
runs. s2r's side runs s2r's own go2_flat defaults; both get the same networks and samples per iteration."""

TRAINERS = ("s2r", "rsl_rl")


def _make_trainer(name: str, cfg: Any, *, seed: int, threads: int, out: Path | None = None) -> _Trainer:
    """One side of the comparison on its own `make_env("go2_flat", cfg.num_envs)`, seeded with `seed`; `out`: a run
    directory the s2r side's policy is saved to after each iteration's rule check (`load_policy` reads it)."""
    device = torch.device(cfg.device)
    env = make_env("go2_flat", cfg.num_envs, seed=seed, nthread=threads, backend=cfg.backend, device=device)
    if name == "s2r":
        runner = OnPolicyRunner(env, ppo=cfg.ppo, model=cfg.model, log_dir=None, seed=seed, progress=False,
                                device=device)

        def s2r_save() -> None:
            out.mkdir(parents=True, exist_ok=True)
            contract = env.contract(provenance={"task": "go2_flat", "seed": seed, "num_envs": cfg.num_envs,
                                                "iterations": runner.current_iteration, "trainer": "s2r.ppo"})
            runner.save(out / CHECKPOINT, extra={"task": "go2_flat", "config": plain_data(asdict(cfg)),
                                                 "contract": contract.to_dict()})

        def s2r_step() -> dict[str, float]:
            summary = runner.learn(1)
            return {k: summary[k] for k in LOCOMOTION_CURVE if k in summary and math.isfinite(summary[k])}

        def s2r_act(obs: torch.Tensor) -> torch.Tensor:
            runner.policy.eval()
            return runner.policy.act_inference(obs.to(device)).cpu()

        return _Trainer("s2r", s2r_step, s2r_act, save=s2r_save if out is not None else None)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    adapter = _CurveEnv(env, seed=seed)
    with contextlib.redirect_stdout(io.StringIO()):  # rsl_rl prints its models and observation sets
        peer = RslRlRunner(adapter, rsl_rl_config(LEGGED_GYM_PPO, cfg.model), log_dir=None, device=cfg.device)

    def rsl_rl_step() -> dict[str, float]:
        with contextlib.redirect_stdout(io.StringIO()):
            peer.learn(1)
        return {k: sum(v) / len(v) for k, v in adapter.figures.items() if v}

    def rsl_rl_act(obs: torch.Tensor) -> torch.Tensor:
        act = peer.get_inference_policy()        # rsl_rl 5: the actor on the observation groups, its mean action
        return act(TensorDict({"policy": obs.to(device)}, batch_size=[len(obs)])).cpu()

    return _Trainer("rsl_rl", rsl_rl_step, rsl_rl_act)


def run(*, trainers: tuple[str, ...] = TRAINERS, iterations: int = 100, budget_s: float = math.inf,
        num_envs: int | None = None, seed: int = 0, episodes: int = 128, threads: int = 0,
        progress: Path | None = None, out: Path | None = None, ppo: dict[str, Any] | None = None,
        backend: str = "cpu", device: str = "cpu") -> dict[str, Any]:
    """Train go2_flat with each of `trainers` in this process, one iteration each in turn (so a shared machine's
    load falls on all alike), each until its training episodes meet the walking rule, `iterations` or `budget_s`
    wall seconds of its own; their curves, wall and CPU seconds, and walking figures on fresh episodes.
    `threads`: MuJoCo's threads and torch's (0: all cores for MuJoCo, the task's default for torch).
    `progress`: a JSON file rewritten every 10 rounds with the curves so far. `out`: the s2r side's run directory
    (its final policy, outside the timed iterations). `ppo`: PPOConfig fields that replace s2r's go2_flat
    defaults on the s2r side (rsl_rl's side always runs `LEGGED_GYM_PPO`). `backend`, `device`: the training
    env's simulator (`cpu` or `warp`) and where the networks run (`cpu` or `cuda`); the walking figures on fresh
    episodes are always judged on the `cpu` backend."""
    cfg = default_config("go2_flat", num_envs=num_envs, seed=seed, backend=backend, device=device)
    if ppo:
        cfg = replace(cfg, ppo=replace(cfg.ppo, **ppo))
    torch.set_num_threads(threads or cfg.torch_threads)
    sides = [_make_trainer(name, cfg, seed=seed, threads=threads, out=out) for name in trainers]
    load = [os.getloadavg()[0]]
    running = list(sides)
    rounds = 0
    while running:
        rounds += 1
        for trainer in list(running):
            trainer.step()
            if trainer.rule_at is not None or trainer.iterations >= iterations or trainer.wall_s >= budget_s:
                running.remove(trainer)
        load.append(os.getloadavg()[0])
        if progress is not None and rounds % 10 == 0:
            progress.write_text(json.dumps({t.name: t.curve for t in sides}))
    outcome: dict[str, Any] = {}
    for trainer in sides:
        if trainer.save is not None:
            trainer.save()
        with torch.no_grad():
            walking = evaluate_walking(trainer.act, episodes=episodes)
        outcome[trainer.name] = _finite({
            "wall_s": trainer.wall_s, "cpu_s": trainer.cpu_s, "iterations": trainer.iterations,
            "rule_reached_in_training": trainer.rule_at, "last_training_figures": trainer.curve[-1], **walking,
            "curve": trainer.curve})
    return {
        "task": "go2_flat", "num_envs": cfg.num_envs, "max_iterations": iterations,
        "budget_s": finite_or_none(budget_s), "threads": threads, "seed": seed, "backend": backend, "device": device,
        "samples_per_iteration": cfg.num_envs * cfg.ppo.num_steps_per_env,
        "ppo": {"s2r": asdict(cfg.ppo), "rsl_rl": asdict(LEGGED_GYM_PPO)}, "networks": asdict(cfg.model),
        **outcome,
        "load_average": {"min": min(load), "max": max(load), "mean": sum(load) / len(load)},
        "machine": machine(),
    }


def combine(results: list[dict[str, Any]], plot: Path | None) -> dict[str, Any]:
    """One result of both trainers from the results of runs of one trainer each (run side by side, say one per
    core), with their ratios and the curves' PNG."""
    merged = {k: v for k, v in results[0].items() if k not in TRAINERS}
    for result in results:
        for name in TRAINERS:
            if name in result:
                merged[name] = result[name]
    missing = [name for name in TRAINERS if name not in merged]
    if missing:
        raise ValueError(f"combine: no result of {', '.join(missing)} among the files given")
    s2r, peer = merged["s2r"], merged["rsl_rl"]
    reached = [s2r["rule_reached_in_training"], peer["rule_reached_in_training"]]
    merged["wall_ratio_to_rule"] = reached[1]["wall_s"] / reached[0]["wall_s"] if all(reached) else None
    merged["wall_ratio_per_iteration"] = (peer["wall_s"] / peer["iterations"]) / (s2r["wall_s"] / s2r["iterations"])
    merged["load_average"] = {"min": min(r["load_average"]["min"] for r in results),
                              "max": max(r["load_average"]["max"] for r in results),
                              "mean": sum(r["load_average"]["mean"] for r in results) / len(results)}
    if plot is not None:
        plot.parent.mkdir(exist_ok=True)
        curves = {f"{name} PPO": [{"wall_s": c["wall_s"], **{k: c[k] for k in LOCOMOTION_CURVE if c.get(k) is not None}}
                                  for c in merged[name]["curve"]] for name in TRAINERS}
        plot_locomotion_curves(curves, plot, title=f"go2_flat, {merged['num_envs']} worlds, "
                                                   f"{merged['samples_per_iteration']} samples per iteration")
    return merged


def parse_ppo(items: list[str]) -> dict[str, Any]:
    """`--ppo KEY=VALUE` items as PPOConfig fields of their declared types (bool: true/false)."""
    types = {f.name: type(getattr(PPOConfig(), f.name)) for f in fields(PPOConfig)}
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--ppo {item}: expected KEY=VALUE with KEY a PPOConfig field ({', '.join(types)})")
        kind = types[key]
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise SystemExit(f"--ppo {item}: {key} is a bool: true or false")
            parsed[key] = text.lower() == "true"
        else:
            try:
                parsed[key] = kind(text)
            except ValueError:
                raise SystemExit(f"--ppo {item}: {key} is {kind.__name__}, got {text!r}") from None
    return parsed


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in values.items()}


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for side in TRAINERS:
        if side not in result:
            continue
        r = result[side]
        at = r["rule_reached_in_training"]
        reached = (f"iteration {at['iteration']}, {at['wall_s']:.0f} s wall, {at['cpu_s']:.0f} s CPU" if at
                   else "not reached")
        rows += [(f"{side}: iterations, wall s, CPU s", f"{r['iterations']}, {r['wall_s']:.0f}, {r['cpu_s']:.0f}"),
                 (f"{side}: training episodes within the rule at", reached),
                 (f"{side}: lin / yaw error, falls", f"{r['lin_vel_error']:.2f} m/s / {r['yaw_rate_error']:.2f} rad/s, "
                                                     f"{r['fall_rate']:.0%}"),
                 (f"{side}: walks", str(r["walks"]))]
    if "wall_ratio_per_iteration" in result:
        ratio = result["wall_ratio_to_rule"]
        rows += [("rsl_rl / s2r wall time to the rule (goal ≥ 2)", f"{ratio:.2f}" if ratio else "not both reached"),
                 ("rsl_rl / s2r wall time per iteration", f"{result['wall_ratio_per_iteration']:.2f}")]
    rows.append(("load average (min, mean, max)", "{min:.1f}, {mean:.1f}, {max:.1f}".format(**result["load_average"])))
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", choices=(*TRAINERS, "both"), default="both",
                        help="train one side only (run the other in a second process), or both in turns")
    parser.add_argument("--iterations", type=int, default=100, help="most iterations per trainer")
    parser.add_argument("--budget-s", type=float, default=math.inf, help="most wall seconds per trainer")
    parser.add_argument("--threads", type=int, default=0,
                        help="MuJoCo's and torch's threads (0: all cores for MuJoCo, the task's default for torch)")
    parser.add_argument("--progress", type=Path, help="a JSON file of the curves so far, rewritten as it runs")
    parser.add_argument("--num-envs", type=int)
    parser.add_argument("--out", type=Path, help="a run directory for the s2r side's final policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("cpu", "warp"), default="cpu", help="the training env's simulator")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the networks run")
    parser.add_argument("--ppo", nargs="+", default=[], metavar="KEY=VALUE",
                        help="PPOConfig fields replacing s2r's go2_flat defaults on the s2r side, e.g. symmetry=true")
    parser.add_argument("--name", help="the result's name in bench/results (default: locomotion_train[_TRAINER])")
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--evaluate", metavar="RUN_DIR", help="only judge a trained run by the walking rule")
    parser.add_argument("--randomize", nargs="?", const="default", metavar="FILE.yaml",
                        help="with --evaluate: judge on randomized worlds (the task's terms, or a randomization YAML)")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="RESULT",
                        help="only merge the result JSON files of one-trainer runs into one result and PNG")
    args = parser.parse_args(argv)
    if args.evaluate:
        policy, _, _ = load_policy(Path(args.evaluate), task="go2_flat")
        result = {"run": args.evaluate, "randomize": args.randomize,
                  **evaluate_walking(policy.act_inference, episodes=args.episodes, randomize=args.randomize),
                  "machine": machine()}
        rows = [(k, f"{result[k]:.3f}" if isinstance(result[k], float) else str(result[k]))
                for k in ("lin_vel_error", "yaw_rate_error", "fall_rate", "walks")]
        report("locomotion_walking", f"walking rule on {args.evaluate}", rows, result)
        return result
    if args.combine:
        result = combine([json.loads(path.read_text()) for path in args.combine],
                         Path("bench/results/locomotion_train.png"))
        report("locomotion_train", "go2_flat: s2r PPO vs rsl_rl PPO, same env and samples", _rows(result), result)
        return result
    trainers = TRAINERS if args.trainer == "both" else (args.trainer,)
    result = run(trainers=trainers, iterations=args.iterations, budget_s=args.budget_s, num_envs=args.num_envs,
                 seed=args.seed, episodes=args.episodes, threads=args.threads, progress=args.progress, out=args.out,
                 ppo=parse_ppo(args.ppo), backend=args.backend, device=args.device)
    if args.trainer == "both":
        result = combine([result], Path("bench/results/locomotion_train.png"))
    name = args.name or ("locomotion_train" if args.trainer == "both" else f"locomotion_train_{args.trainer}")
    report(name, f"go2_flat: {' and '.join(trainers)} PPO", _rows(result), result)
    return result


if __name__ == "__main__":
    main()
