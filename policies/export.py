"""Export a trained actor to ONNX with its normalizer and its PolicyContract.

The graph maps raw observations `obs` (batch, obs_dim) float32 to raw actions
`action` (batch, num_actions): the observation normalizer is inside, the
action mapping is not (it lives in the contract, applied by the runtime, the
same code the simulator used). The batch axis is dynamic.

    export_onnx(runner.policy, env.contract(provenance), "policy.onnx")
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch import nn

from s2r.contract import METADATA_KEY, PolicyContract
from s2r.policies.ppo import ActorCritic
from s2r.runtime.mlp import ACTION_OUTPUT
from s2r.runtime.session import OBS_INPUT

OPSET = 18

ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"
"""Logs "torchvision is not installed. Skipping torchvision::nms" and the like: s2r exports no vision ops."""
ONNX_EXPORT_WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # torch.export's pytree, inside torch
    (UserWarning, r"# The axis name: .* will not be used"),  # one batch axis named for several inputs (diffusion)
)
"""(category, message regex) of warnings torch's ONNX exporter raises about its own internals."""


@contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """While inside: torch's ONNX exporter keeps its internal warnings and log lines to itself."""
    registration = logging.getLogger(ONNX_REGISTRATION_LOGGER)
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category, message in ONNX_EXPORT_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        registration.setLevel(level)


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
    with torch.no_grad(), quiet_onnx_export():
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
