"""DPPO (Ren et al., 2024): PPO on the denoising chain of a diffusion policy, fine-tuned from behaviour cloning.

The last K DDIM steps of the sampler become a Gaussian policy over the denoising MDP: from
x_k the step draws x_{k-1} ~ N(μ_θ(x_k, k, o), σ_k²), with μ_θ the deterministic DDIM update
(η = 0, x̂0 clipped to [-1, 1]) the robot's numpy sampler takes, so the fine-tuned network,
sampled without noise, is exactly what the unchanged runtime runs. The earlier steps stay
deterministic. With `freeze_base` they run a frozen copy of the BC network (the paper's `actor`; the
fine-tuned one is its `actor_ft`): a network shared by all steps moves the early steps too, where no
likelihood ratio bounds it; exported, `FinetunedDiffusionModel` picks the network by timestep (an ONNX
`If`, which costs reach's small denoiser a quarter more per chunk). The paper's safeguards:

    σ_k = max(η σ_DDIM(k), min_std)                           the sampling std, clipped from below
    z ~ N(0, I) clipped to ±noise_clip                         the noise draws
    s_k = max(η σ_DDIM(k), min_logprob_std)                    the std of the likelihood (default: as sampled)
    log π(x_{k-1} | x_k, o) = mean over the executed actions of log N(x_{k-1}; μ_θ, s_k²), each clipped to log_prob_clip
    ε_k = ε_base + (ε - ε_base) (e^{r k/(K-1)} - 1) / (e^r - 1)  the ratio clip of step k (0: first fine-tuned, K-1: last)
    A_k = γ_d^{K-1-k} Â                                         the environment step's GAE advantage, discounted over denoising

A value function on the environment's (critic) observation gives GAE(γ, λ) over the chunk steps
of a `ChunkEnv`; each chunk step's advantage is shared by its K denoising steps. The critic
trains alone for the first `critic_warmup_iterations`. Verbs as `policies.ppo.PPO`:

    dppo = DiffusionPPO(model, cfg, DPPOConfig(), num_envs=50, critic_obs=9, executed=slice(1, 9))
    chunks = dppo.act(policy_obs, critic_obs)                  # (N, Tp, A) normalized, × num_steps_per_env
    dppo.process_env_step(rewards, dones)
    dppo.compute_returns(last_critic_obs)
    metrics = dppo.update()                                    # losses/approx_kl, losses/clip_fraction, ...
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from s2r.policies.diffusion.config import DiffusionConfig
from s2r.policies.diffusion.model import DiffusionModel, FinetunedDiffusionModel
from s2r.policies.diffusion.sampler import NoiseSchedule, ddim_step
from s2r.policies.normalization import EmpiricalNormalization
from s2r.policies.ppo import Minibatch, RolloutStorage, build_mlp


@dataclass(frozen=True)
class DPPOConfig:
    """DPPO's hyperparameters (the paper's DDIM fine-tuning, scaled to a CPU)."""

    finetune_steps: int = 3
    """K: the last DDIM steps that form the Gaussian policy (of the sampler's num_inference_steps)."""
    eta: float = 0.0
    """DDIM η of the denoising noise std before its clipping (1: DDPM's posterior std; 0: the clip alone)."""
    min_std: float = 0.02
    """Lower clip of the sampling std, in normalized action units (the paper's 0.1, 0.04 for its precise
    furniture assembly): push_t's training episodes succeed 0.03-0.08 of the time at 0.1, reach's 0.06 (BC
    0.80), and 0.56 at 0.04, 0.74 at 0.02."""
    min_logprob_std: float | None = None
    """Lower clip of the std the log-likelihoods are computed with; None: min_std. The paper clips it at 0.1
    whatever the sampling std; with samples drawn at 0.02 that widens the trust region the ratio clip sets
    five-fold and the updates drift the chunks (docs/diffusion.md)."""
    noise_clip: float = 3.0
    """Standard-normal draws are clipped to ± this."""
    log_prob_clip: tuple[float, float] = (-5.0, 2.0)
    """Bounds of each denoising step's log-likelihood (the paper's), old and new alike."""
    num_steps_per_env: int | None = None
    """Chunk steps per world per iteration; None: one episode (38 for push_t's 300 ticks at action horizon 8)."""
    num_learning_epochs: int = 5
    num_mini_batches: int = 4
    clip_param: float = 0.01
    """Ratio clip ε of the last denoising step."""
    clip_param_base: float = 0.001
    """Ratio clip of the first fine-tuned denoising step."""
    clip_param_rate: float = 3.0
    """Rate r of the exponential interpolation between the two."""
    gamma: float = 0.99
    """Discount per chunk step."""
    lam: float = 0.95
    """GAE λ."""
    denoising_gamma: float = 0.99
    """γ_d: discount of the advantage over the denoising steps, the last step undiscounted."""
    actor_learning_rate: float = 1e-5
    """The paper's 1e-5 of its precise furniture assembly (1e-4 elsewhere): 1e-4 lowers reach's BC success."""
    critic_learning_rate: float = 1e-3
    critic_hidden: tuple[int, ...] = (256, 256)
    max_grad_norm: float = 1.0
    target_kl: float | None = 1.0
    """An update's epochs stop once a minibatch's approximate KL exceeds this (None: never)."""
    critic_warmup_iterations: int = 2
    """Iterations at the start that train only the value function."""
    freeze_base: bool = False
    """Run the denoising steps before the fine-tuned K with a frozen copy of the BC network, as the paper does
    (True), or with the fine-tuned network itself (False: one network, the BC policy's graph and chunk cost).
    On reach from 40 demonstrations, 2M ticks: 0.87 (True) and 0.875 (False) on 200 episodes; chunk 1.23-1.34
    and 0.98 times BC's."""

    def __post_init__(self) -> None:
        for name in ("finetune_steps", "num_steps_per_env", "num_learning_epochs", "num_mini_batches"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"DPPOConfig.{name}: {getattr(self, name)} (expected >= 1)")
        if self.min_logprob_std is not None and self.min_logprob_std <= 0:
            raise ValueError(f"DPPOConfig.min_logprob_std: {self.min_logprob_std} (expected > 0)")
        for name in ("min_std", "clip_param", "clip_param_base", "actor_learning_rate", "critic_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DPPOConfig.{name}: {getattr(self, name)} (expected > 0)")
        if self.log_prob_clip[0] >= self.log_prob_clip[1]:
            raise ValueError(f"DPPOConfig.log_prob_clip: {self.log_prob_clip} (expected low < high)")


class ValueFunction(nn.Module):
    """V(s) `(N,)` from critic observations `(N, C)`, normalized by running statistics."""

    def __init__(self, num_critic_obs: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.normalizer = EmpiricalNormalization(num_critic_obs)
        self.net = build_mlp(num_critic_obs, hidden, 1, "elu")

    def forward(self, critic_obs: Tensor) -> Tensor:
        return self.net(self.normalizer(critic_obs)).squeeze(-1)


class ChainStorage(RolloutStorage):
    """PPO's rollout storage holding, per chunk step, the K+1 states of the fine-tuned denoising chain
    (flattened in `actions`) and the K log-likelihoods `(num_steps, num_envs, K)` in `log_probs`."""

    def __init__(self, num_steps: int, num_envs: int, *, num_policy_obs: int, num_critic_obs: int,
                 chain_shape: tuple[int, int, int]) -> None:
        super().__init__(num_steps, num_envs, num_policy_obs=num_policy_obs, num_critic_obs=num_critic_obs,
                         num_actions=math.prod(chain_shape))
        self.chain_shape = chain_shape
        self.log_probs = torch.zeros(num_steps, num_envs, chain_shape[0] - 1)

    def minibatches(self, num_mini_batches: int, num_epochs: int) -> Iterator[Minibatch]:
        """As PPO's, with `actions` the chains `(B, K+1, Tp, A)` and `log_probs` `(B, K)`."""
        b_policy_obs, b_critic_obs = self.policy_obs.flatten(0, 1), self.critic_obs.flatten(0, 1)
        b_chains = self.actions.flatten(0, 1).reshape(-1, *self.chain_shape)
        b_log_probs, b_values = self.log_probs.flatten(0, 1), self.values.flatten()
        b_returns, b_advantages = self.returns.flatten(), self.advantages.flatten()
        for _ in range(num_epochs):
            for mb_inds in torch.randperm(b_values.shape[0]).tensor_split(num_mini_batches):
                yield Minibatch(b_policy_obs[mb_inds], b_critic_obs[mb_inds], b_chains[mb_inds],
                                b_log_probs[mb_inds], b_values[mb_inds], b_returns[mb_inds], b_advantages[mb_inds])


class DiffusionPPO:
    """Fine-tunes a `DiffusionModel`'s denoiser with PPO over its last K DDIM steps, with a value function."""

    def __init__(self, model: DiffusionModel, diffusion: DiffusionConfig, cfg: DPPOConfig, *, num_envs: int,
                 num_critic_obs: int, executed: slice) -> None:
        """`executed`: the chunk indices the env executes (their likelihood is the policy's)."""
        if cfg.finetune_steps > diffusion.num_inference_steps:
            raise ValueError(f"DPPOConfig.finetune_steps: {cfg.finetune_steps} > the sampler's "
                             f"{diffusion.num_inference_steps} DDIM steps")
        self.model, self.diffusion, self.cfg, self.executed = model, diffusion, cfg, executed
        self.base = copy.deepcopy(model).eval().requires_grad_(False) if cfg.freeze_base else model
        """The network of the denoising steps before the fine-tuned ones: the BC one, frozen, or `model` itself."""
        self.critic = ValueFunction(num_critic_obs, cfg.critic_hidden)
        self.timesteps = NoiseSchedule(diffusion.num_train_timesteps).ddim_timesteps(diffusion.num_inference_steps)
        self.abar = NoiseSchedule(diffusion.num_train_timesteps).alphas_cumprod.tolist()
        k = cfg.finetune_steps
        self.first_finetuned = len(self.timesteps) - k
        self.finetuned_timestep = self.timesteps[self.first_finetuned]
        """The DDIM timestep from which on (down to 0) the fine-tuned network runs."""
        sigmas = [cfg.eta * self._ddim_sigma(i) for i in range(self.first_finetuned, len(self.timesteps))]
        self.stds = [max(sigma, cfg.min_std) for sigma in sigmas]
        """σ_k of the K fine-tuned steps, in sampling order."""
        self.logprob_stds = [max(sigma, cfg.min_std if cfg.min_logprob_std is None else cfg.min_logprob_std)
                             for sigma in sigmas]
        """s_k, the std of their log-likelihoods."""
        t = torch.arange(k, dtype=torch.float32) / max(k - 1, 1)
        self.clip_params = (cfg.clip_param_base + (cfg.clip_param - cfg.clip_param_base)
                            * (torch.exp(cfg.clip_param_rate * t) - 1) / (math.exp(cfg.clip_param_rate) - 1)
                            ) if k > 1 else torch.full((1,), cfg.clip_param)
        self.denoising_discount = cfg.denoising_gamma ** torch.arange(k - 1, -1, -1, dtype=torch.float32)
        self.actor_optimizer = torch.optim.Adam(model.parameters(), lr=cfg.actor_learning_rate)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_learning_rate)
        self.chain_shape = (k + 1, diffusion.pred_horizon, model.action_dim)
        self.storage = ChainStorage(cfg.num_steps_per_env, num_envs,
                                    num_policy_obs=diffusion.obs_horizon * model.obs_dim,
                                    num_critic_obs=num_critic_obs, chain_shape=self.chain_shape)
        self.train_actor = True
        """False during the critic's warm-up: `update` trains the value function only."""
        self._pending: dict[str, Tensor] = {}

    def _ddim_sigma(self, i: int) -> float:
        """DDIM's σ at sampling step i (η = 1): √((1-ᾱ_prev)/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_prev)."""
        a_t = self.abar[self.timesteps[i]]
        a_prev = self.abar[self.timesteps[i + 1]] if i + 1 < len(self.timesteps) else 1.0
        return math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(max(1 - a_t / a_prev, 0.0))

    def _mean(self, obs: Tensor, x: Tensor, i: int) -> Tensor:
        """The deterministic DDIM update μ_θ of sampling step i from x `(B, Tp, A)` given raw windows `(B, To*D)`."""
        t = self.timesteps[i]
        a_prev = self.abar[self.timesteps[i + 1]] if i + 1 < len(self.timesteps) else 1.0
        network = self.model if i >= self.first_finetuned else self.base
        output = network(obs, x, torch.full((len(x),), t, dtype=torch.int64))
        return ddim_step(x, output, self.abar[t], a_prev, self.diffusion.prediction)

    @torch.no_grad()
    def sample(self, obs: Tensor, *, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Chunks `(N, Tp, A)` normalized, the fine-tuned chain `(N, K+1, Tp, A)` and its log-likelihoods `(N, K)`."""
        x = torch.randn(len(obs), *self.chain_shape[1:])
        chain, log_probs = [], []
        for i in range(len(self.timesteps)):
            mean = self._mean(obs, x, i)
            if i < self.first_finetuned:
                x = mean
                continue
            chain.append(x)
            if deterministic:
                x = mean
            else:
                std = self.stds[i - self.first_finetuned]
                x = mean + std * torch.randn_like(mean).clamp(-self.cfg.noise_clip, self.cfg.noise_clip)
            log_probs.append(self._log_prob(x, mean, self.logprob_stds[i - self.first_finetuned]))
        chain.append(x)
        return x, torch.stack(chain, dim=1), torch.stack(log_probs, dim=1)

    def _log_prob(self, x: Tensor, mean: Tensor, std: float) -> Tensor:
        """Mean over the executed actions of log N(x; mean, std²), each clipped to log_prob_clip: `(B,)`."""
        z = (x - mean)[:, self.executed] / std
        log_prob = -0.5 * z**2 - math.log(std) - 0.5 * math.log(2 * math.pi)
        return log_prob.clamp(*self.cfg.log_prob_clip).mean(dim=(-1, -2))

    def log_probs(self, obs: Tensor, chains: Tensor) -> Tensor:
        """Log-likelihoods `(B, K)` of stored chains `(B, K+1, Tp, A)` under the current network."""
        out = []
        for k in range(self.cfg.finetune_steps):
            mean = self._mean(obs, chains[:, k], self.first_finetuned + k)
            out.append(self._log_prob(chains[:, k + 1], mean, self.logprob_stds[k]))
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def act(self, policy_obs: Tensor, critic_obs: Tensor) -> Tensor:
        """Samples chunks `(N, Tp, A)` for windows `(N, To*D)` and remembers the step's inputs."""
        self.critic.normalizer.update(critic_obs)
        chunks, chains, log_probs = self.sample(policy_obs)
        self._pending = dict(policy_obs=policy_obs, critic_obs=critic_obs, actions=chains.flatten(1),
                             log_probs=log_probs, values=self.critic(critic_obs))
        return chunks

    def process_env_step(self, rewards: Tensor, dones: Tensor) -> None:
        """Stores the chunk step: rewards `(N,)`, dones `(N,)` (episode ends; ChunkEnv has no time-outs)."""
        self.storage.add(**self._pending, rewards=rewards, dones=dones)

    @torch.no_grad()
    def compute_returns(self, last_critic_obs: Tensor) -> None:
        """GAE over the stored rollout, bootstrapped from the critic observations `(N, C)` after it."""
        self.storage.compute_returns(self.critic(last_critic_obs), self.cfg.gamma, self.cfg.lam)

    def update(self) -> dict[str, float]:
        """The PPO epochs on the stored rollout (the critic alone while `train_actor` is False); clears it."""
        cfg, sums, num_updates = self.cfg, defaultdict(float), 0
        explained_variance = 1.0 - (self.storage.returns - self.storage.values).var() / self.storage.returns.var()
        stopped = False
        for mb in self.storage.minibatches(cfg.num_mini_batches, cfg.num_learning_epochs):
            value_loss = ((self.critic(mb.critic_obs) - mb.returns) ** 2).mean()
            self.critic_optimizer.zero_grad()
            value_loss.backward()
            nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
            self.critic_optimizer.step()
            sums["losses/value"] += value_loss.item()
            num_updates += 1
            if not self.train_actor or stopped:
                continue
            log_ratio = self.log_probs(mb.policy_obs, mb.actions) - mb.log_probs          # (B, K)
            ratio = log_ratio.exp()
            clip = self.clip_params[None, :]
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean().item()   # k3 estimator of KL(old ‖ new)
                clip_fraction = ((ratio - 1).abs() > clip).float().mean().item()
            advantages = mb.advantages[:, None] * self.denoising_discount[None, :]
            surrogate = -torch.min(advantages * ratio, advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
            self.actor_optimizer.zero_grad()
            surrogate.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.actor_optimizer.step()
            sums["losses/surrogate"] += surrogate.item()
            sums["losses/approx_kl"] += approx_kl
            sums["losses/clip_fraction"] += clip_fraction
            sums["actor_updates"] += 1
            stopped = cfg.target_kl is not None and approx_kl > cfg.target_kl
        self.storage.clear()
        actor_updates = sums.pop("actor_updates", 0)
        metrics = {"losses/value": sums.pop("losses/value") / num_updates,
                   **{name: total / actor_updates for name, total in sums.items()},
                   "losses/explained_variance": explained_variance.item()}
        return metrics

    @property
    def frozen_base_runs(self) -> bool:
        """Whether a frozen BC network runs steps of the sampler (`freeze_base`, and steps before the fine-tuned)."""
        return self.base is not self.model and self.first_finetuned > 0

    def policy(self) -> FinetunedDiffusionModel | DiffusionModel:
        """The fine-tuned denoiser as the robot runs it (the BC network before the fine-tuned steps)."""
        if not self.frozen_base_runs:
            return self.model.eval()
        return FinetunedDiffusionModel(self.base, self.model, finetuned_timestep=self.finetuned_timestep).eval()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "critic": self.critic.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.critic.load_state_dict(state["critic"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
