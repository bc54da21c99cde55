"""Live telemetry in Foxglove: the bridge serves a deploy's topics over Foxglove's WebSocket protocol."""

import json
import os
import struct
import subprocess
import sys
import threading
import time

import pytest
import rclpy
from rclpy.context import Context
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from websockets.sync.client import connect

from s2r.ros import environment
from s2r.ports import free_port
from s2r.ros.qos import TELEMETRY_QOS
from s2r.ros.recorder import TOPICS, type_name

SUBPROTOCOLS = ["foxglove.sdk.v1", "foxglove.websocket.v1"]
MESSAGE_DATA = 0x01
"""Foxglove WebSocket protocol: the opcode of a binary message frame from the server."""


def bridge(port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "s2r.ros.foxglove_bridge", "--ros-args", "-p", f"port:={port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def connect_when_up(port: int, process: subprocess.Popen, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert process.poll() is None, process.stdout.read()
        try:
            return connect(f"ws://127.0.0.1:{port}", subprotocols=SUBPROTOCOLS, open_timeout=2)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no Foxglove server on port {port} within {timeout} s")


@pytest.fixture
def ros_env(monkeypatch) -> dict:
    settings = environment()
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def test_a_foxglove_client_sees_every_deploy_topic_advertised_and_receives_the_robots_joint_states(ros_env):
    port = free_port()
    process = bridge(port, ros_env)
    context = Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("test_publisher", context=context)
    publisher = node.create_publisher(JointState, "joint_states", TELEMETRY_QOS)
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            publisher.publish(JointState(name=["slider", "hinge"], position=[0.25, 3.0], velocity=[0.0, -1.5]))
            time.sleep(0.02)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        with connect_when_up(port, process) as client:
            channels: dict[str, dict] = {}
            deadline = time.monotonic() + 20
            while set(channels) != set(TOPICS) and time.monotonic() < deadline:
                message = client.recv(timeout=10)
                if isinstance(message, str) and json.loads(message)["op"] == "advertise":
                    channels.update({c["topic"]: c for c in json.loads(message)["channels"]})
            # The recorder's topics, with the recordings' schemas: one layout for live runs and MCAP files.
            assert set(channels) == set(TOPICS)
            for topic, channel in channels.items():
                assert channel["encoding"] == "cdr" and channel["schemaEncoding"] == "ros2msg"
                assert channel["schemaName"] == type_name(TOPICS[topic])
            client.send(json.dumps({"op": "subscribe",
                                    "subscriptions": [{"id": 7, "channelId": channels["joint_states"]["id"]}]}))
            while True:
                message = client.recv(timeout=10)
                if isinstance(message, bytes) and message[0] == MESSAGE_DATA:
                    break
            subscription, = struct.unpack_from("<I", message, 1)
            state = deserialize_message(message[13:], JointState)
            assert subscription == 7
            assert list(state.name) == ["slider", "hinge"] and list(state.position) == [0.25, 3.0]
    finally:
        stop.set()
        thread.join()
        node.destroy_node()
        rclpy.shutdown(context=context)
        process.terminate()
        process.wait(timeout=15)


def test_a_port_in_use_is_refused_in_one_line_that_offers_a_free_one(ros_env):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = bridge(port, ros_env)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    line = next(line for line in out.splitlines() if "refusing to start" in line)
    assert f"port {port}: port {port} on 127.0.0.1 is already in use; try port " in line


def test_the_saved_layout_reads_only_topics_the_bridge_and_the_recordings_carry():
    from pathlib import Path

    layout = json.loads((Path(__file__).parent.parent / "docs" / "foxglove" / "s2r_layout.json").read_text())
    topics = set()
    for config in layout["configById"].values():
        paths = [p["value"] for p in config.get("paths", [])] + [config[k] for k in ("topicPath", "topicToRender")
                                                                  if k in config]
        topics.update(path.split(".")[0] for path in paths)
    assert topics and topics <= set(TOPICS), topics - set(TOPICS)


def test_deploy_refuses_a_foxglove_port_in_use_naming_it_and_offering_a_free_one(capsys):
    import socket

    from s2r.apps.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["deploy", "policy.onnx", "--foxglove", str(port)]) == 2
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith(f"s2r deploy: error: --foxglove {port}: port {port} on 127.0.0.1 is already in use; "
                           f"try --foxglove ")
