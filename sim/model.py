"""Compile a robot's MJCF with the actuators its RobotSpec and action mode call for.

The MJCF files hold bodies, joints and their passive dynamics; the motors come
from the spec, so the gains the simulator uses are the gains the robot's
drivers are told (Command.kp, Command.kd):

    position mode: a PD actuator per actuated joint, kp and kd from the spec,
                   force clamped to the effort limit; ctrl is the position target
    torque mode:   a motor per actuated joint; ctrl is the effort, clamped
"""

from __future__ import annotations

import mujoco
import numpy as np

from s2r.actions import ActionMode
from s2r.spec import RobotSpec, SpecError


def compile_model(spec: RobotSpec, mode: ActionMode) -> mujoco.MjModel:
    """The robot's MjModel with one actuator per actuated joint, in spec order."""
    mj = mujoco.MjSpec.from_file(str(spec.mjcf))
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
    model = mj.compile()
    for i, joint in enumerate(spec.joints):
        jid = model.joint(joint.name).id
        if model.jnt_limited[jid] and not np.allclose(model.jnt_range[jid], joint.limits, atol=1e-6):
            raise SpecError(
                f"{spec.source}: joints[{i}].limits: {list(joint.limits)} but {spec.mjcf.name} compiles range "
                f"{model.jnt_range[jid].tolist()} (angles in degrees? add <compiler angle=\"radian\"/>)"
            )
    return model
