"""The noise schedule (DDPM, for training) and DDIM sampling, in torch.

The schedule is DDPM's with `num_train_timesteps` steps and the squared-cosine betas
(`squaredcos_cap_v2`) computed as diffusers computes them, so diffusers' `DDIMScheduler`
built from `schedule.diffusers_config()` takes the very same steps. DDIM (η = 0) visits
the "leading" timesteps t_k = k · (T / K) for k = K-1 … 0 and updates, with ᾱ the cumulative
product of 1 - β and ᾱ_prev = 1 after the last step:

    x̂0 = clip((x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t, -1, 1)
    x_prev = √ᾱ_prev x̂0 + √(1-ᾱ_prev) ε̂

    schedule = NoiseSchedule(100)
    noisy = schedule.add_noise(actions, noise, t)                       # training input
    chunk = ddim_sample(model, obs, noise, schedule.ddim_timesteps(10))  # (B, Tp, A) normalized
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from s2r.policies.diffusion.model import DiffusionModel


@dataclass(frozen=True)
class NoiseSchedule:
    """DDPM's cumulative signal levels ᾱ_t for t = 0 … num_train_timesteps-1 (squared-cosine betas)."""

    num_train_timesteps: int = 100
    max_beta: float = 0.999

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(T,) float32, as diffusers' betas_for_alpha_bar + cumprod produce it."""
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        n = self.num_train_timesteps
        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), self.max_beta) for i in range(n)]
        return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float32), dim=0)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """q(x_t | x0): √ᾱ_t x0 + √(1-ᾱ_t) noise, for x0 (B, ...) and timesteps (B,)."""
        abar = self.alphas_cumprod.to(x0.device)[timestep].reshape(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def ddim_timesteps(self, num_inference_steps: int) -> list[int]:
        """The DDIM steps, noisiest first: [T - T/K, …, T/K, 0] ("leading" spacing, as diffusers)."""
        ratio = self.num_train_timesteps // num_inference_steps
        return [k * ratio for k in reversed(range(num_inference_steps))]

    def diffusers_config(self, prediction: str = "epsilon") -> dict:
        """Keyword arguments for diffusers' DDIMScheduler/DDPMScheduler that give this schedule."""
        return {"num_train_timesteps": self.num_train_timesteps, "beta_schedule": "squaredcos_cap_v2",
                "clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": prediction}


def ddim_step(sample: torch.Tensor, output: torch.Tensor, abar_t: float, abar_prev: float,
              prediction: str = "epsilon") -> torch.Tensor:
    """One deterministic DDIM update from ᾱ_t to ᾱ_prev, with x̂0 clipped to [-1, 1]; `output` is ε̂ or x̂0."""
    if prediction == "epsilon":
        eps = output
        x0 = (sample - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
    else:
        x0 = output
        eps = (sample - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
    return math.sqrt(abar_prev) * x0.clamp(-1.0, 1.0) + math.sqrt(1 - abar_prev) * eps


@torch.no_grad()
def ddim_sample(model: DiffusionModel, obs: torch.Tensor, sample: torch.Tensor, timesteps: list[int],
                schedule: NoiseSchedule | None = None, prediction: str = "epsilon") -> torch.Tensor:
    """Denoise `sample` (B, Tp, A) (pure noise for a full DDIM run, a noised chunk for a warm start)
    through `timesteps` (noisiest first; ᾱ after each is that of the next, 1 after step 0) given raw
    observations `obs` (B, To*D). Returns the normalized chunk (B, Tp, A)."""
    schedule = schedule or NoiseSchedule()
    abar = schedule.alphas_cumprod.tolist()
    for i, t in enumerate(timesteps):
        output = model(obs, sample, torch.full((len(sample),), t, dtype=torch.int64))
        prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        sample = ddim_step(sample, output, abar[t], abar[prev] if prev >= 0 else 1.0, prediction)
    return sample
