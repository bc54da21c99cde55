"""recorder: every topic of a deploy run into one chunked MCAP file, rosbag2- and Foxglove-readable.

Subscriptions take the serialized CDR bytes (`raw=True`) and write them as they came, so a
message is never decoded and re-encoded, and the recorder costs a few microseconds per
message. It runs in its own process with its own executor: nothing it does can delay a
control loop. The file uses the `ros2` MCAP profile (schemas are `ros2msg` definitions with
their dependencies, messages `cdr`), is written unbuffered in small zstd chunks, and so a
process that is killed leaves a file whose every complete chunk is readable
(`read_recording` reads one); SIGINT and SIGTERM close it with its index.

    s2r-recorder --ros-args -p path:=run.mcap
    for topic, msg, log_time_ns in read_recording("run.mcap"): ...

Why not `mcap_ros2.writer.Writer`: it encodes Python message objects with its own dynamic
encoder, which cannot encode the `byte` fields of rclpy messages (DiagnosticStatus.level);
the raw bytes rclpy hands over are exact. The MCAP layout is the same (`mcap.writer`,
profile `ros2`), and `mcap_ros2` reads the files.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseStamped, Twist
from mcap.exceptions import EndOfFile
from mcap.reader import NonSeekingReader, make_reader
from mcap.well_known import MessageEncoding, Profile, SchemaEncoding
from mcap.writer import CompressionType, Writer
from mcap_ros2.decoder import DecoderFactory
from rclpy.node import Node
from rosidl_parser.definition import AbstractNestedType, NamespacedType
from sensor_msgs.msg import Imu, JointState

from .parameters import Param, declare, non_empty, positive
from .qos import RECORD_QOS
from .spin import StartupError, run_node

TOPICS: dict[str, type] = {
    "joint_states": JointState,
    "joint_command": JointState,
    "imu": Imu,
    "cmd_vel": Twist,
    "target": PointStamped,
    "object_pose": PoseStamped,
    "/diagnostics": DiagnosticArray,
}
"""The topics of a deploy run and their types."""

PARAMS = (
    Param("path", "", "The .mcap file to write (overwritten).", non_empty),
    Param("topics", list(TOPICS), f"Topics to record, among {', '.join(TOPICS)}."),
    Param("chunk_size", 16384, "Bytes per MCAP chunk: at most this much is lost when the process is killed.",
          positive),
)


def type_name(msg_type: type) -> str:
    """'sensor_msgs/msg/JointState' for sensor_msgs.msg.JointState."""
    package, kind = msg_type.__module__.split(".")[:2]
    return f"{package}/{kind}/{msg_type.__name__}"


def _msg_file(package: str, name: str) -> Path:
    """The .msg file of package/msg/name under AMENT_PREFIX_PATH or this Python's prefix (the wheels' share/)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        path = Path(prefix, "share", package, "msg", f"{name}.msg")
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {package}/msg/{name}.msg under {', '.join(prefixes)}")


def _dependencies(msg_type: type) -> list[tuple[str, str]]:
    """The (package, name) of every message type `msg_type` contains, depth first, each once."""
    found: list[tuple[str, str]] = []

    def visit(slot: Any) -> None:
        if isinstance(slot, AbstractNestedType):
            slot = slot.value_type
        if isinstance(slot, NamespacedType):
            key = (slot.namespaces[0], slot.name)
            if key not in found:
                found.append(key)
                nested = getattr(importlib.import_module(".".join(slot.namespaces)), slot.name)
                for inner in nested.SLOT_TYPES:
                    visit(inner)

    for slot in msg_type.SLOT_TYPES:
        visit(slot)
    return found


def message_definition(msg_type: type) -> str:
    """The `ros2msg` schema text rosbag2 writes: the type's .msg, then each dependency's after a separator."""
    package = msg_type.__module__.split(".")[0]
    parts = [_msg_file(package, msg_type.__name__).read_text()]
    for dep_package, dep_name in _dependencies(msg_type):
        parts.append("=" * 80 + f"\nMSG: {dep_package}/{dep_name}\n" + _msg_file(dep_package, dep_name).read_text())
    return "\n".join(parts)


class McapRecording:
    """An MCAP file open for ROS 2 messages in CDR; `add` serialized messages, `close` to write the index."""

    def __init__(self, path: str | Path, *, chunk_size: int = 16384) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._writer.start(profile=Profile.ROS2, library="s2r recorder")
        self._channels: dict[str, int] = {}
        self._sequence: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        """Messages written per topic."""
        self.closed = False

    def add_topic(self, topic: str, msg_type: type) -> None:
        schema = self._writer.register_schema(type_name(msg_type), SchemaEncoding.ROS2,
                                              message_definition(msg_type).encode())
        self._channels[topic] = self._writer.register_channel(topic, MessageEncoding.CDR, schema)
        self._sequence[topic] = 0
        self.counts[topic] = 0

    def add(self, topic: str, data: bytes, log_time_ns: int) -> None:
        """Write one serialized message of a registered topic, received at `log_time_ns`."""
        self._writer.add_message(self._channels[topic], log_time=log_time_ns, data=data,
                                 publish_time=log_time_ns, sequence=self._sequence[topic])
        self._sequence[topic] += 1
        self.counts[topic] += 1
        # A finished chunk reaches the file now, not when the buffer fills: what a kill can
        # lose is the chunk being built. Flushing an empty buffer costs nothing.
        self._file.flush()

    def close(self) -> None:
        """Write the last chunk, the index and the footer; safe to call twice."""
        if not self.closed:
            self.closed = True
            self._writer.finish()
            self._file.close()


def read_recording(path: str | Path) -> Iterator[tuple[str, Any, int]]:
    """(topic, decoded message, log_time_ns) for every message, in file order.

    A closed file is read through its index; a file whose writer was killed is streamed up
    to its last complete chunk.
    """
    decoders = [DecoderFactory()]
    with open(path, "rb") as stream:
        try:
            reader = make_reader(stream, decoder_factories=decoders)
            reader.get_summary()
            items = list(reader.iter_decoded_messages(log_time_order=False))
        except Exception:  # no footer or summary: a truncated file, streamed below
            items = None
        if items is not None:
            for _, channel, message, decoded in items:
                yield channel.topic, decoded, message.log_time
            return
        stream.seek(0)
        try:
            for _, channel, message, decoded in NonSeekingReader(stream, decoder_factories=decoders) \
                    .iter_decoded_messages(log_time_order=False):
                yield channel.topic, decoded, message.log_time
        except EndOfFile:
            return


def is_closed(path: str | Path) -> bool:
    """Whether an MCAP file ends with its footer (closed by its writer), not cut short."""
    with open(path, "rb") as stream:
        try:
            return make_reader(stream).get_summary() is not None
        except Exception:  # mcap raises several types for a file without a footer
            return False


def recover_recording(path: str | Path) -> dict[str, int]:
    """Rewrite a recording cut short (its writer killed, the power lost) as a closed one, with index
    and statistics, keeping every message of its complete chunks; the cut file stays beside it as
    `NAME.mcap.truncated`. Returns the messages kept per topic. rosbag2 and `s2r sysid` read the result.

        if not is_closed("run.mcap"): recover_recording("run.mcap")
    """
    path = Path(path)
    cut = path.with_name(path.name + ".truncated")
    path.replace(cut)
    counts: dict[str, int] = {}
    with open(cut, "rb") as source, open(path, "wb") as target:
        writer = Writer(target, compression=CompressionType.ZSTD)
        writer.start(profile=Profile.ROS2, library="s2r recorder (recovered)")
        schemas: dict[int, int] = {}
        channels: dict[int, int] = {}
        try:
            for schema, channel, message in NonSeekingReader(source).iter_messages(log_time_order=False):
                if channel.id not in channels:
                    if schema is not None and schema.id not in schemas:
                        schemas[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
                    channels[channel.id] = writer.register_channel(
                        channel.topic, channel.message_encoding, schemas[schema.id] if schema else 0,
                        dict(channel.metadata))
                writer.add_message(channels[channel.id], log_time=message.log_time, data=message.data,
                                   publish_time=message.publish_time, sequence=message.sequence)
                counts[channel.topic] = counts.get(channel.topic, 0) + 1
        except Exception:  # noqa: BLE001 - the cut (EndOfFile, a partial chunk): the messages before it are kept
            pass
        writer.finish()
    return counts


class RecorderNode(Node):
    """Subscribes to the configured topics and writes what it hears to an MCAP file."""

    def __init__(self) -> None:
        super().__init__("recorder")
        params = declare(self, PARAMS)
        unknown = [t for t in params["topics"] if t not in TOPICS]
        if unknown:
            raise StartupError(f"parameter 'topics': unknown topic {unknown[0]!r} (known: {', '.join(TOPICS)})")
        self.recording = McapRecording(params["path"], chunk_size=params["chunk_size"])
        for topic in params["topics"]:
            self.recording.add_topic(topic, TOPICS[topic])
            self.create_subscription(TOPICS[topic], topic, lambda data, topic=topic: self._on_message(topic, data),
                                     RECORD_QOS, raw=True)
        self.get_logger().info(f"recording {', '.join(params['topics'])} to {self.recording.path}")

    def _on_message(self, topic: str, data: bytes) -> None:
        if not self.recording.closed:
            self.recording.add(topic, data, time.time_ns())

    def close(self) -> None:
        """Close the file with its index; logs what it holds."""
        if not self.recording.closed:
            self.recording.close()
            counts = ", ".join(f"{t}: {n}" for t, n in self.recording.counts.items())
            self.get_logger().info(f"closed {self.recording.path} ({counts})")


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args, name="recorder")


if __name__ == "__main__":
    sys.exit(main())
