"""load_runtime: the runtime for an exported policy file, picked by its contract's kind, in one place.

`mlp` runs in `PolicyRuntime` (in a `FlightRuntime` when it takes a multirotor's flight inputs); `diffusion` in a `DiffusionRuntime` executed by `ChunkedPolicy`
(on a planner thread on the robot, synchronously and batched in simulation). Any other kind is
refused naming the file and the field. policy_node, `s2r eval` and the evaluation use it, so
the robot and the simulator run the same code for the same file.

    runtime = load_runtime("policy.onnx", robot_spec("cartpole"))                  # the robot
    runtime = load_runtime("dp.onnx", env.spec, num_envs=50, synchronous=True)      # the simulator's worlds
    runtime = load_runtime("dp.onnx", spec, warm_start=True, blend_steps=3)         # diffusion options
    contract = check_policy_file("policy.onnx")    # the contract, its graph checked against it (s2r info)

Before a runtime is built, the file is checked whole: the graph's inputs and outputs (names,
shapes beyond the batch dimension, element types) against what the contract says the policy
takes and returns, so a graph exported for another observation layout is refused at load with
one line naming the file and the tensor, not on the first tick with an onnxruntime error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnxruntime as ort

from s2r.contract import ContractError, PolicyContract
from s2r.runtime.chunking import ChunkedPolicy
from s2r.runtime.diffusion import (DIFFUSION_KEY, EPS_OUTPUT, NOISE_OUTPUT, SAMPLE_INPUT, TIMESTEP_INPUT,
                                  DiffusionRuntime)
from s2r.runtime.flight import FlightRuntime, takes_flight_inputs
from s2r.runtime.mlp import ACTION_OUTPUT, PolicyRuntime
from s2r.runtime.protocol import Runtime
from s2r.runtime.session import OBS_INPUT, contract_of, open_session
from s2r.spec import RobotSpec

DIFFUSION_OPTIONS = ("warm_start", "warm_start_steps", "action_horizon", "blend_steps", "sampling_ticks")
"""Options of diffusion policies: DiffusionRuntime's sampler and ChunkedPolicy's execution."""


def load_runtime(path: str | Path, spec: RobotSpec, *, num_envs: int = 1, synchronous: bool = False, seed: int = 0,
                 refuse_unused: bool = True, **options: Any) -> Runtime:
    """The runtime of the policy in `path` for robot `spec`, over `num_envs` worlds.

    `synchronous`: diffusion chunks are sampled on the calling thread, batched over the worlds
    (simulation) rather than on a planner thread for one robot; mlp policies run synchronously
    either way. `seed`: of the sampler's noise (mlp policies draw none). `options`: those of the
    policy's kind (DIFFUSION_OPTIONS); one the kind does not take is refused, or, with
    `refuse_unused=False` (a node's parameters set every kind's options), ignored.
    Raises ContractError for a kind other than mlp or diffusion, or a contract that does not fit `spec`.
    """
    path = Path(path)
    kind = check_policy_file(path).kind
    unknown = [name for name in options if name not in DIFFUSION_OPTIONS]
    if unknown:
        raise TypeError(f"load_runtime: unknown option {unknown[0]!r} (expected one of {', '.join(DIFFUSION_OPTIONS)})")
    if kind == "mlp":
        if options and refuse_unused:
            raise ValueError(f"{path}: {', '.join(options)}: options of diffusion policies; this one is an mlp")
        runtime = PolicyRuntime(path, spec=spec, num_envs=num_envs)
        # A multirotor's flight inputs (position error, world velocity, action history) come from the state.
        return FlightRuntime(runtime) if takes_flight_inputs(runtime) else runtime
    if kind == "diffusion":
        execution = {name: options.pop(name) for name in ("blend_steps", "sampling_ticks") if name in options}
        runtime = DiffusionRuntime(path, spec=spec, num_envs=num_envs, seed=seed, **options)
        return ChunkedPolicy(runtime, synchronous=synchronous, **execution)
    raise ContractError(f"{path}: contract.kind: {kind!r} (expected mlp or diffusion)")


FLOAT, INT64 = "tensor(float)", "tensor(int64)"
Signature = dict[str, tuple[tuple[int, ...], str, str]]
"""Tensor name → (shape after the batch dimension, element type, where the contract says so)."""


def check_policy_file(path: str | Path) -> PolicyContract:
    """The contract of the ONNX file `path`, after its graph's inputs and outputs were checked against it.

    ContractError, one line naming the file and the tensor, for a missing or extra tensor, a
    shape that differs beyond the batch dimension, or another element type.
    """
    path = Path(path)
    session = open_session(path)
    contract = contract_of(session, path)
    inputs, outputs = _signature(session, contract, path)
    _check(path, "input", session.get_inputs(), inputs)
    _check(path, "output", session.get_outputs(), outputs)
    return contract


def _signature(session: ort.InferenceSession, contract: PolicyContract, path: Path) -> tuple[Signature, Signature]:
    """What the graph must take and return for `contract`'s kind."""
    actions = contract.action.num_actions
    if contract.kind == "mlp":
        obs = contract.obs_dim * contract.history_length
        return ({OBS_INPUT: ((obs,), FLOAT, f"obs_dim {contract.obs_dim} × history_length {contract.history_length}")},
                {ACTION_OUTPUT: ((actions,), FLOAT, f"action.joint_names: {actions}")})
    if contract.kind == "diffusion":
        metadata = session.get_modelmeta().custom_metadata_map
        if DIFFUSION_KEY not in metadata:
            raise ContractError(f"{path}: no sampler metadata (key {DIFFUSION_KEY!r}); "
                                "export it with policies.diffusion.export")
        meta = json.loads(metadata[DIFFUSION_KEY])
        obs_horizon, pred_horizon = int(meta["obs_horizon"]), int(meta["pred_horizon"])
        sample = ((pred_horizon, actions), FLOAT, f"pred_horizon {pred_horizon} × action.joint_names: {actions}")
        outputs = {EPS_OUTPUT: sample}
        if contract.initial_noise == "policy":   # DSRL: the noise policy's output is the denoiser's initial noise
            outputs[NOISE_OUTPUT] = (sample[0], FLOAT, f"initial_noise 'policy': the denoiser's noise, {sample[2]}")
        return ({OBS_INPUT: ((obs_horizon * contract.obs_dim,), FLOAT,
                             f"obs_horizon {obs_horizon} × obs_dim {contract.obs_dim}"),
                 SAMPLE_INPUT: sample, TIMESTEP_INPUT: ((), INT64, "one DDIM timestep per row")},
                outputs)
    raise ContractError(f"{path}: contract.kind: {contract.kind!r} (expected mlp or diffusion)")


def _check(path: Path, role: str, tensors: list[Any], expected: Signature) -> None:
    found = {tensor.name: tensor for tensor in tensors}
    for name, (shape, element, why) in expected.items():
        if name not in found:
            raise ContractError(f"{path}: graph {role} {name!r} is missing (the graph's {role}s: "
                                f"{', '.join(found) or 'none'})")
        tensor = found[name]
        if tensor.type != element:
            raise ContractError(f"{path}: graph {role} {name!r}: element type {tensor.type}, expected {element}")
        dims = tuple(tensor.shape[1:]) if tensor.shape else ()
        if len(tensor.shape or ()) != 1 + len(shape) or any(d != e for d, e in zip(dims, shape)):
            got = ", ".join(str(d) for d in tensor.shape or ())
            want = ", ".join(["batch", *map(str, shape)])
            raise ContractError(f"{path}: graph {role} {name!r}: shape [{got}], the contract expects [{want}] ({why})")
    extra = [name for name in found if name not in expected]
    if extra:
        raise ContractError(f"{path}: graph {role} {extra[0]!r} is not among the contract's {role}s "
                            f"({', '.join(expected)})")
