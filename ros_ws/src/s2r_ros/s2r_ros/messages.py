"""JointState ⇄ RobotState / Command, with the joint names checked, never trusted.

Both directions go through `sensor_msgs/JointState`, whose `name` field is what
makes a joint-order mismatch an error instead of a motion: a message is
reordered by name into the spec's order, and a message with an unknown, missing
or duplicate name, or with arrays whose lengths do not match its names, raises
`MessageError` saying which.

Commands (`joint_command`, actuated joints only) use the fields as the motor
driver's PD law reads them:

    position = q target    (present ⇒ kp is the spec's kp; empty ⇒ kp = 0)
    velocity = dq target   (present ⇒ kd is the spec's kd; empty ⇒ kd = 0)
    effort   = tau_ff      (empty ⇒ 0)

JointState has no gain fields, so the gains come from the robot spec that both
nodes load, and the policy node refuses a contract whose action kp/kd differ
from the spec's (`check_gains`). A torque-mode policy sends effort only; a
position-mode policy sends position and velocity (and a zero effort).

    to_state = StateReader(spec)
    state = to_state(msg)                    # RobotState in spec order, or MessageError
    msg = joint_state_from_state(state, spec)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped, PoseStamped, Twist
from sensor_msgs.msg import Imu, JointState

from s2r.actions import ActionMapping
from s2r.contract import ContractError
from s2r.geometry import yaw_from_quat
from s2r.observations import CMD_VEL, OBJECT_POSE, TARGET
from s2r.spec import RobotSpec
from s2r.state import Command, RobotState


class MessageError(ValueError):
    """A JointState does not fit the robot: unknown, missing or duplicate names, or wrong lengths."""


def to_time(stamp: float) -> Time:
    """A ROS time from seconds since the epoch."""
    nanoseconds = int(round(stamp * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def to_seconds(time: Time) -> float:
    """Seconds since the epoch from a ROS time."""
    return time.sec + time.nanosec * 1e-9


class _NameOrder:
    """Maps a message's `name` list onto the spec's order, caching the last (valid) list seen."""

    def __init__(self, topic: str, expected: Sequence[str], kind: str) -> None:
        self.topic = topic
        self.kind = kind
        self.expected = tuple(expected)
        self.position = {name: i for i, name in enumerate(self.expected)}
        self.cached_names: list[str] | None = None
        self.cached_index: np.ndarray | None = None

    def index(self, names: Sequence[str]) -> np.ndarray:
        """`index[k]`: where the spec's k-th joint sits in the message, (len(expected),) int."""
        if names == self.cached_names:
            return self.cached_index
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name not in self.position:
                raise MessageError(f"{self.topic}: name[{i}] {name!r} is not {self.kind} of this robot "
                                   f"(expected {', '.join(self.expected)})")
            if name in seen:
                raise MessageError(f"{self.topic}: name[{i}] {name!r} appears twice (first at name[{seen[name]}])")
            seen[name] = i
        missing = [name for name in self.expected if name not in seen]
        if missing:
            raise MessageError(f"{self.topic}: joint {missing[0]!r} is missing (got {', '.join(names) or 'no names'})")
        self.cached_names = list(names)
        self.cached_index = np.array([seen[name] for name in self.expected], dtype=np.int64)
        return self.cached_index


def _field(msg: JointState, field: str, index: np.ndarray, topic: str, *, optional: bool) -> np.ndarray | None:
    """`msg.<field>` in spec order; None for an allowed empty field."""
    values = getattr(msg, field)
    if len(values) == 0 and optional:
        return None
    if len(values) != len(msg.name):
        raise MessageError(f"{topic}: {field} has {len(values)} values for {len(msg.name)} names")
    return np.asarray(values, dtype=np.float64)[index]


class StateReader:
    """`joint_states` messages → RobotState (num_joints,) in the spec's joint order.

    position and velocity must be complete; an empty effort reads as zeros.
    The stamp is the message's header stamp in seconds.
    """

    def __init__(self, spec: RobotSpec, topic: str = "joint_states") -> None:
        self.spec = spec
        self.topic = topic
        self.order = _NameOrder(topic, spec.joint_names, "a joint")

    def __call__(self, msg: JointState, imu: Imu | None = None) -> RobotState:
        index = self.order.index(msg.name)
        q = _field(msg, "position", index, self.topic, optional=False)
        dq = _field(msg, "velocity", index, self.topic, optional=False)
        tau = _field(msg, "effort", index, self.topic, optional=True)
        base_quat = base_ang_vel = None
        if imu is not None:
            o, w = imu.orientation, imu.angular_velocity
            base_quat = np.array([o.w, o.x, o.y, o.z])
            base_ang_vel = np.array([w.x, w.y, w.z])
        return RobotState(stamp=to_seconds(msg.header.stamp), q=q, dq=dq,
                          tau=np.zeros(len(q)) if tau is None else tau,
                          base_quat=base_quat, base_ang_vel=base_ang_vel)


def joint_state_from_state(state: RobotState, spec: RobotSpec, msg: JointState | None = None) -> JointState:
    """A `joint_states` message for an unbatched state; header.stamp = state.stamp."""
    msg = msg or JointState(name=list(spec.joint_names))
    msg.header.stamp = to_time(state.stamp)
    msg.position = state.q.tolist()
    msg.velocity = state.dq.tolist()
    msg.effort = state.tau.tolist()
    return msg


def imu_from_state(state: RobotState, msg: Imu | None = None, frame_id: str = "base") -> Imu:
    """An `imu` message for a floating-base state: orientation (x, y, z, w) and angular velocity."""
    msg = msg or Imu()
    msg.header.stamp = to_time(state.stamp)
    msg.header.frame_id = frame_id
    w, x, y, z = (float(v) for v in state.base_quat)
    msg.orientation.w, msg.orientation.x, msg.orientation.y, msg.orientation.z = w, x, y, z
    msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = (float(v) for v in state.base_ang_vel)
    return msg


class CommandReader:
    """`joint_command` messages → Command (num_actuated,) in spec order, gains from the spec.

    Raises MessageError for unknown, duplicate or missing names, a field whose length is
    neither 0 nor the number of names, or a message with no target at all.
    """

    def __init__(self, spec: RobotSpec, topic: str = "joint_command") -> None:
        self.topic = topic
        self.order = _NameOrder(topic, spec.actuated_joint_names, "an actuated joint")
        self.kp = spec.joint_array("kp", actuated_only=True)
        self.kd = spec.joint_array("kd", actuated_only=True)
        self.zeros = np.zeros(len(self.kp))

    def __call__(self, msg: JointState) -> Command:
        index = self.order.index(msg.name)
        q = _field(msg, "position", index, self.topic, optional=True)
        dq = _field(msg, "velocity", index, self.topic, optional=True)
        tau_ff = _field(msg, "effort", index, self.topic, optional=True)
        if q is None and dq is None and tau_ff is None:
            raise MessageError(f"{self.topic}: position, velocity and effort are all empty")
        zeros = self.zeros
        return Command(
            q=zeros.copy() if q is None else q,
            dq=zeros.copy() if dq is None else dq,
            kp=zeros.copy() if q is None else self.kp.copy(),
            kd=zeros.copy() if dq is None else self.kd.copy(),
            tau_ff=zeros.copy() if tau_ff is None else tau_ff,
        )


def joint_state_from_command(command: Command, spec: RobotSpec, mode: str, stamp: Time,
                             msg: JointState | None = None) -> JointState:
    """A `joint_command` message for an unbatched command of a `mode` ('position' | 'torque') policy.

    `stamp` is the header stamp of the state the command was computed from, so the robot
    node can measure state-to-command latency.
    """
    msg = msg or JointState(name=list(spec.actuated_joint_names))
    msg.header.stamp = stamp
    if mode == "position":
        msg.position = command.q.tolist()
        msg.velocity = command.dq.tolist()
    msg.effort = command.tau_ff.tolist()
    return msg


def check_gains(mapping: ActionMapping, spec: RobotSpec) -> None:
    """Raise ContractError naming `action.kp[i]`/`action.kd[i]` where a position-mode policy's gains
    differ from the spec's: JointState carries no gains, so the robot node applies the spec's."""
    if mapping.mode != "position":
        return
    for key in ("kp", "kd"):
        robot = spec.joint_array(key, actuated_only=True)
        for i, (policy_gain, robot_gain) in enumerate(zip(getattr(mapping, key), robot)):
            if abs(policy_gain - robot_gain) > 1e-9 * max(1.0, abs(robot_gain)):
                raise ContractError(f"action.{key}[{i}] ({mapping.joint_names[i]}): policy expects {policy_gain}, "
                                    f"the robot spec has {robot_gain} (the robot node applies the spec's gains)")


def _planar_pose(msg: PoseStamped) -> np.ndarray:
    """(x, y, sin yaw, cos yaw) of a pose, yaw about z (the `object_pose` observation term)."""
    o = msg.pose.orientation
    yaw = yaw_from_quat(np.array([o.w, o.x, o.y, o.z]))
    return np.array([msg.pose.position.x, msg.pose.position.y, np.sin(yaw), np.cos(yaw)])


INPUT_TOPICS = {
    CMD_VEL: ("cmd_vel", Twist, lambda msg: np.array([msg.linear.x, msg.linear.y, msg.angular.z])),
    TARGET: ("target", PointStamped, lambda msg: np.array([msg.point.x, msg.point.y, msg.point.z])),
    OBJECT_POSE: ("object_pose", PoseStamped, _planar_pose),
}
"""Task input → (topic, message type, message → (size,) array): what feeds a policy's task inputs."""
