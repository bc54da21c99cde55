"""The action mapping: a policy's raw output → a Command for the actuated joints.

Scaling, offset and clipping live here, once, for the simulator and the robot
alike, so "is the action scaled inside or outside the graph" has one answer:
the network outputs a raw action, and this mapping, stored in the policy's
contract, turns it into targets.

    position mode: q = offset + scale * clip(a),  kp, kd from the mapping
    torque mode:   tau_ff = offset + scale * clip(a),  kp = kd = 0
    thrust mode:   rotor_thrust = offset + scale * clip(a), per rotor in spec order, as a fraction of
                   its top thrust in [0, 1] (offset = scale = 0.5: a = -1 motors off, a = 1 full thrust)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from s2r.spec import RobotSpec
from s2r.state import Command

ActionMode = Literal["position", "torque", "thrust"]
ACTION_MODES: tuple[ActionMode, ...] = ("position", "torque", "thrust")


@dataclass(frozen=True)
class ActionMapping:
    """How raw actions map to joint commands, per actuated joint in spec order."""

    joint_names: tuple[str, ...]
    mode: ActionMode
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    clip: float
    """Raw actions are clipped to [-clip, clip] before scaling."""
    kp: tuple[float, ...]
    kd: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.mode not in ACTION_MODES:
            raise ValueError(f"action mapping mode: expected one of {', '.join(ACTION_MODES)}, got {self.mode!r}")
        n = len(self.joint_names)
        for key in ("scale", "offset", "kp", "kd"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"action mapping {key}: expected {n} values (one per joint), got {len(getattr(self, key))}")
        if not self.clip > 0:
            raise ValueError(f"action mapping clip: expected > 0, got {self.clip}")
        # Plain floats (checkpoints and JSON hold them), numpy copies for the hot path; frozen, so set through object.
        for key in ("scale", "offset", "kp", "kd"):
            object.__setattr__(self, key, tuple(float(x) for x in getattr(self, key)))
            object.__setattr__(self, f"_{key}", np.asarray(getattr(self, key), dtype=np.float64))
        object.__setattr__(self, "joint_names", tuple(str(n) for n in self.joint_names))
        object.__setattr__(self, "clip", float(self.clip))

    @property
    def num_actions(self) -> int:
        return len(self.joint_names)

    @classmethod
    def for_robot(cls, spec: RobotSpec, mode: ActionMode, scale: float, *, clip: float = 1.0) -> ActionMapping:
        """The usual mapping: position actions around the default pose, torque actions around zero.

        `scale` is in rad (or m) per unit action for position mode, in N·m (or N)
        for torque mode; thrust mode (the spec's rotors) ignores it: [-1, 1] spans [0, 1] of top thrust.
        """
        if mode == "thrust" or spec.rotors:
            if mode != "thrust" or not spec.rotors:
                raise ValueError(f"{spec.source}: rotors: action mode {mode!r} needs "
                                 f"{'a spec with rotors' if mode == 'thrust' else 'thrust (the spec has rotors)'}")
            n = len(spec.rotors)
            return cls(joint_names=tuple(r.name for r in spec.rotors), mode=mode, scale=(0.5,) * n, offset=(0.5,) * n,
                       clip=float(clip), kp=(0.0,) * n, kd=(0.0,) * n)
        n = len(spec.actuated_joint_names)
        position = mode == "position"
        return cls(
            joint_names=spec.actuated_joint_names,
            mode=mode,
            scale=(float(scale),) * n,
            offset=tuple(spec.joint_array("default_position", actuated_only=True)) if position else (0.0,) * n,
            clip=float(clip),
            kp=tuple(spec.joint_array("kp", actuated_only=True)) if position else (0.0,) * n,
            kd=tuple(spec.joint_array("kd", actuated_only=True)) if position else (0.0,) * n,
        )

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        """Raw action (..., num_actions) clipped to [-clip, clip]; NaN stays NaN for the safety filter."""
        return np.minimum(np.maximum(action, -self.clip), self.clip)   # np.clip's Python wrapper: 3x the time

    def targets(self, action: np.ndarray) -> np.ndarray:
        """Position targets (position mode), efforts (torque mode) or thrust fractions (thrust mode), (..., num_actions)."""
        return self._offset + self._scale * self.clip_action(action)

    def to_command(self, action: np.ndarray) -> Command:
        """The Command for a raw action (..., num_actions)."""
        value = self.targets(action)
        if self.mode == "thrust":
            none = np.zeros((*value.shape[:-1], 0))
            return Command(q=none, dq=none.copy(), kp=none.copy(), kd=none.copy(), tau_ff=none.copy(), rotor_thrust=value)
        zeros = np.zeros(value.shape)   # each field its own array (np.zeros_like, broadcast_to: Python wrappers)
        if self.mode == "position":
            return Command(q=value, dq=zeros, kp=zeros + self._kp, kd=zeros + self._kd, tau_ff=zeros.copy())
        return Command(q=zeros, dq=zeros.copy(), kp=zeros.copy(), kd=zeros.copy(), tau_ff=value)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionMapping:
        return cls(
            joint_names=tuple(data["joint_names"]),
            mode=data["mode"],
            scale=tuple(float(x) for x in data["scale"]),
            offset=tuple(float(x) for x in data["offset"]),
            clip=float(data["clip"]),
            kp=tuple(float(x) for x in data["kp"]),
            kd=tuple(float(x) for x in data["kd"]),
        )
