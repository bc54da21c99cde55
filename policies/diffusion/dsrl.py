"""DSRL (Wagenmaker et al., 2025): reinforcement learning in the noise space of a frozen diffusion policy.

The behaviour-cloned denoiser stays as it is; a small SAC actor chooses, from the observation
window, the initial noise w (Tp, A) its DDIM sampling starts from (w = noise_scale · a with the
actor's tanh-squashed action a ∈ (-1, 1)^(Tp·A)). The environment of the actor is a
`ChunkEnv` whose action is that noise: `NoiseEnv.step` samples the chunk with the exported BC
policy's numpy sampler (the robot's code) and executes it. SAC is s2r's own
(`policies.offpolicy`), trained by its `OffPolicyRunner` on the task reward.

Exported, the noise policy and the denoiser are one ONNX graph: the diffusion graph's `eps`
output and a second output `noise` (B, Tp, A) = noise_scale · tanh(mean of the actor), with the
contract's `initial_noise: "policy"`, so the robot's `DiffusionRuntime` starts each chunk from
the graph's noise instead of a draw from N(0, I) and runs the same DDIM loop and chunking.

    env = NoiseEnv(chunk_env, noise_scale=1.5)              # actions: (N, Tp·A) in [-1, 1]
    runner = OffPolicyRunner(env, algo=SACConfig(...), log_dir=out, seed=0)
    export_dsrl(model, cfg, contract, action_norm, runner.agent, noise_scale=1.5, path=out / "policy.onnx")
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from s2r.contract import PolicyContract
from s2r.policies.diffusion.chunk_env import ChunkEnv
from s2r.policies.diffusion.config import DiffusionConfig
from s2r.policies.diffusion.export import export_diffusion_model
from s2r.policies.diffusion.model import DiffusionModel
from s2r.policies.diffusion.processing import RangeNormalizer
from s2r.policies.offpolicy.networks import OffPolicyAgent
from s2r.policies.offpolicy.sac import SACConfig


@dataclass(frozen=True)
class DSRLConfig:
    """DSRL's noise scale and its SAC."""

    noise_scale: float = 1.5
    """The initial noise is noise_scale · a, a ∈ (-1, 1): about ±1.5 standard deviations of N(0, I)."""
    sac: SACConfig = field(default_factory=lambda: SACConfig(
        actor_hidden=(256, 256), critic_hidden=(256, 256), learning_starts=2_000, buffer_size=300_000,
        batch_size=256, updates_per_step=50, actor_learning_rate=3e-4, critic_learning_rate=3e-4,
        target_entropy_per_action=0.0))
    """SAC on chunk steps (the paper's settings where a CPU allows): 256-unit networks (the paper's 3 × 2048),
    2,000 transitions of uniform noise first, then 50 updates per step of the 50 worlds (one per transition;
    the paper's 20 per step of 4 worlds is 5), learning rates 3e-4, target entropy 0."""

    def __post_init__(self) -> None:
        if self.noise_scale <= 0:
            raise ValueError(f"DSRLConfig.noise_scale: {self.noise_scale} (expected > 0)")


class NoiseEnv:
    """A `ChunkEnv` whose action is the initial noise of the frozen BC sampler: actions `(N, Tp·A)` in [-1, 1]."""

    def __init__(self, env: ChunkEnv, *, noise_scale: float) -> None:
        self.env, self.noise_scale = env, noise_scale
        self.num_envs, self.obs_dims, self.num_actions = env.num_envs, env.obs_dims, env.num_actions

    def reset(self, seed: int | None = None) -> dict[str, Tensor]:
        return self.env.reset(seed=seed)

    def step(self, actions: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, dict[str, Any]]:
        noise = (self.noise_scale * actions).reshape(-1, *self.env.chunk_shape).numpy().astype("float32")
        chunks = self.env.runtime.sample(self.env.window, noise)
        return self.env.step(torch.from_numpy(chunks))

    def close(self) -> None:
        self.env.close()


class DSRLPolicy(nn.Module):
    """The composite the robot runs: (obs, sample, timestep) → (eps, noise), the denoiser's prediction
    `(B, Tp, A)` and the noise policy's initial noise `(B, Tp, A)` for the windows `obs` `(B, To*D)`."""

    def __init__(self, model: DiffusionModel, agent: OffPolicyAgent, *, pred_horizon: int, noise_scale: float) -> None:
        super().__init__()
        self.model, self.normalizer, self.actor = model, agent.actor_normalizer, agent.actor
        self.obs_dim, self.action_dim = model.obs_dim, model.action_dim
        self.shape = (pred_horizon, model.action_dim)
        self.noise_scale = noise_scale

    def forward(self, obs: Tensor, sample: Tensor, timestep: Tensor) -> tuple[Tensor, Tensor]:
        noise = self.noise_scale * self.actor(self.normalizer(obs))
        return self.model(obs, sample, timestep), noise.reshape(-1, *self.shape)


def check_noise_policy(agent: OffPolicyAgent, cfg: DiffusionConfig, model: DiffusionModel, where: str) -> None:
    """ValueError, one line, where the noise policy's output size is not the denoiser's noise (Tp · A)."""
    expected = cfg.pred_horizon * model.action_dim
    if agent.num_actions != expected:
        raise ValueError(f"{where}: the DSRL noise policy outputs {agent.num_actions} values, the denoiser's "
                         f"noise has pred_horizon {cfg.pred_horizon} × {model.action_dim} actions = {expected}")


def export_dsrl(model: DiffusionModel, cfg: DiffusionConfig, contract: PolicyContract, action_norm: RangeNormalizer,
                agent: OffPolicyAgent, *, noise_scale: float, path: Path) -> Path:
    """Write the noise policy and the frozen denoiser to `path` as one ONNX policy (initial_noise "policy")."""
    check_noise_policy(agent, cfg, model, str(path))
    composite = DSRLPolicy(model, agent, pred_horizon=cfg.pred_horizon, noise_scale=noise_scale).eval()
    return export_diffusion_model(composite, cfg, replace(contract, initial_noise="policy"), action_norm, path)
