"""Walking on go2_flat: s2r's PPO against rsl_rl's PPO on the same env, and the walking rule.

Both trainers drive `make_env("go2_flat", num_envs)` from the same seed with the task's
training defaults (`s2r.policies.train.default_config("go2_flat")`: networks, 24 steps per env,
PPO hyperparameters handed to rsl_rl field by field as `bench.train` does), one iteration at a
time, each for the same number of iterations (so the same samples). The curves are the
training episodes' tracking errors and fall rate against wall time (one PNG, both trainers);
each final policy is then judged by the walking rule on fresh episodes (`evaluate_walking`).

The walking rule (docs/locomotion.md): over one 20 s episode per world of random commands
within the trained ranges (±1 m/s in x and y, ±1 rad/s yaw, resampled every 10 s), with the
policy's mean action and the training observation noise, the mean linear-velocity tracking
error is under 0.2 m/s, the yaw-rate error under 0.3 rad/s, and under 5 % of episodes end in
a fall.

    PYTHONPATH=. python -m bench.locomotion_train --iterations 100
    PYTHONPATH=. python -m bench.locomotion_train --evaluate runs/go2_flat   # the rule on a trained run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rsl_rl.runners import OnPolicyRunner as RslRlRunner
from tensordict import TensorDict

from bench.report import finite_or_none, machine, report
from bench.train import RslRlEnv, rsl_rl_config
from s2r.policies.runner import EPISODE_WINDOW, OnPolicyRunner
from s2r.policies.train import LOCOMOTION_CURVE, default_config, load_policy, plot_locomotion_curves
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


def run(*, iterations: int = 100, num_envs: int | None = None, seed: int = 0, episodes: int = 128,
        plot: Path | None = Path("bench/results/locomotion_train.png")) -> dict[str, Any]:
    """Train go2_flat with both trainers for `iterations` each; their curves, wall times and walking figures."""
    cfg = default_config("go2_flat", num_envs=num_envs, seed=seed)
    torch.set_num_threads(cfg.torch_threads)
    curves: dict[str, list[dict[str, float]]] = {}
    outcome: dict[str, Any] = {}

    runner = OnPolicyRunner(make_env("go2_flat", cfg.num_envs, seed=seed), ppo=cfg.ppo, model=cfg.model,
                            log_dir=None, seed=seed, progress=False)
    curve, wall = [], 0.0
    for _ in range(iterations):
        start = time.perf_counter()
        summary = runner.learn(1)
        wall += time.perf_counter() - start
        curve.append({"wall_s": wall, **{k: summary[k] for k in LOCOMOTION_CURVE if k in summary}})
    policy = runner.policy.eval()
    curves["s2r PPO"], outcome["s2r"] = curve, {"wall_s": wall, **evaluate_walking(policy.act_inference,
                                                                                 episodes=episodes)}

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    adapter = _CurveEnv(make_env("go2_flat", cfg.num_envs, seed=seed), seed=seed)
    with contextlib.redirect_stdout(io.StringIO()):  # rsl_rl prints its models and observation sets
        peer = RslRlRunner(adapter, rsl_rl_config(cfg.ppo, cfg.model), log_dir=None, device="cpu")
    curve, wall = [], 0.0
    for _ in range(iterations):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            peer.learn(1)
        wall += time.perf_counter() - start
        curve.append({"wall_s": wall, **{k: sum(v) / len(v) for k, v in adapter.figures.items() if v}})
    act = peer.get_inference_policy()            # rsl_rl 5: the actor on the observation groups, its mean action
    curves["rsl_rl PPO"], outcome["rsl_rl"] = curve, {"wall_s": wall, **evaluate_walking(
        lambda obs: act(TensorDict({"policy": obs}, batch_size=[len(obs)])), episodes=episodes)}

    if plot is not None:
        plot.parent.mkdir(exist_ok=True)
        plot_locomotion_curves(curves, plot, title=f"go2_flat, {cfg.num_envs} worlds, {iterations} iterations each")
    return {
        "task": "go2_flat", "num_envs": cfg.num_envs, "iterations": iterations, "seed": seed,
        "samples_per_iteration": cfg.num_envs * cfg.ppo.num_steps_per_env,
        "s2r": {k: finite_or_none(v) if isinstance(v, float) else v for k, v in outcome["s2r"].items()},
        "rsl_rl": {k: finite_or_none(v) if isinstance(v, float) else v for k, v in outcome["rsl_rl"].items()},
        "wall_ratio": outcome["rsl_rl"]["wall_s"] / outcome["s2r"]["wall_s"],
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--num-envs", type=int)
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--evaluate", metavar="RUN_DIR", help="only judge a trained run by the walking rule")
    args = parser.parse_args(argv)
    if args.evaluate:
        policy, _, _ = load_policy(Path(args.evaluate), task="go2_flat")
        result = {"run": args.evaluate, **evaluate_walking(policy.act_inference, episodes=args.episodes),
                  "machine": machine()}
        rows = [(k, f"{result[k]:.3f}" if isinstance(result[k], float) else str(result[k]))
                for k in ("lin_vel_error", "yaw_rate_error", "fall_rate", "walks")]
        report("locomotion_walking", f"walking rule on {args.evaluate}", rows, result)
        return result
    result = run(iterations=args.iterations, num_envs=args.num_envs, episodes=args.episodes)
    rows = []
    for side in ("s2r", "rsl_rl"):
        r = result[side]
        rows += [(f"{side}: wall s", f"{r['wall_s']:.0f}"),
                 (f"{side}: lin / yaw error, falls", f"{r['lin_vel_error']:.2f} m/s / {r['yaw_rate_error']:.2f} rad/s, "
                                                     f"{r['fall_rate']:.0%}"),
                 (f"{side}: walks", str(r["walks"]))]
    rows.append(("rsl_rl wall / s2r wall", f"{result['wall_ratio']:.2f}"))
    report("locomotion_train", "go2_flat: s2r PPO vs rsl_rl PPO, same env and samples", rows, result)
    return result


if __name__ == "__main__":
    main()
