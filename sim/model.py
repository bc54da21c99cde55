"""Compile a robot's MJCF with the actuators its RobotSpec and action mode call for.

The MJCF files hold bodies, joints and their passive dynamics; the motors come
from the spec, so the gains the simulator uses are the gains the robot's
drivers are told (Command.kp, Command.kd):

    position mode: a PD actuator per actuated joint, kp and kd from the spec,
                   force clamped to the effort limit; ctrl is the position target
    torque mode:   a motor per actuated joint; ctrl is the effort, clamped
    thrust mode:   a thrust actuator per rotor (multirotors, `_add_rotors`); ctrl is the thrust fraction
"""

from __future__ import annotations

import mujoco
import numpy as np

from s2r.actions import ActionMode
from s2r.sim.terrain import Terrain
from s2r.spec import RobotSpec, SpecError


def compile_model(spec: RobotSpec, mode: ActionMode, *, terrain: Terrain | None = None) -> mujoco.MjModel:
    """The robot's MjModel with one actuator per actuated joint, in spec order; with a `terrain`, its
    heightfield replaces the MJCF's `floor` plane."""
    mj = mujoco.MjSpec.from_file(str(spec.mjcf))
    if terrain is not None:
        terrain.add_to(mj)
    joints = {j.name for j in mj.joints}
    for i, joint in enumerate(spec.joints):
        if joint.name not in joints:
            raise SpecError(f"{spec.source}: joints[{i}].name: no joint {joint.name!r} in {spec.mjcf.name}")
    if len(mj.actuators):
        raise SpecError(f"{spec.mjcf}: actuators come from {spec.source}; remove the MJCF's <actuator> elements")
    for joint in spec.joints:
        if not joint.actuated:
            continue
        act = mj.add_actuator()
        act.name = joint.name
        act.trntype = mujoco.mjtTrn.mjTRN_JOINT
        act.target = joint.name
        if mode == "position":
            act.set_to_position(kp=joint.kp, kv=joint.kd)
            act.forcelimited = True
            act.forcerange = [-joint.effort_limit, joint.effort_limit]
        else:
            act.set_to_motor()
            act.ctrllimited = True
            act.ctrlrange = [-joint.effort_limit, joint.effort_limit]
    if mode == "thrust":
        _add_rotors(mj, spec)
    model = mj.compile()
    _check_floating_base(model, spec)
    for i, joint in enumerate(spec.joints):
        jid = model.joint(joint.name).id
        if model.jnt_limited[jid] and not np.allclose(model.jnt_range[jid], joint.limits, atol=1e-6):
            raise SpecError(
                f"{spec.source}: joints[{i}].limits: {list(joint.limits)} but {spec.mjcf.name} compiles range "
                f"{model.jnt_range[jid].tolist()} (angles in degrees? add <compiler angle=\"radian\"/>)"
            )
    return model


def _add_rotors(mj: mujoco.MjSpec, spec: RobotSpec) -> None:
    """Thrust mode: one actuator per rotor at its site, in spec order; ctrl is the thrust fraction in [0, 1].

    Force rotor_thrust · thrust_max along the site's z axis and the reaction torque direction ·
    torque_constant times that about it (the site transmission's gear), through a first-order lag of
    `time_constant` (MuJoCo's exact filter). The lag acts on thrust: about a hover speed it equals
    L2F's lag on rpm to first order (d thrust = 2 k rpm d rpm has the same time constant).
    """
    sites = {site.name: site for site in mj.sites}
    for i, rotor in enumerate(spec.rotors):
        site = sites.get(rotor.site)
        if site is None:
            raise SpecError(f"{spec.source}: rotors[{i}].site: no site {rotor.site!r} in {spec.mjcf.name}")
        if len(site.userdata) == 0 or site.userdata[0] != rotor.direction:
            raise SpecError(f"{spec.source}: rotors[{i}].direction: {rotor.direction} but {spec.mjcf.name}'s site "
                            f"{rotor.site!r} has user {list(site.userdata)} (the sign of its reaction torque)")
        act = mj.add_actuator()
        act.name = rotor.name
        act.trntype = mujoco.mjtTrn.mjTRN_SITE
        act.target = rotor.site
        act.gear = [0, 0, 1, 0, 0, rotor.direction * rotor.torque_constant]
        act.dyntype = mujoco.mjtDyn.mjDYN_FILTEREXACT
        act.dynprm[0] = rotor.time_constant
        act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        act.gainprm[0] = rotor.thrust_max
        act.biastype = mujoco.mjtBias.mjBIAS_NONE
        act.ctrllimited = True
        act.ctrlrange = [0.0, 1.0]


def _check_floating_base(model: mujoco.MjModel, spec: RobotSpec) -> None:
    """The spec's `floating_base` agrees with the MJCF: a free joint above the spec's joints (a free object
    elsewhere in the scene, such as push-T's block, does not count)."""
    free_bodies = {int(model.jnt_bodyid[j]) for j in np.flatnonzero(model.jnt_type == mujoco.mjtJoint.mjJNT_FREE)}
    floating = False
    bodies = [int(model.jnt_bodyid[model.joint(joint.name).id]) for joint in spec.joints]
    bodies += [int(model.site_bodyid[model.site(rotor.site).id]) for rotor in spec.rotors]   # a multirotor's hull
    for body in bodies:
        while body > 0 and not floating:
            floating = body in free_bodies
            body = int(model.body_parentid[body])
    if spec.floating_base and not floating:
        raise SpecError(f"{spec.source}: floating_base: true, but {spec.mjcf.name} has no free joint above the "
                        "spec's joints (add <freejoint/> to the base body, or set floating_base: false)")
    if floating and not spec.floating_base:
        raise SpecError(f"{spec.source}: floating_base: false (or missing), but the spec's joints hang from a free "
                        f"joint in {spec.mjcf.name} (set floating_base: true)")
