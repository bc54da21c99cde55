"""Runtime: what every policy runtime offers the loop that drives it, on the robot or in simulation.

A runtime turns robot states into commands for `num_envs` worlds: one on a robot, N in the
simulator, where the same observation terms and action mapping run over the batch. Batched
states are (num_envs, num_joints); `step` also takes one unbatched state (num_joints,) and then
returns an unbatched Command. `PolicyRuntime` (kind "mlp") and `ChunkedPolicy` (kind
"diffusion", a `DiffusionRuntime` executed in chunks) are the two; `load_runtime` picks one by
the contract's kind.

    runtime: Runtime = load_runtime("policy.onnx", spec)
    runtime.reset()
    command = runtime.step(state, {"cmd_vel": v})      # Command, or None while a first chunk samples
    runtime.rehearse(state, {"cmd_vel": v})            # step's work, nothing remembered (warms the caches)
    runtime.close()
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from s2r.contract import PolicyContract
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState


@runtime_checkable
class Runtime(Protocol):
    """One exported policy, checked against a robot, driving `num_envs` worlds."""

    path: Path
    """The ONNX file."""
    contract: PolicyContract
    spec: RobotSpec
    """The robot the contract was checked against."""
    warnings: list[str]
    """What the contract check found acceptable but worth saying (the node logs them)."""
    num_envs: int
    rehearses: bool
    """Whether `rehearse` does the work of `step` (a control loop then runs it before each state: CPU
    each period); False where `step` is a lookup that needs no warming up (a chunk executed from a
    planner thread) or must not be repeated (a leader arm read)."""
    computed_inputs: tuple[str, ...]
    """The contract's task inputs the runtime computes from the state itself (a multirotor's position error,
    world velocity and action history: `FlightRuntime`), which its caller need not pass; () for the others."""
    optional_inputs: Mapping[str, int]
    """Task inputs outside the contract that the runtime takes when its caller passes them, name → values
    per step (a multirotor's `target`, 3: `FlightRuntime` holds its own target until one comes); {} for the
    others."""

    def reset(self, ids: np.ndarray | None = None) -> None:
        """Forget the history, last action and plans of worlds `ids` (all for None), at an episode start."""

    def action(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray | None:
        """This step's clipped raw actions (num_envs, num_actions) for a batched state (num_envs, num_joints) and
        task inputs (num_envs, size); remembered as the last action. None: no action yet (a first chunk samples)."""

    def step(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> Command | None:
        """`action` mapped to a Command (batched, or unbatched for an unbatched state); None as for `action`."""

    def rehearse(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> None:
        """The work of `step` on `state` with nothing remembered and nothing returned: the next `step`'s
        command is what it would have been without it. A control loop calls it shortly before a state is
        due, so that the step that counts finds its code and data in the caches (`RobotLoop`)."""

    def stats(self) -> dict[str, Any]:
        """Counters and timings the runtime keeps (empty where it keeps none)."""

    def close(self) -> None:
        """Release threads the runtime holds. Safe to call twice."""
