"""load_runtime: the runtime for an exported policy file, picked by its contract's kind, in one place.

`mlp` runs in `PolicyRuntime`; `diffusion` in a `DiffusionRuntime` executed by `ChunkedPolicy`
(on a planner thread on the robot, synchronously and batched in simulation). Any other kind is
refused naming the file and the field. policy_node, `s2r eval` and the evaluation use it, so
the robot and the simulator run the same code for the same file.

    runtime = load_runtime("policy.onnx", robot_spec("cartpole"))                  # the robot
    runtime = load_runtime("dp.onnx", env.spec, num_envs=50, synchronous=True)      # the simulator's worlds
    runtime = load_runtime("dp.onnx", spec, warm_start=True, blend_steps=3)         # diffusion options
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s2r.contract import ContractError
from s2r.runtime.chunking import ChunkedPolicy
from s2r.runtime.diffusion import DiffusionRuntime
from s2r.runtime.mlp import PolicyRuntime
from s2r.runtime.protocol import Runtime
from s2r.runtime.session import read_contract
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
    kind = read_contract(path).kind
    unknown = [name for name in options if name not in DIFFUSION_OPTIONS]
    if unknown:
        raise TypeError(f"load_runtime: unknown option {unknown[0]!r} (expected one of {', '.join(DIFFUSION_OPTIONS)})")
    if kind == "mlp":
        if options and refuse_unused:
            raise ValueError(f"{path}: {', '.join(options)}: options of diffusion policies; this one is an mlp")
        return PolicyRuntime(path, spec=spec, num_envs=num_envs)
    if kind == "diffusion":
        execution = {name: options.pop(name) for name in ("blend_steps", "sampling_ticks") if name in options}
        runtime = DiffusionRuntime(path, spec=spec, num_envs=num_envs, seed=seed, **options)
        return ChunkedPolicy(runtime, synchronous=synchronous, **execution)
    raise ContractError(f"{path}: contract.kind: {kind!r} (expected mlp or diffusion)")
