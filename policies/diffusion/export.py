"""Export a trained diffusion policy to ONNX: observation encoder + denoiser in one graph, the sampler in metadata.

The graph maps raw observations `obs` (B, obs_horizon * obs_dim) float32, a normalized noisy
chunk `sample` (B, pred_horizon, A) float32 and the diffusion step `timestep` (B,) int64 to the
network's prediction `eps` (B, pred_horizon, A): the noise, or the clean chunk for prediction "sample"; the batch axis is dynamic.
A DSRL policy (contract initial_noise "policy", `policies.diffusion.dsrl`) adds the output `noise` (B, pred_horizon, A),
its noise policy's initial noise for `obs`. The observation
normalization is inside the graph. The metadata holds the PolicyContract (kind "diffusion",
history_length = obs_horizon) under `s2r_contract` and, under `s2r_diffusion`, what the numpy
DDIM loop of `s2r.runtime.diffusion` needs: horizons, ᾱ_t, the DDIM timesteps, the
warm-start step count, the action normalizer and, for relative actions, their reference.

    export_diffusion(Path("runs/dp"), Path("dp.onnx"))
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from s2r.contract import METADATA_KEY, PolicyContract
from s2r.policies.diffusion.config import DiffusionConfig
from s2r.policies.diffusion.model import DiffusionModel
from s2r.policies.diffusion.processing import RangeNormalizer
from s2r.policies.diffusion.sampler import NoiseSchedule
from s2r.policies.export import OPSET, quiet_onnx_export, save_onnx
from s2r.runtime.diffusion import (DIFFUSION_KEY, EPS_OUTPUT, NOISE_OUTPUT, OBS_INPUT, SAMPLE_INPUT, TIMESTEP_INPUT,
                                  ActionReference)


def sampler_metadata(cfg: DiffusionConfig, contract: PolicyContract, action_norm: RangeNormalizer) -> dict:
    """What the numpy runtime needs besides the graph, JSON-ready."""
    schedule = NoiseSchedule(cfg.num_train_timesteps)
    reference = ActionReference.for_contract(contract).to_dict() if cfg.relative_actions else None
    return {"obs_horizon": cfg.obs_horizon, "pred_horizon": cfg.pred_horizon, "action_horizon": cfg.action_horizon,
            "num_train_timesteps": cfg.num_train_timesteps, "alphas_cumprod": schedule.alphas_cumprod.tolist(),
            "timesteps": schedule.ddim_timesteps(cfg.num_inference_steps), "warm_start_steps": cfg.warm_start_steps,
            "clip_sample": 1.0, "prediction": cfg.prediction, "denoiser": cfg.denoiser, "action_norm": action_norm.to_dict(),
            "action_reference": reference}


def export_diffusion_model(model: torch.nn.Module, cfg: DiffusionConfig, contract: PolicyContract,
                           action_norm: RangeNormalizer, path: Path) -> Path:
    """Write `model` (a DiffusionModel, or a DSRL composite returning (eps, noise) where the contract's
    initial_noise is "policy") to `path` (atomically) with the contract and the sampler metadata."""
    if contract.kind != "diffusion":
        raise ValueError(f"contract kind {contract.kind!r}: a diffusion export needs kind 'diffusion'")
    path = Path(path)
    model = model.eval()
    example = (torch.zeros(2, cfg.obs_horizon * model.obs_dim), torch.zeros(2, cfg.pred_horizon, model.action_dim),
               torch.zeros(2, dtype=torch.int64))
    batch = torch.export.Dim("batch")
    outputs = [EPS_OUTPUT, NOISE_OUTPUT] if contract.initial_noise == "policy" else [EPS_OUTPUT]
    with torch.no_grad(), quiet_onnx_export():
        program = torch.onnx.export(
            model, example, input_names=[OBS_INPUT, SAMPLE_INPUT, TIMESTEP_INPUT], output_names=outputs,
            dynamic_shapes=({0: batch}, {0: batch}, {0: batch}), opset_version=OPSET, dynamo=True, verbose=False,
        )
    return save_onnx(program.model_proto, {METADATA_KEY: contract.to_json(),
                                           DIFFUSION_KEY: json.dumps(sampler_metadata(cfg, contract, action_norm))},
                     path)


def export_diffusion(run_dir: Path, path: Path) -> Path:
    """Export the EMA model of a diffusion run directory to `path`."""
    from s2r.policies.diffusion.train import load_diffusion

    model, cfg, contract, action_norm = load_diffusion(run_dir)
    return export_diffusion_model(model, cfg, contract, action_norm, path)
