"""The diffusion policy's networks: an observation encoder and a noise-predicting denoiser.

`DiffusionModel` maps raw observations `obs` (B, obs_horizon * obs_dim), a noisy normalized
action chunk `sample` (B, pred_horizon, A) and the diffusion step `timestep` (B,) int64 to
the predicted noise (B, pred_horizon, A). The observation encoder (per-dimension
normalization, then the flattened window as the global condition, as Diffusion Policy does
for low-dimensional state) is inside, so the exported graph takes raw observations.

Two denoisers, chosen by `DiffusionConfig.denoiser`:
- `MLPDenoiser`: residual MLP blocks over the flattened chunk, each modulated by FiLM
  (scale, shift) from the step embedding and the condition. Fast; enough for state tasks.
- `ConditionalUnet1D`: Diffusion Policy's conditional 1D temporal U-Net: convolutions over
  the chunk's time axis, downsampled and upsampled with skips, every residual block
  FiLM-conditioned on the step embedding and the observation.

    model = DiffusionModel(cfg, obs_dim=8, action_dim=2, obs_norm=obs_norm)
    eps = model(obs, sample, timestep)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from s2r.policies.diffusion.config import DiffusionConfig


class Normalize(nn.Module):
    """(x - center) * scale per dimension, statistics as buffers (saved in checkpoints, baked into ONNX)."""

    def __init__(self, center: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("center", torch.as_tensor(np.asarray(center), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) * self.scale


class SinusoidalStepEmbedding(nn.Module):
    """Diffusion step t (B,) → [sin(t ω_k), cos(t ω_k)] (B, dim), ω_k = 10000^(-k / (dim/2 - 1))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        self.register_buffer("freqs", freqs)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        angles = timestep.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _step_encoder(dim: int) -> nn.Sequential:
    return nn.Sequential(SinusoidalStepEmbedding(dim), nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))


class FiLMBlock(nn.Module):
    """h + W2 mish(scale(c) * W1 mish(LN h) + shift(c)): a residual MLP block under FiLM conditioning."""

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * width))
        self.act = nn.Mish()

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond).chunk(2, dim=-1)
        return h + self.fc2(self.act(self.fc1(self.act(self.norm(h))) * (1 + scale) + shift))


class MLPDenoiser(nn.Module):
    """Noise prediction for a flattened chunk with residual FiLM blocks."""

    def __init__(self, cfg: DiffusionConfig, *, action_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.step_encoder = _step_encoder(cfg.time_embed_dim)
        film_dim = cfg.time_embed_dim + cond_dim
        flat = cfg.pred_horizon * action_dim
        self.inp = nn.Linear(flat + cond_dim, cfg.hidden_dim)
        self.blocks = nn.ModuleList(FiLMBlock(cfg.hidden_dim, film_dim) for _ in range(cfg.num_layers))
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden_dim), nn.Mish(), nn.Linear(cfg.hidden_dim, flat))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        film = torch.cat([self.step_encoder(timestep), cond], dim=-1)
        h = self.inp(torch.cat([sample.flatten(1), cond], dim=-1))
        for block in self.blocks:
            h = block(h, film)
        return self.out(h).reshape(sample.shape)


class Conv1dBlock(nn.Sequential):
    """Conv1d → GroupNorm → Mish over (B, C, T)."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 8) -> None:
        super().__init__(nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(groups, cout), nn.Mish())


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks; between them the condition sets a per-channel FiLM scale and shift."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: int = 5) -> None:
        super().__init__()
        self.conv1 = Conv1dBlock(cin, cout, kernel)
        self.conv2 = Conv1dBlock(cout, cout, kernel)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        return self.conv2(self.conv1(x) * scale + shift) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Diffusion Policy's conditional U-Net over the chunk's time axis: (B, T, A) → (B, T, A)."""

    def __init__(self, cfg: DiffusionConfig, *, action_dim: int, cond_dim: int, kernel: int = 5) -> None:
        super().__init__()
        self.step_encoder = _step_encoder(cfg.time_embed_dim)
        film_dim = cfg.time_embed_dim + cond_dim
        dims = (action_dim, *cfg.unet_dims)
        levels = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(nn.ModuleList([
                ConditionalResidualBlock1D(cin, cout, film_dim, kernel),
                ConditionalResidualBlock1D(cout, cout, film_dim, kernel),
                nn.Identity() if last else nn.Conv1d(cout, cout, 3, stride=2, padding=1),
            ]))
        mid = dims[-1]
        self.mid = nn.ModuleList([ConditionalResidualBlock1D(mid, mid, film_dim, kernel) for _ in range(2)])
        self.up = nn.ModuleList()
        for i, (cin, cout) in enumerate(reversed(levels[1:])):
            self.up.append(nn.ModuleList([
                ConditionalResidualBlock1D(cout * 2, cin, film_dim, kernel),
                ConditionalResidualBlock1D(cin, cin, film_dim, kernel),
                nn.ConvTranspose1d(cin, cin, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(Conv1dBlock(dims[1], dims[1], kernel), nn.Conv1d(dims[1], action_dim, 1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        film = torch.cat([self.step_encoder(timestep), cond], dim=-1)
        x = sample.transpose(1, 2)
        skips = []
        for block1, block2, downsample in self.down:
            x = block2(block1(x, film), film)
            skips.append(x)
            x = downsample(x)
        for block in self.mid:
            x = block(x, film)
        for block1, block2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(block2(block1(x, film), film))
        return self.final(x).transpose(1, 2)


class DiffusionModel(nn.Module):
    """Observation encoder + denoiser: (obs (B, To*D) raw, sample (B, Tp, A), timestep (B,)) → noise (B, Tp, A)."""

    def __init__(self, cfg: DiffusionConfig, *, obs_dim: int, action_dim: int, obs_norm: Normalize) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.obs_horizon = cfg.obs_horizon
        self.obs_norm = obs_norm
        denoiser = MLPDenoiser if cfg.denoiser == "mlp" else ConditionalUnet1D
        self.denoiser = denoiser(cfg, action_dim=action_dim, cond_dim=cfg.obs_horizon * obs_dim)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observation window (B, To*D) → global condition (B, To*D), normalized per dimension."""
        return self.obs_norm(obs.reshape(-1, self.obs_horizon, self.obs_dim)).flatten(1)

    def forward(self, obs: torch.Tensor, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.denoiser(sample, timestep, self.encode(obs))


class FinetunedDiffusionModel(nn.Module):
    """A DPPO fine-tuning as one denoiser: the fine-tuned network at the DDIM timesteps ≤ `finetuned_timestep`
    (the last K steps of the sampler), the frozen BC network before them, as in DPPO (Ren et al.: `actor_ft`
    for the fine-tuned steps, the original `actor` for the others). Same call as `DiffusionModel`; every row of
    a call shares its timestep (as the samplers call it). Exported, the choice is an ONNX `If`: one network runs
    per step, so a chunk costs what the BC policy's does.

        model = FinetunedDiffusionModel(bc_model, finetuned_model, finetuned_timestep=20)
        eps = model(obs, sample, timestep)     # finetuned(...) where timestep <= 20, else bc_model(...)
    """

    def __init__(self, base: DiffusionModel, finetuned: DiffusionModel, *, finetuned_timestep: int) -> None:
        super().__init__()
        self.base, self.finetuned, self.finetuned_timestep = base, finetuned, int(finetuned_timestep)
        self.obs_dim, self.action_dim, self.obs_horizon = finetuned.obs_dim, finetuned.action_dim, finetuned.obs_horizon

    def forward(self, obs: torch.Tensor, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return torch.cond(timestep[0] <= self.finetuned_timestep, lambda o, s, t: self.finetuned(o, s, t),
                              lambda o, s, t: self.base(o, s, t), (obs, sample, timestep))
        network = self.finetuned if int(timestep[0]) <= self.finetuned_timestep else self.base
        return network(obs, sample, timestep)
