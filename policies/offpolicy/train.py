"""Train a task with TD3 or SAC into a run directory, judging the task's success rule as it goes.

The run directory has the layout of PPO's (`s2r.policies.train`):

    DIR/checkpoint.pt        agent, optimizers, target networks, env steps, task, config, contract, the replay
                             buffer, and the best actor judged (`extra["best_actor"]`)
    DIR/policy.onnx          the best actor judged (the highest rule success rate; the first of equals), exported
    DIR/config.yaml          the resolved OffPolicyTrainConfig
    DIR/metrics.json         mean_return, success_rate, env_steps, wall_s, env_steps_per_s, updates,
                             train_wall_s, train_cpu_s (the process's CPU time, evaluations not counted),
                             wall_s_to_rule, cpu_s_to_rule (None if not met), best_rule_success_rate,
                             best_env_steps, best_wall_s
    DIR/training_curve.png   the rule's success rate against wall time
    DIR/curve.json           the curve's points
    DIR/events.*             TensorBoard scalars

Every `evaluate_every_s` seconds of training (the clock paused) the deterministic actor flies
`eval_episodes` fresh episodes (one per world, `policies.rule.rule_task`: quadrotor_hover without the episodes that
start at the target); training stops once the success rate reaches `stop_at_success`.

    metrics = train_offpolicy(OffPolicyTrainConfig(task="quadrotor_hover", algo="td3"), Path("runs/hover"))
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml

from s2r.policies.export import export_onnx
from s2r.policies.offpolicy.networks import OffPolicyAgent
from s2r.policies.offpolicy.runner import OffPolicyRunner
from s2r.policies.offpolicy.sac import SACConfig
from s2r.policies.offpolicy.td3 import TD3Config
from s2r.policies.rule import rule_success_rate
from s2r.policies.train import CHECKPOINT, plain_data, s2r_version
from s2r.sim.env import make_env

Algo = Literal["td3", "sac"]
ALGOS: tuple[Algo, ...] = ("td3", "sac")
OFFPOLICY_TASKS = ("pendulum", "quadrotor_hover")
POLICY = "policy.onnx"
"""Tasks whose off-policy training is tuned and checked here (continuous actions, a dense reward)."""


HOVER_TD3 = TD3Config(learning_starts=10_000, buffer_size=300_000, updates_per_step=4)
"""TD3 for the hover (64-unit ReLU networks, running observation normalization, 10k uniform warm-up transitions,
batch 256, γ 0.99, target noise 0.2 clipped at 0.5, one actor step per two critic steps, 4 steps per step of the 32
worlds: one critic step per 8 transitions, Learning to Fly's one per 10), with the replay's rewards priced at the
curriculum's current weights as L2F does. L2F's other choices (tanh networks, Adam weight decay 1e-4, the critic
from 15k and the actor from 30k transitions collected by the untrained actor, raw observations:
`TD3Config(activation="tanh", weight_decay=1e-4, learning_starts=15_000, actor_learning_starts=30_000,
uniform_warmup=False, normalize_observations=False)`) learned slower here: docs/quadrotor.md."""


@dataclass(frozen=True)
class OffPolicyTrainConfig:
    """One off-policy training run."""

    task: str
    """A task of OFFPOLICY_TASKS."""
    algo: Algo = "td3"
    """td3 or sac."""
    num_envs: int = 32
    """Parallel worlds collecting transitions."""
    env_steps: int = 5_000_000
    """Transitions to collect at most (steps × num_envs); Learning to Fly's 18 s figure is about 300k."""
    seed: int = 0
    torch_threads: int = 1
    """Intra-op threads for the networks."""
    evaluate_every_s: float = 20.0
    """Seconds of training between evaluations of the success rule."""
    eval_episodes: int = 256
    stop_at_success: float | None = 0.95
    """Stop once the rule's success rate reaches this; None: train all `env_steps`."""
    max_train_s: float | None = 900.0
    """Stop after this many seconds of training (evaluations not counted); None: no limit."""
    clock: Literal["wall", "cpu"] = "wall"
    """What `evaluate_every_s` and `max_train_s` count: wall seconds, or the process's CPU seconds (a budget that
    other jobs on a shared machine do not eat)."""
    td3: TD3Config = field(default_factory=lambda: HOVER_TD3)
    """TD3's hyperparameters (`HOVER_TD3`)."""
    sac: SACConfig = field(default_factory=SACConfig)
    save_replay: bool = True
    """Write the replay buffer into the checkpoint (about 2.4 kB per quadrotor transition), so a resumed run
    trains on what it had collected."""

    def __post_init__(self) -> None:
        if self.task not in OFFPOLICY_TASKS:
            raise ValueError(f"task {self.task!r}: off-policy training (--algo td3|sac) takes "
                             f"{', '.join(OFFPOLICY_TASKS)}")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"OffPolicyTrainConfig.clock: {self.clock!r} (expected 'wall' or 'cpu')")
        if self.algo not in ALGOS:
            raise ValueError(f"algo {self.algo!r}: expected one of {', '.join(ALGOS)}")
        for name in ("num_envs", "env_steps", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"OffPolicyTrainConfig.{name}: {getattr(self, name)} (expected >= 1)")

    @property
    def algo_config(self) -> TD3Config | SACConfig:
        return self.td3 if self.algo == "td3" else self.sac


def success_rate(runner: OffPolicyRunner, task: str, *, episodes: int, seed: int) -> float:
    """The rule's success rate of the runner's deterministic actor."""
    agent = runner.agent
    was_training = agent.training
    agent.eval()
    rate = rule_success_rate(agent.act_inference, task, episodes=episodes, seed=seed)
    agent.train(was_training)
    return rate


def train_offpolicy(cfg: OffPolicyTrainConfig, out: Path, *, progress: bool = True) -> dict:
    """Train `cfg` into run directory `out`; returns the metrics written to metrics.json."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads)
    env = make_env(cfg.task, cfg.num_envs, seed=cfg.seed)
    runner = OffPolicyRunner(env, algo=cfg.algo_config, log_dir=out, seed=cfg.seed, progress=progress)
    (out / "config.yaml").write_text(yaml.safe_dump(plain_data(asdict(cfg)), sort_keys=False))
    curve: list[dict[str, float]] = []
    clock = {"train_s": 0.0, "since": time.perf_counter(), "next": cfg.evaluate_every_s, "cpu_s": 0.0,
             "cpu_since": time.process_time()}
    best: dict = {"success_rate": -1.0}

    def evaluate_now(summary: dict[str, float]) -> bool:
        now = time.perf_counter()
        clock["train_s"] += now - clock["since"]
        clock["cpu_s"] += time.process_time() - clock["cpu_since"]
        clock["since"], clock["cpu_since"] = now, time.process_time()
        spent = clock["train_s"] if cfg.clock == "wall" else clock["cpu_s"]
        out_of_time = cfg.max_train_s is not None and spent >= cfg.max_train_s
        if spent < clock["next"] and summary["env_steps"] < cfg.env_steps and not out_of_time:
            return False
        clock["next"] = spent + cfg.evaluate_every_s
        rate = success_rate(runner, cfg.task, episodes=cfg.eval_episodes, seed=cfg.seed + 1)
        curve.append({"wall_s": clock["train_s"], "cpu_s": clock["cpu_s"], "env_steps": runner.env_steps * cfg.num_envs,
                      "success_rate": rate,
                      "mean_return": summary["mean_return"]})
        if runner.writer is not None:
            runner.writer.add_scalar("charts/rule_success_rate", rate, runner.env_steps * cfg.num_envs)
        if rate > best["success_rate"]:
            best.update(curve[-1], actor=_actor_state(runner.agent))
        clock["since"], clock["cpu_since"] = time.perf_counter(), time.process_time()   # evaluations are not training
        return out_of_time or (cfg.stop_at_success is not None and rate >= cfg.stop_at_success)

    summary = runner.learn(math.ceil(cfg.env_steps / cfg.num_envs), callback=evaluate_now)
    if not curve or curve[-1]["env_steps"] != runner.env_steps * cfg.num_envs:
        clock["next"] = 0.0
        evaluate_now(summary)
    met = [c for c in curve if cfg.stop_at_success is not None and c["success_rate"] >= cfg.stop_at_success]
    metrics = {**{k: summary[k] for k in ("mean_return", "success_rate", "env_steps", "env_steps_per_s", "updates")},
               "train_wall_s": clock["train_s"], "train_cpu_s": clock["cpu_s"], "final_rule_success_rate": curve[-1]["success_rate"],
               "wall_s_to_rule": met[0]["wall_s"] if met else None, "cpu_s_to_rule": met[0]["cpu_s"] if met else None,
               "env_steps_to_rule": met[0]["env_steps"] if met else None,
               "best_rule_success_rate": best["success_rate"], "best_env_steps": best["env_steps"],
               "best_wall_s": best["wall_s"]}
    contract = env.contract(provenance={"task": cfg.task, "seed": cfg.seed, "env_steps": best["env_steps"],
                                        "num_envs": cfg.num_envs, "trainer": f"s2r.{cfg.algo}",
                                        "s2r_version": s2r_version()})
    runner.save(out / CHECKPOINT, extra={"task": cfg.task, "config": plain_data(asdict(cfg)),
                                         "contract": contract.to_dict(), "best_actor": best["actor"]},
                replay=cfg.save_replay)
    best_agent = copy.deepcopy(runner.agent).eval()
    best_agent.load_state_dict(best["actor"], strict=False)
    export_onnx(best_agent, contract, out / POLICY)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "curve.json").write_text(json.dumps(curve))
    plot_rule_curves({f"s2r {cfg.algo.upper()}": curve}, out / "training_curve.png",
                     title=f"{cfg.task}: {cfg.algo.upper()}, {cfg.num_envs} worlds", rule=cfg.stop_at_success)
    runner.close()
    env.close()
    return metrics


def _actor_state(agent: OffPolicyAgent) -> dict[str, torch.Tensor]:
    """A copy of what the exported policy is made of: the actor's normalizer and the actor."""
    return {name: value.detach().clone() for name, value in agent.state_dict().items()
            if name.startswith(("actor_normalizer.", "actor."))}


def plot_rule_curves(curves: dict[str, list[dict[str, float]]], path: Path, *, title: str,
                     rule: float | None) -> None:
    """The success rule's rate against wall time (s), one line per trainer, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, curve in curves.items():
        ax.plot([c["wall_s"] for c in curve], [c["success_rate"] for c in curve], marker=".", label=name)
    if rule is not None:
        ax.axhline(rule, color="gray", linestyle="--", linewidth=0.8)
    ax.set(xlabel="training wall time (s)", ylabel="success rate (rule)", ylim=(-0.02, 1.02))
    ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
