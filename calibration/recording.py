"""Recordings of commands and states: MCAP files that rosbag2, Foxglove and `s2r sysid` read.

A recording is a chunked MCAP file (profile `ros2`, CDR messages) with the topics of a
deploy run, so a file from `s2r excite` and one from the ROS 2 recorder read the same:

    joint_states         sensor_msgs/JointState, all joints: position/velocity/effort = q, dq, tau;
                         header.stamp = when the state was measured (the robot's clock)
    joint_command        sensor_msgs/JointState, actuated joints: position/velocity/effort =
                         q*, dq*, tau_ff; log time = when the command was written to the robot
                         (same clock), header.stamp = the stamp of the state it was computed from
    /s2r/command_gains   std_msgs/String, JSON {"joints": [...], "kp": [...], "kd": [...]}: the
                         gains of the commands from its log time on; written once at the start
                         and again whenever a command's gains change (the SafetyFilter may lower
                         kp on a tick). A recording without it (the ROS 2 recorder's) reads the
                         ROS convention of `s2r.ros.messages`: a command with positions has the
                         spec's kp, one with velocities the spec's kd, else 0.

It needs `mcap-ros2-support` only: the message definitions are written from the text
below, so no ROS installation is required to write or read one.

    with RecordingWriter("run.mcap", spec) as writer:
        writer.write_state(state)                   # RobotState (num_joints,)
        writer.write_command(command, stamp)        # Command (num_actuated,), seconds
    recording = read_recording("run.mcap", spec)    # Recording: arrays in spec order

Chunks are small and written unbuffered: a writer that dies leaves every complete chunk on
disk, but no index; `read_recording` reads such a truncated file front to back, up to its last
complete chunk (what the writer had not finished is lost, at most one chunk of messages).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer

from s2r.spec import RobotSpec
from s2r.state import Command, RobotState

STATES_TOPIC = "joint_states"
COMMANDS_TOPIC = "joint_command"
GAINS_TOPIC = "/s2r/command_gains"

_TIME = "int32 sec\nuint32 nanosec\n"
_HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"
_SEPARATOR = "=" * 80
JOINT_STATE_DEFINITION = (
    "std_msgs/Header header\n\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n"
    f"{_SEPARATOR}\nMSG: std_msgs/Header\n{_HEADER}{_SEPARATOR}\nMSG: builtin_interfaces/Time\n{_TIME}"
)
"""sensor_msgs/msg/JointState as rosbag2 writes its schema: the .msg, then each dependency."""
STRING_DEFINITION = "string data\n"
"""std_msgs/msg/String."""


class RecordingError(ValueError):
    """A recording cannot be read or lacks what is asked of it; the message names the file."""


def _time(stamp: float) -> dict[str, int]:
    nanoseconds = int(round(stamp * 1e9))
    return {"sec": nanoseconds // 1_000_000_000, "nanosec": nanoseconds % 1_000_000_000}


class RecordingWriter:
    """Writes states, commands and command gains of one robot to an MCAP file; a context manager."""

    def __init__(self, path: str | Path, spec: RobotSpec, *, chunk_size: int = 16384) -> None:
        self.path = Path(path)
        self.spec = spec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Buffered, not raw: the MCAP writer flushes the stream after every chunk, so each
        # finished chunk reaches the disk at once (a raw file it would wrap in a buffer of its
        # own and never flush the summary of).
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._joint_state = self._writer.register_msgdef("sensor_msgs/msg/JointState", JOINT_STATE_DEFINITION)
        self._string = self._writer.register_msgdef("std_msgs/msg/String", STRING_DEFINITION)
        self._sequence = {STATES_TOPIC: 0, COMMANDS_TOPIC: 0, GAINS_TOPIC: 0}
        self._gains: tuple[list[float], list[float]] | None = None
        self.closed = False

    def write_state(self, state: RobotState) -> None:
        """One `joint_states` message, stamped and logged at `state.stamp`."""
        message = {"header": {"stamp": _time(state.stamp), "frame_id": ""}, "name": list(self.spec.joint_names),
                   "position": np.asarray(state.q, dtype=float).tolist(),
                   "velocity": np.asarray(state.dq, dtype=float).tolist(),
                   "effort": np.asarray(state.tau, dtype=float).tolist()}
        self._write(STATES_TOPIC, self._joint_state, message, state.stamp)

    def write_command(self, command: Command, stamp: float, *, state_stamp: float | None = None) -> None:
        """One `joint_command` message logged at `stamp` (seconds, when it was written to the robot);
        `state_stamp` (default `stamp`) is the stamp of the state it was computed from. Its gains go
        to `/s2r/command_gains` first when they differ from the last ones written."""
        gains = (np.asarray(command.kp, dtype=float).tolist(), np.asarray(command.kd, dtype=float).tolist())
        if gains != self._gains:
            self._gains = gains
            text = json.dumps({"joints": list(self.spec.actuated_joint_names), "kp": gains[0], "kd": gains[1]})
            self._write(GAINS_TOPIC, self._string, {"data": text}, stamp)
        header_stamp = stamp if state_stamp is None else state_stamp
        message = {"header": {"stamp": _time(header_stamp), "frame_id": ""},
                   "name": list(self.spec.actuated_joint_names),
                   "position": np.asarray(command.q, dtype=float).tolist(),
                   "velocity": np.asarray(command.dq, dtype=float).tolist(),
                   "effort": np.asarray(command.tau_ff, dtype=float).tolist()}
        self._write(COMMANDS_TOPIC, self._joint_state, message, stamp)

    def _write(self, topic: str, schema: Any, message: dict, stamp: float) -> None:
        log_time = int(round(stamp * 1e9))
        self._writer.write_message(topic, schema, message, log_time=log_time, publish_time=log_time,
                                   sequence=self._sequence[topic])
        self._sequence[topic] += 1

    def close(self) -> None:
        """Write the last chunk, the index and the footer; safe to call twice."""
        if not self.closed:
            self.closed = True
            self._writer.finish()
            self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class Recording:
    """States and commands of one run, in the spec's joint order; times in seconds on the robot's clock."""

    path: Path
    state_time: np.ndarray
    """(N,) stamps of the states, increasing."""
    q: np.ndarray
    """(N, num_joints) measured positions."""
    dq: np.ndarray
    """(N, num_joints) measured velocities."""
    tau: np.ndarray
    """(N, num_joints) measured efforts."""
    command_time: np.ndarray
    """(M,) times the commands were written to the robot, increasing."""
    commands: Command
    """The M commands, fields (M, num_actuated)."""

    @property
    def duration(self) -> float:
        """Seconds from the first to the last state."""
        return float(self.state_time[-1] - self.state_time[0]) if len(self.state_time) else 0.0


def _ordered(path: Path, topic: str, names: list[str], expected: tuple[str, ...], index: int) -> np.ndarray:
    """Where each expected joint sits in a message's names; RecordingError naming the joint otherwise."""
    position = {name: i for i, name in enumerate(names)}
    missing = [name for name in expected if name not in position]
    if missing:
        raise RecordingError(f"{path}: {topic}[{index}]: joint {missing[0]!r} is missing "
                             f"(the message has {', '.join(names) or 'no names'})")
    return np.array([position[name] for name in expected], dtype=np.int64)


def _field(path: Path, topic: str, message: Any, field: str, order: np.ndarray, index: int,
           *, empty_ok: bool) -> np.ndarray | None:
    values = list(getattr(message, field))
    if not values and empty_ok:
        return None
    if len(values) != len(message.name):
        raise RecordingError(f"{path}: {topic}[{index}].{field}: {len(values)} values for {len(message.name)} names")
    return np.asarray(values, dtype=np.float64)[order]


def _messages(path: Path) -> list[tuple[str, Any, int]]:
    """(topic, decoded message, log_time_ns) of every message, in log-time order."""
    try:
        with open(path, "rb") as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            try:
                summary = reader.get_summary()
            except (McapError, EOFError, struct.error):
                summary = None
            if summary is None:   # the writer did not finish: no index, no footer
                stream.seek(0)
                return _streamed(stream)
            return [(channel.topic, decoded, message.log_time)
                    for _, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True)]
    except OSError as error:
        raise RecordingError(f"{path}: cannot read recording ({error.strerror})") from None
    except RecordingError:
        raise
    except (McapError, ValueError, EOFError, KeyError, IndexError) as error:
        raise RecordingError(f"{path}: not a readable MCAP recording, truncated or corrupt "
                             f"({type(error).__name__}: {error})") from None


def _streamed(stream: Any) -> list[tuple[str, Any, int]]:
    """(topic, decoded message, log_time_ns) of every message in the complete chunks of an MCAP
    stream without a summary (its writer died), read front to back, in log-time order."""
    factory = DecoderFactory()
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    decoders: dict[int, Any] = {}
    messages = []
    try:
        for record in StreamReader(stream).records:
            if isinstance(record, Schema):
                schemas[record.id] = record
            elif isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, Message):
                channel = channels[record.channel_id]
                if channel.id not in decoders:
                    decoders[channel.id] = factory.decoder_for(channel.message_encoding, schemas[channel.schema_id])
                messages.append((channel.topic, decoders[channel.id](record.data), record.log_time))
    except (McapError, EOFError, struct.error):   # the cut-off tail: the chunk being written when it died
        pass
    return sorted(messages, key=lambda message: message[2])


def read_recording(path: str | Path, spec: RobotSpec) -> Recording:
    """The states and commands of an MCAP recording, reordered by name into the spec's joint order.

    A file its writer did not finish (no index) is read up to its last complete chunk. Raises
    RecordingError naming the file and what is wrong: unreadable or corrupt, a topic
    missing, a joint missing from a message, fields whose lengths do not match the names.
    """
    path = Path(path)
    messages = _messages(path)
    topics = {topic for topic, _, _ in messages}
    for topic in (STATES_TOPIC, COMMANDS_TOPIC):
        if topic not in topics:
            raise RecordingError(f"{path}: topic {topic!r} is missing (topics: {', '.join(sorted(topics)) or 'none'})")
    actuated = spec.actuated_joint_names
    spec_kp = spec.joint_array("kp", actuated_only=True)
    spec_kd = spec.joint_array("kd", actuated_only=True)
    zeros = np.zeros(len(actuated))
    gains: tuple[np.ndarray, np.ndarray] | None = None
    states: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []
    commands: list[tuple] = []
    counts = {STATES_TOPIC: 0, COMMANDS_TOPIC: 0, GAINS_TOPIC: 0}
    for topic, message, log_time in messages:
        if topic not in counts:
            continue
        index = counts[topic]
        counts[topic] += 1
        if topic == GAINS_TOPIC:
            gains = _gains(path, message.data, actuated, index)
        elif topic == STATES_TOPIC:
            order = _ordered(path, topic, list(message.name), spec.joint_names, index)
            q = _field(path, topic, message, "position", order, index, empty_ok=False)
            dq = _field(path, topic, message, "velocity", order, index, empty_ok=False)
            tau = _field(path, topic, message, "effort", order, index, empty_ok=True)
            stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
            states.append((stamp, q, dq, zeros if tau is None else tau))
        else:
            order = _ordered(path, topic, list(message.name), actuated, index)
            q = _field(path, topic, message, "position", order, index, empty_ok=True)
            dq = _field(path, topic, message, "velocity", order, index, empty_ok=True)
            tau_ff = _field(path, topic, message, "effort", order, index, empty_ok=True)
            if gains is not None:
                kp, kd = gains
            else:
                kp, kd = (zeros if q is None else spec_kp), (zeros if dq is None else spec_kd)
            commands.append((log_time * 1e-9, zeros if q is None else q, zeros if dq is None else dq, kp, kd,
                             zeros if tau_ff is None else tau_ff))
    for topic in (STATES_TOPIC, COMMANDS_TOPIC):
        if counts[topic] == 0:
            raise RecordingError(f"{path}: topic {topic!r} has no messages")
    states.sort(key=lambda s: s[0])
    state_time = np.array([s[0] for s in states])
    if np.any(np.diff(state_time) <= 0):
        raise RecordingError(f"{path}: {STATES_TOPIC}: two states share a stamp; stamps must increase")
    columns = [np.array([c[k] for c in commands]) for k in range(6)]
    return Recording(path=path, state_time=state_time, q=np.array([s[1] for s in states]),
                     dq=np.array([s[2] for s in states]), tau=np.array([s[3] for s in states]),
                     command_time=columns[0],
                     commands=Command(q=columns[1], dq=columns[2], kp=columns[3], kd=columns[4], tau_ff=columns[5]))


def _gains(path: Path, text: str, actuated: tuple[str, ...], index: int) -> tuple[np.ndarray, np.ndarray]:
    where = f"{path}: {GAINS_TOPIC}[{index}]"
    try:
        data = json.loads(text)
        names, kp, kd = list(data["joints"]), data["kp"], data["kd"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise RecordingError(f"{where}: expected JSON {{joints, kp, kd}} ({error})") from None
    if len(kp) != len(names) or len(kd) != len(names):
        raise RecordingError(f"{where}: kp and kd need one value per joint ({len(names)} joints)")
    order = _ordered(path, GAINS_TOPIC, names, actuated, index)
    return np.asarray(kp, dtype=np.float64)[order], np.asarray(kd, dtype=np.float64)[order]
