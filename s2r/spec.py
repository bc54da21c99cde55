"""RobotSpec: what s2r knows about a robot, loaded from one YAML beside its MJCF.

The spec is the single source of truth shared by the simulator, training and
the robot: joint order, limits, default pose, PD gains, effort and velocity
limits, bus ids, the control period and the IMU. A malformed file raises
`SpecError` naming the file and the field.

    spec = load_robot_spec("sim/robots/cartpole/cartpole.yaml")
    spec.joint_names        # ('slider', 'hinge')
    spec.default_q          # (2,) float64
    spec.control_period     # seconds
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from s2r.yaml_file import check_fields, read_yaml


class SpecError(ValueError):
    """A robot spec file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class JointSpec:
    """One joint, in the order the robot reports it."""

    name: str
    limits: tuple[float, float]
    """Position limits (rad or m); (-inf, inf) for a continuous joint."""
    default_position: float
    """The pose the soft start ramps to and position actions are offset from."""
    kp: float
    """Position gain of the motor driver's PD law (N·m/rad or N/m)."""
    kd: float
    """Damping gain of the motor driver's PD law (N·m·s/rad or N·s/m)."""
    effort_limit: float
    """Torque (N·m) or force (N) limit."""
    velocity_limit: float
    """Velocity limit (rad/s or m/s)."""
    bus_id: int = -1
    """Motor id on the bus; -1 for a joint with an encoder and no motor."""
    actuated: bool = True
    """False for a passive joint that is measured but not driven."""
    continuous: bool = False
    """True for a joint that wraps around (observed through its angle mod 2π)."""


@dataclass(frozen=True)
class ImuSpec:
    """An IMU on the base: the MJCF site it sits on."""

    site: str


@dataclass(frozen=True)
class RotorSpec:
    """One propeller and its motor: thrust along its MJCF site's z axis, a first-order motor."""

    name: str
    site: str
    """The MJCF site at the rotor hub; its z axis is the thrust direction."""
    direction: int
    """Sign (+1 or -1) of the rotor's reaction torque about the site's z axis; its MJCF site's `user` repeats it."""
    thrust_coefficient: float
    """Thrust per squared speed, N/rpm²."""
    torque_constant: float
    """Reaction torque per thrust, N·m/N."""
    rpm_max: float
    """Top speed, rpm; the speed range is [0, rpm_max]."""
    time_constant: float
    """Motor time constant, s (first-order lag of the commanded thrust)."""

    @property
    def thrust_max(self) -> float:
        """Thrust at top speed, N."""
        return self.thrust_coefficient * self.rpm_max**2


@dataclass(frozen=True)
class RobotSpec:
    """A robot: joints in order, control period, sensors and its MJCF file."""

    name: str
    mjcf: Path
    control_period: float
    """Seconds between two policy commands."""
    joints: tuple[JointSpec, ...]
    floating_base: bool = False
    imu: ImuSpec | None = None
    feet: tuple[str, ...] = ()
    """MJCF bodies of the feet (legged robots), for air time, contact and slip terms."""
    ground_contacts: tuple[str, ...] = ()
    """MJCF bodies that may touch the ground; a contact of any other body is undesired (legged robots)."""
    rotors: tuple[RotorSpec, ...] = ()
    """Propellers, in command order (multirotors); they take `thrust` actions."""
    source: Path | None = field(default=None, compare=False)
    """The YAML file the spec was read from, for error messages."""

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def actuated_joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints if j.actuated)

    @cached_property
    def actuated_index(self) -> np.ndarray:
        """Indices of the actuated joints in the joint order, (A,)."""
        return np.array([i for i, j in enumerate(self.joints) if j.actuated], dtype=np.int64)

    @cached_property
    def continuous_mask(self) -> np.ndarray:
        """(num_joints,) bool: joints that wrap around."""
        return np.array([j.continuous for j in self.joints], dtype=bool)

    @cached_property
    def default_q(self) -> np.ndarray:
        """Default joint positions, (num_joints,)."""
        return np.array([j.default_position for j in self.joints], dtype=np.float64)

    @cached_property
    def lower(self) -> np.ndarray:
        return np.array([j.limits[0] for j in self.joints], dtype=np.float64)

    @cached_property
    def upper(self) -> np.ndarray:
        return np.array([j.limits[1] for j in self.joints], dtype=np.float64)

    def joint_array(self, attribute: str, *, actuated_only: bool = False) -> np.ndarray:
        """One joint attribute for every joint (or every actuated joint), float64."""
        joints = [j for j in self.joints if j.actuated or not actuated_only]
        return np.array([getattr(j, attribute) for j in joints], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, paths as strings, without its source file."""
        data = asdict(self)
        data.pop("source")
        for key in ("feet", "ground_contacts", "rotors"):  # left out when empty: older specs keep their hash
            if not data[key]:
                data.pop(key)
        data["mjcf"] = self.mjcf.name
        return data

    @cached_property
    def hash(self) -> str:
        """sha256 of the spec's content (not of its paths): 16 hex digits."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=float)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_JOINT_REQUIRED = {
    "name": str,
    "limits": list,
    "default_position": float,
    "kp": float,
    "kd": float,
    "effort_limit": float,
    "velocity_limit": float,
}
_JOINT_OPTIONAL = {"bus_id": int, "actuated": bool, "continuous": bool}
_TOP_REQUIRED = {"name": str, "mjcf": str, "control_period": float, "joints": list}
_TOP_OPTIONAL = {"floating_base": bool, "imu": dict, "feet": list, "ground_contacts": list, "rotors": list}
_ROTOR_REQUIRED = {"name": str, "site": str, "direction": int, "thrust_coefficient": float, "torque_constant": float,
                   "rpm_max": float, "time_constant": float}


def _float(value: Any) -> float:
    """YAML writes infinity as .inf; a string 'inf' is accepted too."""
    return float(value)


def _joint(data: Any, index: int, path: Path) -> JointSpec:
    where = f"joints[{index}]."
    check_fields(data, path, SpecError, required=_JOINT_REQUIRED, optional=_JOINT_OPTIONAL, where=where)
    limits = data["limits"]
    if len(limits) != 2:
        raise SpecError(f"{path}: {where}limits: expected [lower, upper], got {limits!r}")
    try:
        lower, upper = _float(limits[0]), _float(limits[1])
    except (TypeError, ValueError):
        raise SpecError(f"{path}: {where}limits: expected two numbers, got {limits!r}") from None
    if not lower < upper:
        raise SpecError(f"{path}: {where}limits: lower {lower} must be below upper {upper}")
    joint = JointSpec(
        name=data["name"],
        limits=(lower, upper),
        default_position=float(data["default_position"]),
        kp=float(data["kp"]),
        kd=float(data["kd"]),
        effort_limit=float(data["effort_limit"]),
        velocity_limit=float(data["velocity_limit"]),
        bus_id=int(data.get("bus_id", -1)),
        actuated=bool(data.get("actuated", True)),
        continuous=bool(data.get("continuous", False)),
    )
    if not lower <= joint.default_position <= upper:
        raise SpecError(
            f"{path}: {where}default_position: {joint.default_position} is outside limits [{lower}, {upper}]"
        )
    for key in ("kp", "kd"):
        if getattr(joint, key) < 0:
            raise SpecError(f"{path}: {where}{key}: expected >= 0, got {getattr(joint, key)}")
    for key in ("effort_limit", "velocity_limit"):
        if not getattr(joint, key) > 0:
            raise SpecError(f"{path}: {where}{key}: expected > 0, got {getattr(joint, key)}")
    return joint


def parse_robot_spec(data: Any, path: Path) -> RobotSpec:
    """Validate parsed YAML `data` read from `path` into a RobotSpec."""
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    check_fields(data, path, SpecError, required=_TOP_REQUIRED, optional=_TOP_OPTIONAL)
    if not data["control_period"] > 0:
        raise SpecError(f"{path}: control_period: expected seconds > 0, got {data['control_period']}")
    if not data["joints"] and not data.get("rotors"):
        raise SpecError(f"{path}: joints: expected at least one joint (or rotors)")
    joints = tuple(_joint(j, i, path) for i, j in enumerate(data["joints"]))
    seen: set[str] = set()
    for i, joint in enumerate(joints):
        if joint.name in seen:
            raise SpecError(f"{path}: joints[{i}].name: duplicate joint name {joint.name!r}")
        seen.add(joint.name)
    imu = None
    if data.get("imu") is not None:
        if "site" not in data["imu"]:
            raise SpecError(f"{path}: imu.site: missing (expected the MJCF site name)")
        imu = ImuSpec(site=str(data["imu"]["site"]))
    mjcf = (path.parent / data["mjcf"]).resolve()
    if not mjcf.is_file():
        raise SpecError(f"{path}: mjcf: file {mjcf} does not exist")
    return RobotSpec(
        name=data["name"],
        mjcf=mjcf,
        control_period=float(data["control_period"]),
        joints=joints,
        floating_base=bool(data.get("floating_base", False)),
        imu=imu,
        feet=_names(data, "feet", path),
        ground_contacts=_names(data, "ground_contacts", path),
        rotors=tuple(_rotor(r, i, path) for i, r in enumerate(data.get("rotors", []))),
        source=path,
    )


def _rotor(data: Any, index: int, path: Path) -> RotorSpec:
    where = f"rotors[{index}]."
    check_fields(data, path, SpecError, required=_ROTOR_REQUIRED, where=where)
    rotor = RotorSpec(name=data["name"], site=data["site"], direction=int(data["direction"]),
                      **{k: float(data[k]) for k in ("thrust_coefficient", "torque_constant", "rpm_max", "time_constant")})
    if rotor.direction not in (-1, 1):
        raise SpecError(f"{path}: {where}direction: expected +1 or -1, got {rotor.direction}")
    for key in ("thrust_coefficient", "rpm_max", "time_constant"):
        if not getattr(rotor, key) > 0:
            raise SpecError(f"{path}: {where}{key}: expected > 0, got {getattr(rotor, key)}")
    if rotor.torque_constant < 0:
        raise SpecError(f"{path}: {where}torque_constant: expected >= 0, got {rotor.torque_constant}")
    return rotor


def _names(data: dict, key: str, path: Path) -> tuple[str, ...]:
    names = data.get(key, [])
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise SpecError(f"{path}: {key}[{i}]: expected an MJCF body name, got {name!r}")
    return tuple(names)


def load_robot_spec(path: str | Path) -> RobotSpec:
    """Load and validate a robot spec YAML; raises SpecError naming the file and field."""
    path = Path(path)
    return parse_robot_spec(read_yaml(path, "robot spec", SpecError), path)


def shipped_robots_dir() -> Path:
    """Where the robots shipped with s2r lie: `robots/NAME/NAME.yaml` (and its MJCF), package data of `s2r.sim`.

    Found through importlib.resources, so it is right in a source checkout and in an installed
    wheel alike; reading these files runs no simulator code (`s2r.sim`'s own `__init__` is empty).
    """
    return Path(str(resources.files("s2r.sim") / "robots"))


def robot_spec(name: str) -> RobotSpec:
    """The spec of a robot shipped with s2r (`pendulum`, `cartpole`, `arm`) or a YAML path."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        return load_robot_spec(candidate)
    robots = shipped_robots_dir()
    path = robots / name / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.name for p in robots.iterdir() if p.is_dir())
        raise SpecError(f"unknown robot {name!r}; known robots: {', '.join(known)} (or a path to a spec YAML)")
    return load_robot_spec(path)
