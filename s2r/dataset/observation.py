"""A policy observation as dataset features, the way LeRobot's push-T stores it.

A policy observes a frame as one vector, its terms in order (s2r.observations). A dataset
keeps what the policy sees of the robot (joint terms, IMU, commands, its last action) in
`observation.state` and what it sees of the world outside the robot (terms that read the
manipulated object's pose, `object_pose`) in `observation.environment_state`, each with one
name per component (`joint_pos.pusher_x`, `object_pose.sin_yaw`). The values are those the
policy sees (each term times its scale, as the contract in meta/info.json lists them), so

    policy_observation(frame) == concat(frame[OBS_STATE], frame[OBS_ENV_STATE])

is the policy's observation again, bit for bit: the robot's terms come before the object's,
which ObservationLayout requires.

    layout = ObservationLayout(task.config.policy_terms, spec)
    layout.features()                  # {OBS_STATE: {...}, OBS_ENV_STATE: {...}} with names
    frame = layout.split(obs)          # obs (..., D) → {OBS_STATE: (..., 4), OBS_ENV_STATE: (..., 4)}
    obs = policy_observation(frame)    # (..., D)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s2r.dataset.layout import OBS_ENV_STATE, OBS_STATE
from s2r.observations import OBJECT_POSE, TERMS, ObsTerm, term_sizes
from s2r.spec import RobotSpec

ENVIRONMENT_INPUTS = (OBJECT_POSE,)
"""Task inputs that describe the world outside the robot: a term reading one goes to observation.environment_state."""
COMPONENT_NAMES: dict[str, tuple[str, ...]] = {"object_pose": ("x", "y", "sin_yaw", "cos_yaw")}
"""Component names of terms whose components are not one per joint."""


def is_environment_term(name: str) -> bool:
    """Whether observation term `name` observes the world outside the robot."""
    return any(i in ENVIRONMENT_INPUTS for i in TERMS[name].inputs)


@dataclass(frozen=True)
class ObservationLayout:
    """Where a policy observation's terms go in a dataset: the robot's in observation.state, the object's after.

    terms: the policy's observation terms, in order; spec: the robot they observe.
    """

    terms: tuple[ObsTerm, ...]
    spec: RobotSpec
    sizes: tuple[int, ...] = field(init=False)
    state_size: int = field(init=False)
    """observation.state's size: the first state_size values of a policy observation."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", tuple(self.terms))
        object.__setattr__(self, "sizes", tuple(term_sizes(self.terms, self.spec)))
        kinds = [is_environment_term(t.name) for t in self.terms]
        for i in range(1, len(kinds)):
            if kinds[i - 1] and not kinds[i]:
                raise ValueError(f"observation terms: {self.terms[i].name!r} (the robot's) comes after "
                                 f"{self.terms[i - 1].name!r} (the environment's); a dataset stores "
                                 f"{OBS_STATE} then {OBS_ENV_STATE}: list the environment's terms last")
        object.__setattr__(self, "state_size", sum(s for s, env in zip(self.sizes, kinds, strict=True) if not env))

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def names(self) -> list[str]:
        """One name per component of the policy observation, `term.component`, in order."""
        names = []
        for term, size in zip(self.terms, self.sizes, strict=True):
            parts = COMPONENT_NAMES.get(term.name) or (self.spec.joint_names if size == self.spec.num_joints
                                                       else [str(k) for k in range(size)])
            names += [f"{term.name}.{part}" for part in parts]
        return names

    def features(self, dtype: str = "float32") -> dict[str, dict[str, Any]]:
        """The dataset features of the observation: observation.state and, if any term observes the world,
        observation.environment_state, with their names."""
        names = self.names()
        groups = {OBS_STATE: names[:self.state_size], OBS_ENV_STATE: names[self.state_size:]}
        return {key: {"dtype": dtype, "shape": [len(group)], "names": group} for key, group in groups.items() if group}

    def split(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """obs: policy observations (..., D) → {OBS_STATE: (..., state_size), OBS_ENV_STATE: (..., D - state_size)}."""
        obs = np.asarray(obs)
        if obs.shape[-1] != self.size:
            raise ValueError(f"observation: expected {self.size} values ({', '.join(t.name for t in self.terms)}), "
                             f"got shape {obs.shape}")
        groups = {OBS_STATE: obs[..., :self.state_size], OBS_ENV_STATE: obs[..., self.state_size:]}
        return {key: values for key, values in groups.items() if values.shape[-1]}


def policy_observation(frames: Mapping[str, np.ndarray]) -> np.ndarray:
    """The policy observation of frames (an episode's (T, ·) arrays or one frame's (·,)): observation.state
    then observation.environment_state, those present, concatenated on the last axis."""
    return np.concatenate([frames[key] for key in (OBS_STATE, OBS_ENV_STATE) if key in frames], axis=-1)
