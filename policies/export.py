"""Export a trained actor to ONNX with its normalizer and its PolicyContract.

The graph maps raw observations `obs` (batch, obs_dim) float32 to raw actions
`action` (batch, num_actions): the observation normalizer is inside, the
action mapping is not (it lives in the contract, applied by the runtime, the
same code the simulator used). The batch axis is dynamic.

    export_onnx(runner.policy, env.contract(provenance), "policy.onnx")
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import torch
from torch import nn

from s2r.contract import METADATA_KEY, PolicyContract
from s2r.policies.ppo import ActorCritic
from s2r.runtime.mlp import ACTION_OUTPUT, OBS_INPUT

OPSET = 18


class ExportedActor(nn.Module):
    """Normalizer then actor MLP: the deterministic policy as it runs on the robot."""

    def __init__(self, policy: ActorCritic) -> None:
        super().__init__()
        self.normalizer = policy.actor_normalizer
        self.actor = policy.actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.normalizer(obs))


def export_onnx(policy: ActorCritic, contract: PolicyContract, path: str | Path) -> Path:
    """Write the actor to `path` (atomically) with the contract JSON in its metadata."""
    path = Path(path)
    obs_dim = contract.obs_dim * contract.history_length
    actor = ExportedActor(policy).eval()
    example = torch.zeros(2, obs_dim)
    with torch.no_grad():
        program = torch.onnx.export(
            actor, (example,), input_names=[OBS_INPUT], output_names=[ACTION_OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=OPSET, dynamo=True, verbose=False,
        )
    return save_onnx(program.model_proto, {METADATA_KEY: contract.to_json()}, path)


def save_onnx(model: onnx.ModelProto, metadata: dict[str, str], path: Path) -> Path:
    """Check `model`, put `metadata` in its properties and write it to `path` atomically."""
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path
