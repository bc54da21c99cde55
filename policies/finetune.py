"""Fine-tune a behaviour-cloned diffusion policy with reinforcement learning in simulation: DPPO or DSRL.

Both start from a diffusion run directory (`s2r train TASK --policy diffusion`), learn on the
task's success (or reward) in the batched env one action chunk at a time (`policies.diffusion.chunk_env`),
and stop at a budget of control ticks (of all worlds) or of process CPU seconds, whichever
comes first. `dppo` fine-tunes the denoiser itself (`policies.diffusion.dppo`); `dsrl` trains a
SAC noise policy in front of the frozen denoiser (`policies.diffusion.dsrl`). A run directory:

    OUT/finetune.pt         training state: DPPO's networks and optimizers, or the SAC agent (resume)
    OUT/policy.onnx         the exported policy: kind diffusion (DPPO), or the DSRL composite
    OUT/diffusion.pt        DPPO only: the fine-tuned model in BC's checkpoint format (s2r export, s2r eval OUT)
    OUT/bc.onnx             the BC policy, whose runtime builds the observations (and, for DSRL, samples)
    OUT/config.yaml         the resolved FinetuneConfig and the source run
    OUT/metrics.json        control ticks, iterations, wall and CPU seconds, training success, the evaluation
    OUT/events.*            TensorBoard: charts/success_rate, charts/episodic_return, losses/approx_kl,
                            losses/clip_fraction (DPPO), SAC's losses (DSRL)

    metrics = finetune(FinetuneConfig(method="dppo", task="push_t"), Path("runs/dp"), Path("runs/dp_dppo"))
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from s2r.policies.diffusion.chunk_env import CRITIC_OBS, POLICY_OBS, REWARDS, ChunkEnv, Reward
from s2r.policies.diffusion.dppo import DiffusionPPO, DPPOConfig
from s2r.policies.diffusion.dsrl import DSRLConfig, NoiseEnv, check_noise_policy, export_dsrl
from s2r.policies.diffusion.export import export_diffusion, export_diffusion_model
from s2r.policies.diffusion.model import FinetunedDiffusionModel
from s2r.policies.diffusion.train import FINETUNED_BASE, FINETUNED_TIMESTEP, load_diffusion
from s2r.policies.runner import EPISODE_WINDOW, TrainingDivergedError, seed_everything
from s2r.policies.train import plain_data, s2r_version
from s2r.runtime.diffusion import CHECKPOINT as DIFFUSION_CHECKPOINT
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.sim.env import make_env

Method = Literal["dppo", "dsrl"]
METHODS: tuple[Method, ...] = ("dppo", "dsrl")
STATE = "finetune.pt"
POLICY = "policy.onnx"
BC_POLICY = "bc.onnx"


class FinetuneError(ValueError):
    """A source run or a run directory that cannot be fine-tuned as asked."""


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run."""

    method: Method
    """dppo (PPO on the denoising chain) or dsrl (SAC in the noise space of the frozen denoiser)."""
    task: str
    """The task the source policy was trained for (checked)."""
    num_envs: int = 50
    """Parallel worlds."""
    control_ticks: int = 600_000
    """Budget: control ticks of all worlds (env steps × num_envs); the same for both methods."""
    max_cpu_s: float | None = 1800.0
    """Budget: seconds of process CPU time (`time.process_time()` plus children); None: no limit."""
    reward: Reward = "success"
    """What the fine-tuning maximizes (`ChunkEnv`): "success", the fraction of ticks the task's success
    condition holds (the papers' sparse success reward), or "task", the task's own shaped reward."""
    seed: int = 0
    torch_threads: int = 1
    checkpoint_every_s: float = 120.0
    """Wall seconds between checkpoints (finetune.pt), and one at the end."""
    eval_episodes: int = 100
    """Episodes of the final evaluation of the exported policy (one per world, seed eval_seed, chunks not
    cross-faded as the push_t figures are measured); 0: none."""
    eval_seed: int = 1
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    dsrl: DSRLConfig = field(default_factory=DSRLConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"FinetuneConfig.method: {self.method!r} (expected one of {', '.join(METHODS)})")
        if self.reward not in REWARDS:
            raise ValueError(f"FinetuneConfig.reward: {self.reward!r} (expected one of {', '.join(REWARDS)})")
        for name in ("num_envs", "control_ticks", "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig.{name}: {getattr(self, name)} (expected >= 1)")


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


def check_source(source: Path, task: str) -> None:
    """FinetuneError, one line, unless `source` is a diffusion run directory of `task`."""
    source = Path(source)
    checkpoint = source / DIFFUSION_CHECKPOINT
    if not checkpoint.is_file():
        found = [p.name for p in sorted(source.glob("*.pt"))] if source.is_dir() else []
        what = f"holds {', '.join(found)}" if found else ("is empty of checkpoints" if source.is_dir()
                                                          else "does not exist")
        raise FinetuneError(f"{source}: not a diffusion policy run (no {DIFFUSION_CHECKPOINT}; it {what}); "
                            f"fine-tuning starts from `s2r train {task} --policy diffusion`'s run directory")
    trained = torch.load(checkpoint, weights_only=True)["config"]["task"]
    if trained != task:
        raise FinetuneError(f"{checkpoint}: task: the policy was trained for {trained!r}, asked to fine-tune {task!r}")


def finetune(cfg: FinetuneConfig, source: Path, out: Path, *, resume: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Fine-tune the diffusion policy of run `source` into run directory `out`; the metrics (metrics.json)."""
    source, out = Path(source), Path(out)
    check_source(source, cfg.task)
    state = _resume_state(out, cfg) if resume else None
    torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    model, dcfg, contract, action_norm = load_diffusion(source)
    if cfg.method == "dppo" and isinstance(model, FinetunedDiffusionModel):
        raise FinetuneError(f"{source}: a DPPO fine-tuning already; DPPO starts from a BC run (continue this one "
                            f"with --from {contract.provenance.get('finetuned_from')} --out {source} --resume)")
    out.mkdir(parents=True, exist_ok=True)
    bc = export_diffusion(source, out / BC_POLICY)
    env = make_env(cfg.task, cfg.num_envs, seed=cfg.seed)
    chunk_env = ChunkEnv(env, DiffusionRuntime(bc, spec=env.spec, num_envs=cfg.num_envs, seed=cfg.seed),
                         reward=cfg.reward)
    (out / "config.yaml").write_text(yaml.safe_dump({**plain_data(asdict(cfg)), "source": str(source)},
                                                    sort_keys=False))
    provenance = {**contract.provenance, "trainer": f"s2r.{cfg.method}", "finetuned_from": str(source),
                  "seed": cfg.seed, "num_envs": cfg.num_envs, "s2r_version": s2r_version()}
    started_wall, started_cpu = time.perf_counter(), cpu_seconds()
    try:
        if cfg.method == "dppo":
            summary, dppo = _train_dppo(cfg, model, dcfg, chunk_env, out, state, progress)
            path = _write_dppo(source, out, dppo, dcfg, replace(contract, provenance={**provenance, **_done(summary)}),
                               action_norm)
        else:
            summary, agent = _train_dsrl(cfg, dcfg, model, chunk_env, out, state, progress)
            path = export_dsrl(model, dcfg, replace(contract, provenance={**provenance, **_done(summary)}),
                               action_norm, agent, noise_scale=cfg.dsrl.noise_scale, path=out / POLICY)
    finally:
        chunk_env.close()
    metrics: dict[str, Any] = {"method": cfg.method, "task": cfg.task, "source": str(source), "policy": str(path),
                               **summary, "wall_s": time.perf_counter() - started_wall,
                               "cpu_s": cpu_seconds() - started_cpu}
    if cfg.eval_episodes:
        from s2r.policies.evaluate import evaluate

        result = evaluate(path, episodes=cfg.eval_episodes, seed=cfg.eval_seed, blend_steps=0)
        metrics.update({f"eval/{k}": result[k] for k in ("episodes", "success_rate", "reached_rate",
                                                         "mean_final_reward")})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _done(summary: dict[str, Any]) -> dict[str, Any]:
    return {"control_ticks": summary["control_ticks"], "cpu_s": round(summary["train_cpu_s"], 1)}


def _resume_state(out: Path, cfg: FinetuneConfig) -> dict[str, Any]:
    path = out / STATE
    if not path.is_file():
        raise FinetuneError(f"{path}: nothing to resume (no checkpoint; run without --resume first)")
    state = torch.load(path, weights_only=True)
    extra = state["extra"] if "extra" in state else state
    for key in ("method", "task"):
        if extra[key] != getattr(cfg, key):
            raise FinetuneError(f"{path}: {key}: the checkpoint is {extra[key]!r}, asked for {getattr(cfg, key)!r}")
    return state


class _Budget:
    """Control ticks and CPU seconds spent (those of earlier, resumed runs included), and whether either is out."""

    def __init__(self, cfg: FinetuneConfig, ticks: int = 0, cpu_s: float = 0.0) -> None:
        self.cfg, self.ticks_before, self.cpu_before, self.cpu_start = cfg, ticks, cpu_s, cpu_seconds()
        self.last_checkpoint = time.perf_counter()

    def cpu_s(self) -> float:
        return self.cpu_before + cpu_seconds() - self.cpu_start

    def spent(self, ticks: int) -> bool:
        over_cpu = self.cfg.max_cpu_s is not None and self.cpu_s() >= self.cfg.max_cpu_s
        return ticks >= self.cfg.control_ticks or over_cpu

    def checkpoint_due(self) -> bool:
        if time.perf_counter() - self.last_checkpoint < self.cfg.checkpoint_every_s:
            return False
        self.last_checkpoint = time.perf_counter()
        return True


def _save(path: Path, checkpoint: dict[str, Any]) -> None:
    """torch.save to `path` atomically (a crash leaves the previous checkpoint)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- DPPO ------------------------------------------------------------------------------------------
def _train_dppo(cfg: FinetuneConfig, model, dcfg, env: ChunkEnv, out: Path, state: dict | None,
                progress: bool) -> tuple[dict[str, Any], DiffusionPPO]:
    """PPO iterations over chunk steps until the budget is spent; the training summary and the trainer."""
    dppo_cfg = replace(cfg.dppo, num_steps_per_env=cfg.dppo.num_steps_per_env or env.steps_per_episode)
    dppo = DiffusionPPO(model.train(), dcfg, dppo_cfg, num_envs=env.num_envs,
                        num_critic_obs=env.obs_dims[CRITIC_OBS], executed=env.executed)
    iteration, ticks, cpu_s = 0, 0, 0.0
    if state is not None:
        dppo.load_state_dict(state["state"])
        iteration, ticks, cpu_s = state["iteration"], state["control_ticks"], state["cpu_s"]
    env.control_ticks = ticks
    budget = _Budget(cfg, ticks, cpu_s)
    episodes = _Episodes()
    writer = SummaryWriter(out)
    started = time.perf_counter()

    def save() -> None:
        _save(out / STATE, {"method": "dppo", "task": cfg.task, "iteration": iteration,
                            "control_ticks": env.control_ticks, "cpu_s": budget.cpu_s(), "state": dppo.state_dict()})

    obs = env.reset(seed=cfg.seed + iteration)
    with _progress_bar(progress) as bar:
        task = bar.add_task("DPPO", total=cfg.control_ticks, completed=ticks, ret=math.nan, success=math.nan)
        while not budget.spent(env.control_ticks):
            dppo.train_actor = iteration >= cfg.dppo.critic_warmup_iterations
            iteration_start, ticks_start = time.perf_counter(), env.control_ticks
            for _ in range(dppo_cfg.num_steps_per_env):
                chunks = dppo.act(obs[POLICY_OBS], obs[CRITIC_OBS])
                _check_finite("action chunk", chunks, iteration)
                obs, rewards, terminated, _, info = env.step(chunks)
                for name in (POLICY_OBS, CRITIC_OBS):
                    _check_finite(f"{name} observation", obs[name], iteration)
                _check_finite("reward", rewards, iteration)
                dppo.process_env_step(rewards, terminated)
                episodes.record(info["episode"])
            dppo.compute_returns(obs[CRITIC_OBS])
            metrics = dppo.update()
            iteration += 1
            metrics["perf/control_ticks_per_s"] = (env.control_ticks - ticks_start) / (time.perf_counter()
                                                                                        - iteration_start)
            episodes.log(writer, metrics, env.control_ticks)
            bar.update(task, completed=env.control_ticks, ret=episodes.mean_return, success=episodes.success_rate)
            if budget.checkpoint_due():
                save()
    save()
    writer.close()
    return ({"iterations": iteration, "control_ticks": env.control_ticks, "train_cpu_s": budget.cpu_s(),
             "train_wall_s": time.perf_counter() - started, "train_success_rate": episodes.success_rate,
             "train_mean_return": episodes.mean_return}, dppo)


def _write_dppo(source: Path, out: Path, dppo: DiffusionPPO, dcfg, contract, action_norm) -> Path:
    """The fine-tuned model in BC's checkpoint format (OUT/diffusion.pt: the fine-tuned network as `model`, the
    frozen BC one and the timestep they switch at beside it) and exported (OUT/policy.onnx)."""
    checkpoint = torch.load(Path(source) / DIFFUSION_CHECKPOINT, weights_only=True)
    checkpoint.update(model=dppo.model.state_dict(), contract=contract.to_dict())
    if dppo.frozen_base_runs:
        checkpoint.update({FINETUNED_BASE: dppo.base.state_dict(), FINETUNED_TIMESTEP: dppo.finetuned_timestep})
    _save(out / DIFFUSION_CHECKPOINT, checkpoint)
    return export_diffusion_model(dppo.policy(), dcfg, contract, action_norm, out / POLICY)


# --- DSRL ------------------------------------------------------------------------------------------
def _train_dsrl(cfg: FinetuneConfig, dcfg, model, env: ChunkEnv, out: Path, state: dict | None,
                progress: bool) -> tuple[dict[str, Any], Any]:
    """SAC on the noise env until the budget is spent; the training summary and the agent."""
    from s2r.policies.offpolicy.runner import OffPolicyRunner

    noise_env = NoiseEnv(env, noise_scale=cfg.dsrl.noise_scale)
    runner = OffPolicyRunner(noise_env, algo=cfg.dsrl.sac, log_dir=out, seed=cfg.seed, progress=progress)
    check_noise_policy(runner.agent, dcfg, model, str(out))
    ticks, cpu_s = 0, 0.0
    if state is not None:
        extra = runner.load(out / STATE)
        ticks, cpu_s = extra["control_ticks"], extra["cpu_s"]
    env.control_ticks = ticks
    budget = _Budget(cfg, ticks, cpu_s)
    started = time.perf_counter()

    def save() -> None:
        runner.save(out / STATE, extra={"method": "dsrl", "task": cfg.task, "control_ticks": env.control_ticks,
                                        "cpu_s": budget.cpu_s()})

    def stop(summary: dict[str, float]) -> bool:
        if budget.checkpoint_due():
            save()
        return budget.spent(env.control_ticks)

    summary = runner.learn(math.ceil(cfg.control_ticks / env.num_envs), callback=stop)
    save()
    runner.close()
    return ({"env_steps": runner.env_steps, "control_ticks": env.control_ticks, "train_cpu_s": budget.cpu_s(),
             "train_wall_s": time.perf_counter() - started, "train_success_rate": summary["success_rate"],
             "train_mean_return": summary["mean_return"], "updates": summary["updates"]}, runner.agent)


# --- the runner's pieces, for DPPO's loop ----------------------------------------------------------
def _check_finite(what: str, x: Tensor, iteration: int) -> None:
    """TrainingDivergedError naming the worlds (and columns) where `x` `(N, ...)` is not finite."""
    bad = ~torch.isfinite(x)
    if not bad.any():
        return
    rows = bad.reshape(len(x), -1)
    raise TrainingDivergedError(what, iteration, rows.any(1).nonzero().flatten().tolist(),
                                rows.any(0).nonzero().flatten().tolist() if x.dim() > 1 else None)


class _Episodes:
    """The last EPISODE_WINDOW episodes' return and success, logged to TensorBoard with the update's metrics."""

    def __init__(self) -> None:
        self.returns: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self.successes: deque[float] = deque(maxlen=EPISODE_WINDOW)

    def record(self, episode: dict[str, Tensor]) -> None:
        self.returns.extend(episode["return"].tolist())
        self.successes.extend(episode["success"].tolist())

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes)) if self.successes else math.nan

    def log(self, writer: SummaryWriter, metrics: dict[str, float], step: int) -> None:
        if self.returns:
            metrics = {**metrics, "charts/episodic_return": self.mean_return, "charts/success_rate": self.success_rate}
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)


def _progress_bar(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("return {task.fields[ret]:.2f}  success {task.fields[success]:.0%}"),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not show)
