"""Observation terms: small pure functions of a RobotState plus task inputs.

The simulator and the robot runtime call these very functions, so an
observation is written once. Each term takes `(state, inputs, spec)` and
returns `(..., size)` float64, batched or not. `inputs` maps task input names
(`TARGET`, `CMD_VEL`, `OBJECT_POSE`, `LAST_ACTION`; a multirotor's, `s2r.flight`) to arrays. Terms are
looked up by name from `TERMS`, which holds every family (a multirotor's are written in `s2r.flight` and
listed here); a policy's contract lists the terms it was trained on.

    obs = build_observation(contract_terms, state, {LAST_ACTION: a}, spec)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from s2r import flight
from s2r.geometry import wrap_to_pi
from s2r.spec import RobotSpec
from s2r.state import RobotState

LAST_ACTION = "last_action"
"""The previous raw action, clipped, (..., num_actions)."""
TARGET = "target"
"""A position target in the robot's base frame, (..., 3) m."""
CMD_VEL = "cmd_vel"
"""A base velocity command (vx, vy, yaw rate), (..., 3)."""
OBJECT_POSE = "object_pose"
"""A manipulated object's planar pose in the robot's base frame (x, y, sin yaw, cos yaw), (..., 4)."""

INPUT_SIZES: dict[str, Callable[[RobotSpec], int]] = {
    LAST_ACTION: lambda spec: len(spec.actuated_joint_names),
    TARGET: lambda spec: 3,
    CMD_VEL: lambda spec: 3,
    OBJECT_POSE: lambda spec: 4,
    flight.POSITION_ERROR: lambda spec: 3,
    flight.BASE_LIN_VEL_W: lambda spec: 3,
    flight.ACTION_HISTORY: lambda spec: flight.ACTION_HISTORY_LENGTH * len(spec.rotors),
}

Inputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class TermDef:
    """A registered observation term: its function, its size and the task inputs it reads."""

    fn: Callable[[RobotState, Inputs, RobotSpec], np.ndarray]
    size: Callable[[RobotSpec], int]
    inputs: tuple[str, ...] = ()


TERMS: dict[str, TermDef] = {}


def _term(size: Callable[[RobotSpec], int], inputs: tuple[str, ...] = ()):
    def register(fn):
        TERMS[fn.__name__] = TermDef(fn, size, inputs)
        return fn

    return register


@_term(size=lambda spec: spec.num_joints)
def joint_pos(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """Joint positions relative to the default pose; continuous joints wrapped to [-π, π)."""
    rel = state.q - spec.default_q
    return np.where(spec.continuous_mask, wrap_to_pi(rel), rel)


@_term(size=lambda spec: 2 * int(spec.continuous_mask.sum()))
def joint_pos_sincos(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """sin and cos of the continuous joints' angles: (..., 2 * num_continuous)."""
    angle = state.q[..., spec.continuous_mask]
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=-1)


@_term(size=lambda spec: spec.num_joints)
def joint_vel(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """Joint velocities."""
    return state.dq


@_term(size=lambda spec: spec.num_joints)
def joint_effort(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """Measured joint efforts."""
    return state.tau


@_term(size=lambda spec: 3)
def base_ang_vel(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """Base angular velocity in the base frame, from the IMU."""
    return state.base_ang_vel


@_term(size=lambda spec: 3)
def projected_gravity(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """The unit gravity vector expressed in the base frame, from the IMU orientation."""
    w, x, y, z = np.moveaxis(state.base_quat, -1, 0)
    # Third row of R(q)^T applied to (0, 0, -1): R^T g for a unit quaternion.
    return -np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1)


@_term(size=lambda spec: 3, inputs=(TARGET,))
def target(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """The task's position target in the base frame."""
    return inputs[TARGET]


@_term(size=lambda spec: 3, inputs=(CMD_VEL,))
def cmd_vel(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """The base velocity command."""
    return inputs[CMD_VEL]


@_term(size=lambda spec: 4, inputs=(OBJECT_POSE,))
def object_pose(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """The manipulated object's planar pose (x, y, sin yaw, cos yaw), from the task's perception."""
    return inputs[OBJECT_POSE]


@_term(size=lambda spec: len(spec.actuated_joint_names), inputs=(LAST_ACTION,))
def last_action(state: RobotState, inputs: Inputs, spec: RobotSpec) -> np.ndarray:
    """The previous action, as the policy output it (clipped)."""
    return inputs[LAST_ACTION]


# A multirotor's (s2r.flight: Learning to Fly's policy inputs)
_term(size=lambda spec: 3, inputs=(flight.POSITION_ERROR,))(flight.position_error)
_term(size=lambda spec: 9)(flight.base_rotation_matrix)
_term(size=lambda spec: 3, inputs=(flight.BASE_LIN_VEL_W,))(flight.base_lin_vel_w)
_term(size=lambda spec: flight.ACTION_HISTORY_LENGTH * len(spec.rotors), inputs=(flight.ACTION_HISTORY,))(
    flight.action_history)


@dataclass(frozen=True)
class ObsTerm:
    """One term of an observation group: a registered term, its scale and (sim-only) noise."""

    name: str
    scale: float = 1.0
    noise: float = 0.0
    """Std of gaussian noise added in simulation only, in the term's units before scaling."""

    def __post_init__(self) -> None:
        if self.name not in TERMS:
            raise ValueError(f"observation term {self.name!r} is unknown; known terms: {', '.join(sorted(TERMS))}")


def term_sizes(terms: Sequence[ObsTerm], spec: RobotSpec) -> list[int]:
    return [TERMS[t.name].size(spec) for t in terms]


def required_inputs(terms: Sequence[ObsTerm]) -> tuple[str, ...]:
    """The task inputs the terms read, in first-use order."""
    names: list[str] = []
    for t in terms:
        names += [n for n in TERMS[t.name].inputs if n not in names]
    return tuple(names)


def build_observation(
    terms: Sequence[ObsTerm],
    state: RobotState,
    inputs: Inputs,
    spec: RobotSpec,
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Concatenate the scaled terms: (..., sum of sizes) float64. With `rng`, add each term's noise."""
    parts = []
    for t in terms:
        value = TERMS[t.name].fn(state, inputs, spec)
        if rng is not None and t.noise > 0:
            value = value + rng.normal(0.0, t.noise, size=value.shape)
        parts.append(value * t.scale if t.scale != 1.0 else value)
    return np.concatenate(parts, axis=-1)


class ObservationHistory:
    """The last `length` observations of `num` rows stacked oldest first: (num, length * obs_dim).

    A reset row is filled with copies of its next observation.
    """

    def __init__(self, length: int, obs_dim: int, num: int) -> None:
        self.length = length
        self.buffer = np.zeros((num, length, obs_dim))
        self.fresh = np.ones(num, dtype=bool)

    def push(self, obs: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Add the newest observation of rows `ids` (all for None), (n, obs_dim); return their stacks."""
        if self.length == 1:
            return obs
        rows = slice(None) if ids is None else ids
        buffer = self.buffer[rows]
        buffer[:, :-1] = buffer[:, 1:]
        buffer[:, -1] = obs
        fresh = self.fresh[rows]
        buffer[fresh] = obs[fresh][:, None, :]
        self.buffer[rows] = buffer
        self.fresh[rows] = False
        return buffer.reshape(len(buffer), -1)

    def reset(self, ids: np.ndarray | None = None) -> None:
        """Mark rows `ids` (all rows for None) to restart from their next observation."""
        if ids is None:
            self.fresh[...] = True
        else:
            self.fresh[ids] = True
