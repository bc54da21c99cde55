"""Train a task end to end: env + PPO → checkpoint, resolved config, metrics and a training curve.

A run directory holds everything needed to resume, export and evaluate:

    DIR/checkpoint.pt        model, optimizer, iteration, task, configs, contract
    DIR/config.yaml          the resolved TrainConfig
    DIR/metrics.json         mean_return, success_rate, env_steps, wall_s, env_steps_per_s
    DIR/training_curve.png   return and success rate per iteration (locomotion: tracking errors and falls
                             against wall time)
    DIR/curve.json           the curve's points
    DIR/events.*             TensorBoard scalars (and the clips, videos/policy)
    DIR/videos/iteration_N.mp4   with `video_every`: a clip of the policy every N iterations

    metrics = train(TrainConfig(task="cartpole"), Path("runs/cartpole"))

Under torchrun (or `s2r train --nproc N`) every rank runs `train` on its own worlds
(`num_envs` each, seed `seed + rank`) and rank 0 writes the run directory
(`policies.distributed`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from s2r.contract import PolicyContract
from s2r.policies.distributed import Distributed
from s2r.policies.ppo import ActorCritic, ActorCriticConfig, PPOConfig
from s2r.policies.rule import rule_success_rate
from s2r.policies.runner import OnPolicyRunner
from s2r.sim.env import Backend, make_env

CHECKPOINT = "checkpoint.pt"
LOCOMOTION_CURVE = ("episode/lin_vel_error", "episode/yaw_rate_error", "episode/fell")
"""Per-episode figures of the locomotion tasks kept in the training curve (m/s, rad/s, fraction)."""


class CheckpointError(ValueError):
    """A run directory or checkpoint that cannot be used for what was asked."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run."""

    task: str
    """Task name: pendulum, cartpole, reach, push_t, go2_flat, go2_rough or quadrotor_hover."""
    backend: Backend = "cpu"
    """Simulation backend: `cpu` (MuJoCo's C engine) or `warp` (MuJoCo Warp on a GPU)."""
    num_envs: int = 512
    """Parallel worlds (per rank in a distributed run)."""
    device: str = "cpu"
    """Where the networks, the rollout and the env's output tensors live: "cpu" or "cuda" (this rank's GPU)."""
    iterations: int = 300
    """PPO iterations (rollout + update)."""
    seed: int = 0
    """Seeds the env, torch and numpy: equal seeds give equal runs."""
    robot: str | None = None
    """Another spec YAML for the task's robot (e.g. a calibrated one from `s2r sysid`); None: the shipped spec."""
    randomize: str | None = None
    """Domain randomization: None (off), "default" (the task's terms) or a randomization YAML path."""
    torch_threads: int = 1
    """Intra-op threads for the networks; small MLPs lose badly to a busy core with more."""
    video_every: int = 0
    """A clip of the policy (4 fresh worlds, 5 s) every this many iterations, in videos/ and TensorBoard; 0: none."""
    evaluate_every: int = 0
    """Judge the task's success rule (`policies.rule.rule_success_rate`: the deterministic actor on
    `eval_episodes` fresh episodes) every this many iterations, and keep the best judged policy: the checkpoint's
    `extra["best_model"]`, what `load_policy` (s2r export, s2r eval) returns; 0: never (the last policy)."""
    eval_episodes: int = 128
    """Fresh episodes per judgement of the rule (`evaluate_every`)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    model: ActorCriticConfig = field(default_factory=ActorCriticConfig)


_STABLE_PPO = PPOConfig(max_learning_rate=1e-3)

TASK_DEFAULTS: dict[str, TrainConfig] = {
    "pendulum": TrainConfig(task="pendulum", num_envs=256, iterations=120, ppo=_STABLE_PPO),
    "cartpole": TrainConfig(task="cartpole", num_envs=512, iterations=300, ppo=_STABLE_PPO),
    "reach": TrainConfig(task="reach", num_envs=512, iterations=200, ppo=_STABLE_PPO),
    # legged_gym's PPO (lr 1e-3, adaptive KL 0.01, 5 epochs × 4 minibatches, 24 steps per env) on fewer
    # worlds and smaller networks than its 4096 × (512, 256, 128): this is a 2-core CPU budget.
    "go2_flat": TrainConfig(task="go2_flat", num_envs=512, iterations=500,
                            ppo=PPOConfig(learning_rate=1e-3, desired_kl=0.01, entropy_coef=0.01),
                            model=ActorCriticConfig(actor_hidden=(256, 128), critic_hidden=(256, 128))),
    # the same on rough terrain, which takes legged_gym about three times go2_flat's iterations
    "go2_rough": TrainConfig(task="go2_rough", num_envs=512, iterations=1500,
                             ppo=PPOConfig(learning_rate=1e-3, desired_kl=0.01, entropy_coef=0.01),
                             model=ActorCriticConfig(actor_hidden=(256, 128), critic_hidden=(256, 128))),
    # PPO beside Learning to Fly's TD3 (bench/l2f.py): its 64-unit networks, 256 worlds, noise 0.5 of the ±1 range;
    # the hover rule judged every 25 iterations (about 150k transitions), the best judged policy kept
    # no entropy bonus: with 0.005 the best judged was 89 %, with 0 it met 95 % at iteration 240 (docs/quadrotor.md)
    "quadrotor_hover": TrainConfig(task="quadrotor_hover", num_envs=256, iterations=500,
                                   ppo=replace(_STABLE_PPO, entropy_coef=0.0),
                                   model=ActorCriticConfig(actor_hidden=(64, 64), critic_hidden=(64, 64),
                                                           init_noise_std=0.5), evaluate_every=25),
}


def default_config(task: str, **overrides: Any) -> TrainConfig:
    """The task's tuned defaults with `overrides` (None values ignored)."""
    if task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASK_DEFAULTS)}")
    return replace(TASK_DEFAULTS[task], **{k: v for k, v in overrides.items() if v is not None})


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    ppo = PPOConfig(**data.get("ppo", {}))
    model = ActorCriticConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.get("model", {}).items()})
    return TrainConfig(**{**{k: v for k, v in data.items() if k not in ("ppo", "model")}, "ppo": ppo, "model": model})


def train(cfg: TrainConfig, out: Path, *, resume: bool = False, progress: bool = True) -> dict[str, float]:
    """Train `cfg` into run directory `out`; with `resume`, continue from `out/checkpoint.pt`."""
    distributed = Distributed.from_environment()
    main = distributed.is_main
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads)
    seed = cfg.seed + distributed.rank
    device = _device(cfg, distributed)
    env = make_env(cfg.task, cfg.num_envs, seed=seed, backend=cfg.backend, randomize=cfg.randomize, robot=cfg.robot,
                   device=device)
    runner = OnPolicyRunner(env, ppo=cfg.ppo, model=cfg.model, log_dir=out, seed=seed, progress=progress,
                            distributed=distributed, device=device)
    if env.randomizer is not None and runner.writer is not None:
        for name, values in env.randomizer.histograms().items():
            runner.writer.add_histogram(name, values, runner.current_iteration)
    if resume:
        path = _checkpoint_path(out)
        task = torch.load(path, weights_only=True, map_location="cpu")["extra"]["task"]
        if task != cfg.task:
            raise CheckpointError(f"{path}: task: checkpoint is for {task!r}, asked to train {cfg.task!r}")
        runner.load(path)
    if main:
        (out / "config.yaml").write_text(yaml.safe_dump(plain_data(asdict(cfg)), sort_keys=False))
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    best: dict[str, Any] = {"rule_success_rate": -1.0}
    """The best judged policy (`evaluate_every`): its rule success rate, iteration and state dict."""

    def judge() -> float:
        runner.policy.eval()
        rate = rule_success_rate(runner.policy.act_inference, cfg.task, episodes=cfg.eval_episodes, seed=cfg.seed + 1)
        runner.policy.train()
        if rate > best["rule_success_rate"]:
            best.update(rule_success_rate=rate, iteration=runner.current_iteration,
                        model={k: v.detach().clone() for k, v in runner.policy.state_dict().items()})
        if runner.writer is not None:
            runner.writer.add_scalar("charts/rule_success_rate", rate, runner.current_iteration)
        return rate

    def record(summary: dict[str, float]) -> bool:
        judged = {}
        if main and cfg.evaluate_every and summary["iteration"] % cfg.evaluate_every == 0:
            judged = {"rule_success_rate": judge()}
        curve.append({"iteration": summary["iteration"], "mean_return": summary["mean_return"],
                      "success_rate": summary["success_rate"], "wall_s": time.perf_counter() - start, **judged,
                      **{k: v for k, v in summary.items() if k in LOCOMOTION_CURVE}})
        if main and cfg.video_every and summary["iteration"] % cfg.video_every == 0:
            film_training(runner, cfg.task, out / "videos" / f"iteration_{summary['iteration']:05d}.mp4",
                          summary["iteration"])
        return False

    summary = runner.learn(cfg.iterations, callback=record)
    contract = env.contract(provenance={
        "task": cfg.task, "seed": cfg.seed, "iterations": runner.current_iteration, "num_envs": cfg.num_envs,
        "backend": cfg.backend, "randomize": cfg.randomize, "trainer": "s2r.ppo", "s2r_version": s2r_version(),
        "ranks": distributed.world_size,
    })
    metrics = {k: summary[k] for k in ("mean_return", "success_rate", "env_steps", "wall_s", "env_steps_per_s")}
    metrics.update({k: summary[k] for k in LOCOMOTION_CURVE if k in summary})
    for key in ("mean_return", "success_rate"):  # over every rank's last episodes
        metrics[key] = distributed.mean(metrics[key])
    metrics["env_steps"] *= distributed.world_size
    metrics["env_steps_per_s"] *= distributed.world_size
    metrics["iterations"] = runner.current_iteration
    metrics["ranks"] = distributed.world_size
    kept = {}
    if main and cfg.evaluate_every:
        if curve[-1]["iteration"] % cfg.evaluate_every:      # the last policy judged too
            curve[-1]["rule_success_rate"] = judge()
        metrics.update(final_rule_success_rate=curve[-1]["rule_success_rate"],
                       best_rule_success_rate=best["rule_success_rate"], best_iteration=best["iteration"])
        kept = {"best_model": best["model"], "best_rule_success_rate": best["rule_success_rate"],
                "best_iteration": best["iteration"]}
    if main:
        runner.save(out / CHECKPOINT, extra={"task": cfg.task, "config": plain_data(asdict(cfg)),
                                             "contract": contract.to_dict(), **kept})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        worlds = f"{distributed.world_size} × {cfg.num_envs}" if distributed.enabled else str(cfg.num_envs)
        plot_training_curve(curve, out / "training_curve.png", title=f"{cfg.task}: PPO, {worlds} worlds")
        (out / "curve.json").write_text(json.dumps(curve))
    runner.close()
    env.close()
    distributed.close()
    return metrics


def film_training(runner: OnPolicyRunner, task: str, path: Path, iteration: int) -> None:
    """A clip of the policy being trained (its mean actions) into `path` and TensorBoard (videos/policy, a GIF)."""
    from s2r.dataset.video import decode
    from s2r.sim.render import film_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        video = film_clip(task, lambda obs: runner.policy.act_inference(obs["policy"]), path)
    if runner.writer is not None:
        add_video(runner.writer, "videos/policy", decode(path, *video.size)[:, ::2, ::2], iteration, fps=video.fps)


def add_video(writer: Any, tag: str, frames: Any, step: int, *, fps: float) -> None:
    """Frames (n, H, W, 3) uint8 as an animated GIF in TensorBoard's images (what SummaryWriter.add_video writes,
    without moviepy)."""
    import io

    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                          encoded_image_string=buffer.getvalue())
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def load_policy(run_dir: Path, *, task: str | None = None) -> tuple[ActorCritic, PolicyContract, TrainConfig]:
    """The trained policy (the best judged one where the run judged its rule, `evaluate_every`), its contract and
    config from a run directory; refuses another task's checkpoint."""
    checkpoint = torch.load(_checkpoint_path(run_dir), weights_only=True, map_location="cpu")
    extra = checkpoint["extra"]
    if task is not None and extra["task"] != task:
        raise CheckpointError(f"{run_dir / CHECKPOINT}: task: checkpoint is for {extra['task']!r}, not {task!r}")
    cfg = config_from_dict(extra["config"])
    contract = PolicyContract.from_dict(extra["contract"])
    sizes = checkpoint["model"]
    policy = ActorCritic(cfg.model, num_policy_obs=sizes["actor_normalizer.mean"].shape[0],
                         num_critic_obs=sizes["critic_normalizer.mean"].shape[0], num_actions=contract.action.num_actions)
    policy.load_state_dict(extra.get("best_model", checkpoint["model"]))
    return policy.eval(), contract, cfg


def _device(cfg: TrainConfig, distributed: Distributed) -> torch.device:
    if cfg.device == "cpu":
        return torch.device("cpu")
    if cfg.device != "cuda":
        raise ValueError(f"TrainConfig.device: {cfg.device!r}; expected 'cpu' or 'cuda'")
    if not torch.cuda.is_available():
        raise ValueError("TrainConfig.device: 'cuda' but torch sees no CUDA device; use --device cpu")
    return torch.device("cuda", distributed.local_rank)


def _checkpoint_path(run_dir: Path) -> Path:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no {CHECKPOINT} (train one with `s2r train TASK --out {run_dir}`)")
    return path


def plot_training_curve(curve: list[dict[str, float]], path: Path, *, title: str) -> None:
    """Mean episode return and success rate against iterations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [c["iteration"] for c in curve]
    if curve and "episode/lin_vel_error" in curve[-1]:
        plot_locomotion_curves({"s2r PPO": curve}, path, title=title)
        return
    fig, (ax_ret, ax_succ) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_ret.plot(its, [c["mean_return"] for c in curve])
    ax_ret.set(xlabel="iteration", ylabel="mean episode return")
    ax_succ.plot(its, [0.0 if math.isnan(c["success_rate"]) else c["success_rate"] for c in curve], color="tab:green")
    ax_succ.set(xlabel="iteration", ylabel="success rate", ylim=(-0.02, 1.02))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_locomotion_curves(curves: dict[str, list[dict[str, float]]], path: Path, *, title: str) -> None:
    """Tracking errors (m/s, rad/s) and fall rate against wall time, one line per trainer, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    panels = (("episode/lin_vel_error", "lin. velocity error (m/s)", 0.2),
              ("episode/yaw_rate_error", "yaw-rate error (rad/s)", 0.3), ("episode/fell", "fall rate", 0.05))
    for ax, (key, label, rule) in zip(axes, panels):
        for name, curve in curves.items():
            points = [(c["wall_s"] / 60, c[key]) for c in curve if key in c and not math.isnan(c[key])]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
        ax.axhline(rule, color="gray", linestyle="--", linewidth=0.8)
        ax.set(xlabel="wall time (min)", ylabel=label, ylim=(0, None))
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plain_data(value: Any) -> Any:
    """Tuples to lists, recursively, for YAML and weights_only checkpoints."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def s2r_version() -> str:
    from s2r import __version__

    return __version__
