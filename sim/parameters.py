"""The model parameters s2r edits: one name per physical quantity, mapped to its MjModel field.

Domain randomization (`Randomize(target=...)`), SimRobot configs (`joints: {elbow: {damping:
{scale: 1.8}}}`) and system identification (`damping.elbow`) all name parameters from this
table, and write them through it, so a name means the same field, index and unit everywhere:

    name            per        MjModel field              unit
    damping         joint      dof_damping                N·m·s/rad (N·s/m)
    armature        joint      dof_armature               kg·m² (kg)
    frictionloss    joint      dof_frictionloss           N·m (N)
    kp              actuator   actuator_gainprm[0]        N·m/rad, with biasprm[1] = −kp (position actuators)
    kd              actuator   −actuator_biasprm[2]       N·m·s/rad (position actuators)
    motor_strength  actuator   actuator_gear[0]           × (1 is the spec's motor)
    mass            body       body_mass                  kg; the body's inertia scales with it
    com             body       body_ipos                  m, (x, y, z) in the body frame
    inertia         body       body_inertia               kg·m², the principal moments (3); after a mass term, replaces
                                                          the inertia it scaled
    friction        geom       geom_friction[0]           sliding coefficient
    thrust_max      rotor      actuator_gainprm[0]        N, a rotor's top thrust (thrust coefficient × rpm_max²: scaling
                                                          it scales the thrust coefficient, and the yaw torque with it)
    time_constant   rotor      actuator_dynprm[0]         s, a rotor's first-order motor lag

Actuators are named by their joint (the actuated joints, as `compile_model` adds them); a multirotor's
rotor actuators by their rotor (thrust mode).
A value combines with the nominal one by an `Operation`: `set` (the value), `scale`
(nominal × value) or `add` (nominal + value).

    damping = PARAMETERS["damping"]
    ids = damping.resolve(model, spec, ("elbow",))                    # (k,) rows of dof_damping
    value = combine("scale", damping.nominal(model, ids), 1.8)        # (k,)
    damping.write(lambda field: getattr(model, field)[None], np.array([0]), ids, value[None], model)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import mujoco
import numpy as np

from s2r.spec import RobotSpec

Operation = Literal["set", "scale", "add"]
OPERATIONS: tuple[str, ...] = Operation.__args__
Per = Literal["joint", "actuator", "body", "geom", "rotor"]
_OBJECTS = {"joint": mujoco.mjtObj.mjOBJ_JOINT, "actuator": mujoco.mjtObj.mjOBJ_ACTUATOR,
            "body": mujoco.mjtObj.mjOBJ_BODY, "geom": mujoco.mjtObj.mjOBJ_GEOM, "rotor": mujoco.mjtObj.mjOBJ_ACTUATOR}


class ParameterError(ValueError):
    """A parameter name, or an object it is applied to, that the model does not have."""


@dataclass(frozen=True)
class ModelParameter:
    """One row of the table: where a named parameter lives in an MjModel."""

    name: str
    per: Per
    """What `names` select: joints (their dofs), actuated joints (their actuators), bodies, geoms or rotors (their
    thrust actuators)."""
    field: str
    """The MjModel field, indexed by the resolved ids on its first axis."""
    column: int | None
    """The field's column holding the value; None: the whole row (one value, or com's three)."""
    unit: str
    negated: bool = False
    """Stored negated (kd in biasprm[2])."""
    set_const: bool = False
    """Whether derived constants (mj_setConst) must be recomputed after a write."""
    spec_attribute: str | None = None
    """The attribute of the MjSpec element (joint, body, geom) holding it, for writing an MJCF."""

    @property
    def width(self) -> int:
        """Values per object: 3 for com and inertia, else 1."""
        return 3 if self.name in ("com", "inertia") else 1

    def resolve(self, model: mujoco.MjModel, spec: RobotSpec, names: Sequence[str], *, where: str,
                error: type[Exception] = ParameterError) -> np.ndarray:
        """Rows of `field` for the named objects (k,), in the order given (a joint's row is its dof); empty
        `names`: all of them (see `object_ids`). Raises `error` naming `where` and the missing object."""
        ids = object_ids(model, spec, self.per, names, where=where, error=error)
        if self.name in ("kp", "kd"):
            for index in ids:
                if model.actuator_biastype[index] != mujoco.mjtBias.mjBIAS_AFFINE:
                    raise error(f"{where}: {model.actuator(index).name!r} is driven by a torque motor, which has "
                                f"no {self.name}; use motor_strength")
        return model.jnt_dofadr[ids] if self.per == "joint" else ids

    def nominal(self, model: mujoco.MjModel, ids: np.ndarray) -> np.ndarray:
        """The model's values at rows `ids`, (k,) (com: (k, 3)), in the table's unit and sign."""
        values = getattr(model, self.field)[ids]
        values = values if self.column is None else values[:, self.column]
        return -values if self.negated else values.copy()

    def write(self, fields: Callable[[str], np.ndarray], worlds: np.ndarray, ids: np.ndarray, value: np.ndarray,
              model: mujoco.MjModel) -> None:
        """Write `value` (n, k) (com: (n, k, 3)) at rows `ids` of worlds `worlds` (n,) of the per-world arrays
        `fields(name)` (num_worlds, ...), with what follows from it: kp's bias term, mass's inertia (scaled
        from `model`'s values, which may be the arrays written). Derived constants are the caller's (`set_const`)."""
        if self.name == "mass":  # before the masses: `fields` may be `model`'s own arrays
            scale = value / np.maximum(model.body_mass[ids], 1e-12)
            fields("body_inertia")[worlds[:, None], ids] = model.body_inertia[ids] * scale[..., None]
        if self.name == "kp":
            fields("actuator_biasprm")[worlds[:, None], ids, 1] = -value
        if self.column is None:
            fields(self.field)[np.ix_(worlds, ids)] = value
        else:
            fields(self.field)[worlds[:, None], ids, self.column] = -value if self.negated else value

    def write_spec(self, mj: mujoco.MjSpec, name: str, value: float) -> None:
        """Write one object's value into an MjSpec (for a calibrated MJCF or a sysid candidate model)."""
        if self.spec_attribute is None:
            raise ParameterError(f"{self.name}: not written into an MJCF")
        element = getattr(mj, self.per)(name)
        current = getattr(element, self.spec_attribute)
        if isinstance(current, np.ndarray):
            current[0] = value
        else:
            setattr(element, self.spec_attribute, value)


PARAMETERS: dict[str, ModelParameter] = {p.name: p for p in (
    ModelParameter("damping", "joint", "dof_damping", None, "N·m·s/rad", spec_attribute="damping"),
    ModelParameter("armature", "joint", "dof_armature", None, "kg·m²", set_const=True, spec_attribute="armature"),
    ModelParameter("frictionloss", "joint", "dof_frictionloss", None, "N·m", spec_attribute="frictionloss"),
    ModelParameter("kp", "actuator", "actuator_gainprm", 0, "N·m/rad"),
    ModelParameter("kd", "actuator", "actuator_biasprm", 2, "N·m·s/rad", negated=True),
    ModelParameter("motor_strength", "actuator", "actuator_gear", 0, "×"),
    ModelParameter("mass", "body", "body_mass", None, "kg", set_const=True),
    ModelParameter("com", "body", "body_ipos", None, "m", set_const=True),
    ModelParameter("inertia", "body", "body_inertia", None, "kg·m²", set_const=True),
    ModelParameter("friction", "geom", "geom_friction", 0, "1", spec_attribute="friction"),
    ModelParameter("thrust_max", "rotor", "actuator_gainprm", 0, "N"),
    ModelParameter("time_constant", "rotor", "actuator_dynprm", 0, "s"),
)}
"""Every parameter by name; see the module docstring."""


def object_ids(model: mujoco.MjModel, spec: RobotSpec, per: Per, names: Sequence[str], *, where: str,
               error: type[Exception] = ParameterError) -> np.ndarray:
    """MuJoCo ids of the named joints, actuators (named by their joints), bodies, geoms or rotors' actuators, (k,)
    in the order given; empty `names`: the spec's joints, its actuated joints, every body but the world and mocap
    bodies, every geom, or the spec's rotors. Raises `error` naming `where` and the missing object."""
    if not names:
        names = {"joint": spec.joint_names, "actuator": spec.actuated_joint_names,
                 "rotor": tuple(rotor.name for rotor in spec.rotors),
                 "body": tuple(model.body(i).name for i in range(1, model.nbody) if not model.body_mocapid[i] >= 0),
                 "geom": tuple(model.geom(i).name for i in range(model.ngeom))}[per]
    ids = []
    for name in names:
        index = mujoco.mj_name2id(model, _OBJECTS[per], name)
        if index < 0 or (per == "body" and index == 0) or (per == "rotor" and name not in [r.name for r in spec.rotors]):
            what = "actuated joint" if per == "actuator" else per
            raise error(f"{where}: no {what} {name!r} in {spec.mjcf.name}")
        ids.append(index)
    return np.array(ids, dtype=np.int64)


def parameter(name: str, *, where: str, error: type[Exception] = ParameterError) -> ModelParameter:
    """The table's row for `name`; raises `error` naming `where` and the known names otherwise."""
    if name not in PARAMETERS:
        raise error(f"{where}: {name!r} is not a model parameter (known: {', '.join(PARAMETERS)})")
    return PARAMETERS[name]


def combine(operation: Operation, nominal: np.ndarray, value: np.ndarray | float) -> np.ndarray:
    """`set`: value; `scale`: nominal × value; `add`: nominal + value (broadcast to nominal's shape)."""
    if operation == "set":
        return np.broadcast_to(value, nominal.shape).copy()
    return nominal * value if operation == "scale" else nominal + value
