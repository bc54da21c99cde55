"""foxglove_bridge: a deploy run's topics, live, to Foxglove over its WebSocket protocol (`foxglove-sdk`).

The robot's state (`joint_states`, `imu`), its commands (`joint_command`), the task inputs, and
the safety events and loop figures (`/diagnostics`) are forwarded as the recorder writes them:
the serialized CDR bytes rclpy hands over (`raw=True`), on channels with the same topic names
and the same `ros2msg` schemas as the MCAP recordings. So one Foxglove layout
(docs/foxglove/s2r_layout.json) shows a live run and a recording alike. It runs in its own
process: nothing it does can delay the control loop.

    s2r-foxglove-bridge --ros-args -p port:=8765      # then Foxglove: Open connection, ws://localhost:8765
"""

from __future__ import annotations

import sys
import time

import foxglove
from rclpy.node import Node

from s2r.ports import port_taken_message

from .parameters import Param, declare
from .qos import RECORD_QOS
from .recorder import TOPICS, message_definition, type_name
from .spin import StartupError, run_node

DEFAULT_PORT = 8765
"""Foxglove's own default WebSocket port."""

PARAMS = (
    Param("host", "127.0.0.1", "Address to serve on (0.0.0.0: every interface)."),
    Param("port", DEFAULT_PORT, "TCP port of the WebSocket server."),
    Param("topics", list(TOPICS), f"Topics to serve, among {', '.join(TOPICS)}."),
)


class FoxgloveBridgeNode(Node):
    """Subscribes to the deploy topics and serves each message to Foxglove clients as it arrives."""

    def __init__(self) -> None:
        super().__init__("foxglove_bridge")
        params = declare(self, PARAMS)
        unknown = [t for t in params["topics"] if t not in TOPICS]
        if unknown:
            raise StartupError(f"parameter 'topics': unknown topic {unknown[0]!r} (known: {', '.join(TOPICS)})")
        try:
            self.server = foxglove.start_server(name="s2r", host=params["host"], port=params["port"])
        except RuntimeError as error:
            if "in use" in str(error):
                raise StartupError(port_taken_message("port", params["host"], params["port"])) from None
            raise StartupError(f"parameter 'port': {error}") from None
        self.channels: dict[str, foxglove.Channel] = {}
        for topic in params["topics"]:
            schema = foxglove.Schema(name=type_name(TOPICS[topic]), encoding="ros2msg",
                                     data=message_definition(TOPICS[topic]).encode())
            self.channels[topic] = foxglove.Channel(topic, message_encoding="cdr", schema=schema)
            self.create_subscription(TOPICS[topic], topic, lambda data, topic=topic: self._forward(topic, data),
                                     RECORD_QOS, raw=True)
        self.get_logger().info(f"serving {', '.join(params['topics'])} to Foxglove on "
                               f"ws://{params['host']}:{self.server.port}")

    def _forward(self, topic: str, data: bytes) -> None:
        self.channels[topic].log(data, log_time=time.time_ns())

    def close(self) -> None:
        """Stop the server (clients see it close); safe to call twice."""
        if self.server is not None:
            self.server.stop()
            self.server = None


def main(args: list[str] | None = None) -> int:
    return run_node(FoxgloveBridgeNode, args, name="foxglove_bridge")


if __name__ == "__main__":
    sys.exit(main())
