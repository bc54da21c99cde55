"""FlightRuntime: a multirotor policy on the robot, its flight inputs computed from the robot's state.

A hover policy (`s2r.flight`'s terms) takes three task inputs that training writes from the
simulator: the position error to the target, the base's linear velocity in the world, and the
last `ACTION_HISTORY_LENGTH` raw actions. On the robot they come from the state itself, so that
they are as old as the attitude and rate they are observed with: `RobotState.base_pos_w` and
`base_lin_vel_w` (motion capture or a state estimator; SimRobot reports the truth), the target
(the `target` input where the policy's caller has one, else `target_w`), and the actions this
runtime returned. Inputs the caller passes win (the simulator passes all three).

    runtime = FlightRuntime(PolicyRuntime("hover.onnx", spec=spec), target_w=(0.0, 0.0, 0.0))
    command = runtime.step(state)           # state.base_pos_w, base_lin_vel_w (3,): Command with rotor_thrust

History at a reset: every entry is -1, motors off, which is what a robot's motors were last told
before its first command (L2F fills it with the command that holds the motors' initial state). A
non-finite action enters the history as -1 too: the safety filter turns those motors off, and the
simulator's task records the same.

`load_runtime` wraps every mlp policy that takes one of these inputs. numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from s2r.flight import ACTION_HISTORY, ACTION_HISTORY_LENGTH, BASE_LIN_VEL_W, POSITION_ERROR
from s2r.interface import RobotError
from s2r.observations import TARGET
from s2r.runtime.mlp import PolicyRuntime
from s2r.state import Command, RobotState

STATE_INPUTS = (POSITION_ERROR, BASE_LIN_VEL_W, ACTION_HISTORY)
"""The task inputs a FlightRuntime computes when its caller does not pass them."""


def takes_flight_inputs(runtime: PolicyRuntime) -> bool:
    """Whether the policy takes one of the inputs a FlightRuntime computes."""
    return any(name in runtime.contract.inputs for name in STATE_INPUTS)


class FlightRuntime:
    """A PolicyRuntime whose flight inputs come from the state (a `Runtime`); see the module docstring."""

    rehearses = True
    """`rehearse` runs the wrapped PolicyRuntime's rehearsal on the flight inputs."""

    def __init__(self, runtime: PolicyRuntime, *, target_w: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        self.runtime = runtime
        self.path, self.contract, self.spec = runtime.path, runtime.contract, runtime.spec
        self.warnings, self.num_envs = runtime.warnings, runtime.num_envs
        self.target_w = np.asarray(target_w, dtype=np.float64)
        """The position target, (3,) m in the world, where the caller passes no `target` input."""
        if self.target_w.shape != (3,) or not np.isfinite(self.target_w).all():
            raise ValueError(f"FlightRuntime target_w: expected 3 finite numbers (m), got {target_w!r}")
        self.computed_inputs = tuple(name for name in STATE_INPUTS if name in self.contract.inputs)
        """The policy's inputs this runtime computes from the state (the others come from the caller)."""
        self.optional_inputs: Mapping[str, int] = {TARGET: 3} if TARGET not in self.contract.inputs else {}
        """`target` (3 values, m in the world): where the caller has one, the position error is to it."""
        size = ACTION_HISTORY_LENGTH * len(self.spec.rotors)
        self.history = np.full((self.num_envs, size), -1.0)
        """The last ACTION_HISTORY_LENGTH raw actions per world, oldest first, (num_envs, 32 * num_rotors)."""

    def reset(self, ids: np.ndarray | None = None) -> None:
        """Forget the history (motors off) and the wrapped runtime's state of rows `ids` (all for None)."""
        self.history[slice(None) if ids is None else ids] = -1.0
        self.runtime.reset(ids)

    def inputs(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The caller's inputs with the flight inputs it left out computed from `state` (batched or not).
        RobotError when the state lacks the base's position or velocity."""
        values = dict(inputs or {})
        single = np.ndim(state.q) == 1
        if POSITION_ERROR in self.computed_inputs and POSITION_ERROR not in values:
            target = values.get(TARGET, self.target_w)
            values[POSITION_ERROR] = self._base(state.base_pos_w, "base_pos_w") - target
        if BASE_LIN_VEL_W in self.computed_inputs and BASE_LIN_VEL_W not in values:
            values[BASE_LIN_VEL_W] = self._base(state.base_lin_vel_w, "base_lin_vel_w")
        if ACTION_HISTORY in self.computed_inputs and ACTION_HISTORY not in values:
            values[ACTION_HISTORY] = self.history[0] if single else self.history
        return values

    def action(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The wrapped runtime's clipped raw action, (num_envs, num_actions), pushed into the history."""
        action = self.runtime.action(state, self.inputs(state, inputs))
        self._remember(action)
        return action

    def step(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> Command:
        """Observation (flight inputs from `state`) → inference → action mapping; the action enters the history."""
        command = self.runtime.step(state, self.inputs(state, inputs))
        self._remember(self.runtime.last_action)
        return command

    def rehearse(self, state: RobotState, inputs: Mapping[str, np.ndarray] | None = None) -> None:
        """`step`'s work with nothing remembered (the history stays as it was)."""
        self.runtime.rehearse(state, self.inputs(state, inputs))

    def stats(self) -> dict[str, Any]:
        return self.runtime.stats()

    def close(self) -> None:
        self.runtime.close()

    def _remember(self, action: np.ndarray) -> None:
        action = np.where(np.isfinite(action), action, -1.0)   # the filter turns a NaN's motors off
        rotors = action.shape[-1]
        self.history[:, :-rotors] = self.history[:, rotors:]
        self.history[:, -rotors:] = action

    def _base(self, value: np.ndarray | None, name: str) -> np.ndarray:
        if value is None:
            raise RobotError(f"RobotState.{name}: None; {self.path.name} flies on the base's position and velocity "
                             f"(motion capture or a state estimator must provide them)")
        return value
