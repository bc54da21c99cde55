"""Train a diffusion policy on a demonstration dataset: DDPM noise-prediction loss, EMA weights.

Each training sample is one window of an episode around a step t (see the timing diagram in
`policies.diffusion.config`): the observations at t-1, t and the actions at t-1 … t+14,
indices clamped to the episode (its first observation and its last action repeat), both
normalized to [-1, 1] per dimension. A dataset that holds the expert's plans (`action.plan`,
`s2r demos --plan-horizon`) gives the actions from t on as the plan recorded at t: what the
expert would do from there, rather than what it did after the recording's action noise. The
loss is ‖ε - ε̂(x_t, t, obs)‖² over uniform DDPM steps. A run directory holds:

    DIR/diffusion.pt     EMA model, normalizers, config, contract (torch.load(weights_only=True))
    DIR/config.yaml      the resolved DiffusionConfig and the dataset
    DIR/metrics.json     final loss, gradient steps, wall time, windows

    metrics = train_diffusion(DiffusionConfig(task="push_t"), Path("data/push_t"), Path("runs/dp"))
    model, cfg, contract, action_norm = load_diffusion(Path("runs/dp"))
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from s2r.contract import PolicyContract
from s2r.dataset import ACTION, ACTION_PLAN, INFO_PATH, Dataset, DatasetError, load_dataset, policy_observation
from s2r.policies.diffusion.config import DiffusionConfig
from s2r.policies.diffusion.model import DiffusionModel, FinetunedDiffusionModel
from s2r.policies.diffusion.processing import RangeNormalizer
from s2r.policies.diffusion.sampler import NoiseSchedule
from s2r.policies.train import plain_data, s2r_version
from s2r.runtime.diffusion import CHECKPOINT, ActionReference

FINETUNED_BASE, FINETUNED_TIMESTEP = "base_model", "finetuned_timestep"
"""Checkpoint keys of a DPPO run: the frozen BC network, and the DDIM timestep from which on (down to 0) the
fine-tuned network `model` runs instead."""


def check_dataset_fits(dataset: Dataset, task: str, plan_steps: int = 1) -> None:
    """Raise DatasetError naming the dataset file and field where its expert plans (if any) are shorter than
    `plan_steps` actions, or where its robot, observation or action differs from `task`'s."""
    from s2r.sim.task_dataset import task_expectation

    expected = task_expectation(task)
    info = dataset.root / INFO_PATH
    if ACTION_PLAN in dataset.features:
        size, action_size = dataset.features[ACTION_PLAN]["shape"][0], expected.features[ACTION]["shape"][0]
        if size % action_size or size // action_size < plan_steps:
            raise DatasetError(f"{info}: features.{ACTION_PLAN}.shape: [{size}]; a diffusion policy predicting "
                               f"{plan_steps} actions ahead for task {task} needs plans of at least "
                               f"{plan_steps} × {action_size} values")
    expected.check(dataset.root, dataset.robot, dataset.features, dataset.contract)


def make_windows(episodes: list[dict[str, np.ndarray]], obs_horizon: int, pred_horizon: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every step's training window: observations (N, To, D) at t-To+1 … t and actions (N, Tp, A) at t-To+1 …,
    indices clamped to each episode; the actions from t on are the expert's plan at t where the episode has one.
    An observation is the policy's, in its terms' order: observation.state then observation.environment_state."""
    obs_windows, act_windows = [], []
    for episode in episodes:
        obs, act = policy_observation(episode), episode[ACTION]
        steps = np.arange(len(obs))[:, None]
        first = steps - (obs_horizon - 1)
        obs_index = np.clip(first + np.arange(obs_horizon), 0, len(obs) - 1)
        act_index = np.clip(first + np.arange(pred_horizon), 0, len(act) - 1)
        actions = act[act_index]
        if ACTION_PLAN in episode:
            plans = episode[ACTION_PLAN].reshape(len(act), -1, act.shape[-1])
            actions[:, obs_horizon - 1:] = plans[:, :pred_horizon - obs_horizon + 1]
        obs_windows.append(obs[obs_index])
        act_windows.append(actions)
    return np.concatenate(obs_windows).astype(np.float64), np.concatenate(act_windows).astype(np.float64)


def policy_contract(task: str, obs_horizon: int, provenance: dict[str, Any]) -> PolicyContract:
    """The contract of a diffusion policy for `task`: its observation terms, history = obs_horizon, kind diffusion."""
    from s2r.sim.env import make_env

    env = make_env(task, 1)
    try:
        contract = env.contract(provenance)
    finally:
        env.close()
    return replace(contract, kind="diffusion", history_length=obs_horizon)


def train_diffusion(cfg: DiffusionConfig, dataset_root: Path, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train on the dataset at `dataset_root` into run directory `out`; returns the metrics."""
    dataset = load_dataset(Path(dataset_root))
    check_dataset_fits(dataset, cfg.task, plan_steps=cfg.pred_horizon - cfg.obs_horizon + 1)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    rng = np.random.default_rng(cfg.seed)

    contract = policy_contract(cfg.task, cfg.obs_horizon, {
        "task": cfg.task, "seed": cfg.seed, "trainer": "s2r.diffusion", "denoiser": cfg.denoiser,
        "epochs": cfg.epochs, "dataset": str(dataset_root), "episodes": len(dataset.episodes),
        "s2r_version": s2r_version()})
    obs, act = make_windows(dataset.episodes, cfg.obs_horizon, cfg.pred_horizon)
    from s2r.sim.tasks import make_task

    task = make_task(cfg.task)
    mirrored = cfg.mirror and task.has_mirror
    if mirrored:
        obs, act = (np.concatenate(pair) for pair in zip((obs, act), task.mirror(obs, act), strict=True))
    obs_norm = RangeNormalizer.fit(obs.reshape(-1, obs.shape[-1]))
    if cfg.relative_actions:   # a - r_t, normalized per chunk index
        act = act - ActionReference.for_contract(contract)(obs[:, -1])[:, None, :]
        action_norm = RangeNormalizer.fit(act)
    else:
        action_norm = RangeNormalizer.fit(act.reshape(-1, act.shape[-1]))
    b_obs = torch.as_tensor(obs.reshape(len(obs), -1), dtype=torch.float32)         # raw: the model normalizes
    b_act = torch.as_tensor(action_norm.normalize(act), dtype=torch.float32)       # (N, Tp, A) in [-1, 1]
    model = DiffusionModel(cfg, obs_dim=obs.shape[-1], action_dim=act.shape[-1], obs_norm=obs_norm.module())
    ema = copy.deepcopy(model).requires_grad_(False)
    schedule = NoiseSchedule(cfg.num_train_timesteps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    batches = max(1, len(b_obs) // cfg.batch_size)
    total = cfg.epochs * batches
    warmup = min(500, total // 10 + 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump({**plain_data(asdict(cfg)), "dataset": str(dataset_root)},
                                                    sort_keys=False))
    start = time.perf_counter()
    step, losses, curve = 0, [], []
    for epoch in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(len(b_obs)))
        for mb in range(batches):
            mb_inds = order[mb * cfg.batch_size:(mb + 1) * cfg.batch_size]
            mb_act = b_act[mb_inds]
            noise = torch.randn_like(mb_act)
            t = torch.randint(0, cfg.num_train_timesteps, (len(mb_inds),))
            # ‖ε - ε̂(√ᾱ_t a + √(1-ᾱ_t) ε, t, obs)‖² (or ‖a - â(...)‖² predicting the sample)
            target = noise if cfg.prediction == "epsilon" else mb_act
            loss = torch.nn.functional.mse_loss(model(b_obs[mb_inds], schedule.add_noise(mb_act, noise, t), t), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.lerp_(p, 1 - decay)
            losses.append(loss.item())
            step += 1
        curve.append(float(np.mean(losses[-batches:])))
        if progress and (epoch % 10 == 0 or epoch == cfg.epochs - 1):
            print(f"epoch {epoch + 1}/{cfg.epochs}  losses/denoising_mse {curve[-1]:.4f}  "
                  f"steps/s {step / (time.perf_counter() - start):.0f}", flush=True)

    checkpoint = {"config": plain_data(asdict(cfg)), "model": ema.state_dict(), "obs_dim": int(obs.shape[-1]),
                  "action_dim": int(act.shape[-1]), "action_norm": action_norm.to_dict(),
                  "obs_norm": obs_norm.to_dict(), "contract": contract.to_dict(), "loss_curve": curve}
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, out / CHECKPOINT)
    metrics = {"task": cfg.task, "denoiser": cfg.denoiser, "windows": len(b_obs), "mirrored": mirrored,
               "gradient_steps": step,
               "first_epoch_loss": curve[0], "final_loss": curve[-1], "wall_s": time.perf_counter() - start}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def is_diffusion_run(path: Path) -> bool:
    return (Path(path) / CHECKPOINT).is_file()


def load_diffusion(run_dir: Path) -> tuple[DiffusionModel | FinetunedDiffusionModel, DiffusionConfig, PolicyContract,
                                          RangeNormalizer]:
    """The EMA model (eval mode), config, contract and action normalizer of a run directory; of a DPPO run
    (`s2r finetune --method dppo`), the fine-tuned network and its frozen BC one as a `FinetunedDiffusionModel`."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CHECKPOINT} (train one with `s2r train TASK --policy diffusion`)")
    checkpoint = torch.load(path, weights_only=True)
    data = checkpoint["config"]
    cfg = DiffusionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    obs_norm = RangeNormalizer.from_dict(checkpoint["obs_norm"])
    model = DiffusionModel(cfg, obs_dim=checkpoint["obs_dim"], action_dim=checkpoint["action_dim"],
                           obs_norm=obs_norm.module())
    model.load_state_dict(checkpoint["model"])
    if FINETUNED_BASE in checkpoint:
        base = DiffusionModel(cfg, obs_dim=checkpoint["obs_dim"], action_dim=checkpoint["action_dim"],
                              obs_norm=obs_norm.module())
        base.load_state_dict(checkpoint[FINETUNED_BASE])
        model = FinetunedDiffusionModel(base, model, finetuned_timestep=checkpoint[FINETUNED_TIMESTEP])
    return (model.eval(), cfg, PolicyContract.from_dict(checkpoint["contract"]),
            RangeNormalizer.from_dict(checkpoint["action_norm"]))
