"""Batches of robot states: what lets one runtime drive one robot or the simulator's N worlds.

A runtime works on batched states (num_envs, num_joints); a robot's unbatched state
(num_joints,) goes in as a batch of one and its command comes out unbatched.
`stacked_observation` is the observation every runtime kind builds from a batched state: the
contract's terms with the task inputs (checked against the contract) and the runtime's last
action, pushed into the runtime's history.

    batch, inputs, single = as_batch(state, inputs)        # (num_joints,) → (1, num_joints)
    obs = stacked_observation(runtime, batch, inputs)      # (1, obs_dim * history) float32
    command = first_row(command) if single else command
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from s2r.contract import ContractError, PolicyContract
from s2r.observations import LAST_ACTION, ObservationHistory, build_observation
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState


class Observer(Protocol):
    """What `stacked_observation` reads of a runtime."""

    path: Path
    contract: PolicyContract
    spec: RobotSpec
    history: ObservationHistory
    last_action: np.ndarray
    """(num_envs, num_actions) the raw actions of the previous step."""


def as_batch(state: RobotState, inputs: Mapping[str, np.ndarray] | None
             ) -> tuple[RobotState, Mapping[str, np.ndarray] | None, bool]:
    """An unbatched state (num_joints,) and its inputs as a batch of one; the flag says whether it was unbatched."""
    if state.q.ndim != 1:
        return state, inputs, False
    add = lambda a: None if a is None else np.asarray(a)[None]
    batched = RobotState(state.stamp, add(state.q), add(state.dq), add(state.tau), add(state.base_quat),
                         add(state.base_ang_vel), add(state.base_pos_w), add(state.base_lin_vel_w))
    return batched, {k: add(v) for k, v in (inputs or {}).items()}, True


def first_row(command: Command) -> Command:
    """Row 0 of a batched Command."""
    return Command(command.q[0], command.dq[0], command.kp[0], command.kd[0], command.tau_ff[0],
                   None if command.rotor_thrust is None else command.rotor_thrust[0])


def stacked_observation(runtime: Observer, state: RobotState, inputs: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """The runtime's observation of a batched state (num_envs, num_joints), or of one robot's unbatched state
    (num_joints,) in a runtime of one world, pushed into its history: (num_envs, obs_dim * history) float32.
    Task inputs (num_envs, size), or (size,) with an unbatched state, are checked against the contract.
    An unbatched state's terms run on it as it is (the terms take any leading shape): no batch of one is
    built around it, which on the robot is a tick's worth of small allocations saved."""
    single = state.q.ndim == 1
    last_action = runtime.last_action[0] if single else runtime.last_action
    task_inputs = {LAST_ACTION: last_action, **inputs} if inputs else {LAST_ACTION: last_action}
    for name, size in runtime.contract.inputs.items():
        value = task_inputs.get(name)
        if value is None or np.shape(value)[-1] != size:
            raise ContractError(f"{runtime.path}: input {name!r}: the policy needs {size} values per step, "
                                f"got {None if value is None else np.shape(value)}")
    frame = build_observation(runtime.contract.observation, state, task_inputs, runtime.spec)
    return runtime.history.push(frame[None] if single else frame).astype(np.float32)
