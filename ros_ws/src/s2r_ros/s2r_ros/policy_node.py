"""policy_node: an exported ONNX policy on a deadline loop, from `joint_states` to `joint_command`.

At start it loads the ONNX file with `s2r.runtime.load_runtime`, which picks the runtime by
the contract's kind (`mlp`: `PolicyRuntime`; `diffusion`: `ChunkedPolicy`, receding horizon,
sampled off the control thread, chunks cross-faded over `blend_steps` ticks; `s2r eval` runs
the same in simulation), and checks the contract in its metadata against the robot's spec:
robot, joint order, action joints, observation sizes, control period, task inputs it can feed and
(position mode) the PD gains the robot node applies. A mismatch ends the process with status
2 and a message that names the field.

The control loop runs on its own thread at absolute deadlines of the contract's control
period (`DeadlineLoop`), not on an rclpy timer, whose wake-ups wait behind every other
callback of the executor. The robot node publishes one state per control period, the moment
it is measured; the loop ticks when that state arrives (the subscription fires the loop's
`TickTrigger`), so the state it acts on is as fresh as the robot made it. Its deadlines lock onto
the states' arrivals, `state_wait_s` after each: a state that is late or lost costs that
wait, after which the tick acts on the newest state it has (unless it is older than
`stale_state_periods`: then no command, and the robot's watchdog takes over). Each tick runs
the policy and publishes the command, stamped with the state's own stamp so the robot node
measures state-to-command latency. Subscriptions, the diagnostics timer and services run on
the executor thread and hand data over under a lock.

    joint_states  sensor_msgs/JointState          in   newest kept (best effort, depth 1)
    imu           sensor_msgs/Imu                 in   robots with an IMU
    cmd_vel       geometry_msgs/Twist             in   policies with a cmd_vel input (vx, vy, yaw rate)
    target        geometry_msgs/PointStamped      in   policies with a target input (x, y, z), base frame
    object_pose   geometry_msgs/PoseStamped       in   policies with an object_pose input (push_t's block:
                                                       x, y and the yaw of the orientation), from perception
    joint_command sensor_msgs/JointState          out  actuated joints, see s2r.ros.messages
    /diagnostics  diagnostic_msgs/DiagnosticArray out  ~1 Hz: period, inference, overruns, safety

Task inputs are zero until their first message. The robot cannot measure an object it
manipulates: its pose comes from whatever tracks it (a camera tracker, motion capture), on
`object_pose` in the robot's base frame. At shutdown a JSON summary is written to
`summary_path` for `s2r deploy`.

    s2r-policy-node --ros-args -p policy:=cartpole.onnx -p summary_path:=policy.json
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import Imu, JointState

from s2r.contract import ContractError
from s2r.hardware.deadline import DEFAULT_SPIN_S, DeadlineLoop, TickTrigger, set_realtime_priority
from s2r.observations import LAST_ACTION
from s2r.reports import SampleWindow, diagnostic_text, percentiles_us, write_json
from s2r.runtime import load_runtime, read_contract
from s2r.runtime.chunking import DEFAULT_BLEND_STEPS
from s2r.spec import SpecError, robot_spec

from .messages import INPUT_TOPICS, MessageError, StateReader, check_gains, joint_state_from_command
from .parameters import Param, declare, non_empty, non_negative, positive, priority
from .qos import COMMAND_QOS, DIAGNOSTICS_QOS, SENSOR_QOS
from .spin import StartupError, run_node

PARAMS = (
    Param("policy", "", "The exported .onnx policy (its contract is in the metadata).", non_empty),
    Param("robot", "", "Robot spec: a shipped robot name or a spec YAML; empty: the contract's robot."),
    Param("stale_state_periods", 3, "A state older than this many control periods is not acted on.", positive),
    Param("state_wait_s", 0.002, "Seconds a tick waits past its state's expected arrival before it acts on the "
          "newest state it has (below half the control period).", non_negative),
    Param("spin_s", DEFAULT_SPIN_S, "Seconds spun (not slept) before each deadline.", non_negative),
    Param("blend_steps", DEFAULT_BLEND_STEPS, "Diffusion policies: ticks over which a new chunk is cross-faded in "
          "(0: none).", non_negative),
    Param("warm_start", False, "Diffusion policies: sample each chunk from the previous one, shifted, with the "
          "last denoising steps only."),
    Param("realtime_priority", 50, "SCHED_FIFO priority of the control thread, 1..99; 0: normal scheduling.",
          priority),
    Param("diagnostics_period_s", 1.0, "Seconds between /diagnostics messages.", positive),
    Param("summary_path", "", "JSON written at shutdown: loop and inference statistics (empty: none)."),
    Param("ready_path", "", "File created when the first command is published, for supervisors (empty: none)."),
)


class PolicyNode(Node):
    """Runs one policy against one robot over ROS 2 topics."""

    def __init__(self) -> None:
        super().__init__("policy_node")
        self.params = p = declare(self, PARAMS)
        try:
            self.spec = robot_spec(p["robot"] or read_contract(p["policy"]).robot)
            self.runtime = load_runtime(p["policy"], self.spec, warm_start=p["warm_start"],
                                        blend_steps=p["blend_steps"], refuse_unused=False)
            check_gains(self.runtime.contract.action, self.spec)
        except (ContractError, SpecError, ValueError) as error:
            raise StartupError(str(error)) from None
        self.contract = self.runtime.contract
        self.input_names = [name for name in self.contract.inputs if name != LAST_ACTION]
        """Task inputs fed from topics; the runtime keeps the last action itself."""
        unknown = [name for name in self.input_names if name not in INPUT_TOPICS]
        if unknown:
            raise StartupError(f"{p['policy']}: inputs.{unknown[0]}: no topic feeds this task input "
                               f"(supported: {', '.join(INPUT_TOPICS)})")
        for warning in self.runtime.warnings:
            self.get_logger().warning(warning)
        self.period = self.contract.control_period
        if not p["spin_s"] < self.period:
            raise StartupError(f"parameter 'spin_s': expected below the control period {self.period} s "
                               f"(got {p['spin_s']})")
        if not p["state_wait_s"] < self.period / 2:
            raise StartupError(f"parameter 'state_wait_s': expected below half the control period "
                               f"{self.period / 2} s (got {p['state_wait_s']})")

        self.lock = threading.Lock()
        """Guards what the executor hands to the control thread (newest state, IMU, inputs)."""
        self.state_msg: JointState | None = None
        self.new_state = TickTrigger()
        """Fired by each state's arrival: the control loop ticks on it."""
        self.imu_msg: Imu | None = None
        self.inputs = {name: np.zeros(self.contract.inputs[name]) for name in self.input_names}
        self.robot_status: dict[str, str] = {}
        """The robot node's newest diagnostic values (safety mode and events)."""
        self.to_state = StateReader(self.spec)
        self.command_msg = JointState(name=list(self.spec.actuated_joint_names))
        self.loop = DeadlineLoop(self.period, spin_s=p["spin_s"], trigger=self.new_state,
                                 trigger_wait_s=p["state_wait_s"])
        self.inference = SampleWindow()
        self.counters = {"commands_published": 0, "stale_state_ticks": 0, "bad_states": 0, "nonfinite_actions": 0,
                         "ticks_before_first_chunk": 0}
        self.window_start = {"periods": 0, "inference": 0, "overruns": 0}
        self.first_command_time: float | None = None
        self.closed = False
        self.failure: str | None = None
        """Set when the control thread died; the process then exits (the robot's watchdog damps)."""

        self.command_pub = self.create_publisher(JointState, "joint_command", COMMAND_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.create_subscription(JointState, "joint_states", self.on_state, SENSOR_QOS)
        if self.spec.imu is not None:
            self.create_subscription(Imu, "imu", self.on_imu, SENSOR_QOS)
        for name in self.input_names:
            topic, msg_type, to_array = INPUT_TOPICS[name]
            self.create_subscription(msg_type, topic, lambda msg, name=name, f=to_array: self.on_input(name, f(msg)),
                                     SENSOR_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, DIAGNOSTICS_QOS)
        self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)

        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run_loop, name="policy_node control loop", daemon=True)
        self.thread.start()
        self.get_logger().info(
            f"policy {p['policy']} for {self.spec.name}: {self.contract.action.num_actions} "
            f"{self.contract.action.mode} actions at {1 / self.period:g} Hz"
            f"{', inputs ' + ', '.join(self.input_names) if self.input_names else ''}")

    # --- executor callbacks ---------------------------------------------------------------------
    def on_state(self, msg: JointState) -> None:
        with self.lock:
            self.state_msg = msg
        self.new_state.fire()

    def on_imu(self, msg: Imu) -> None:
        with self.lock:
            self.imu_msg = msg

    def on_input(self, name: str, value: np.ndarray) -> None:
        with self.lock:
            self.inputs[name] = value

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("s2r robot_node"):
                self.robot_status = {"mode": status.message, **{kv.key: kv.value for kv in status.values}}

    # --- the control loop -----------------------------------------------------------------------
    def run_loop(self) -> None:
        """Tick at each state's arrival (the first one starts the loop) or at the deadline until stopped."""
        problem = set_realtime_priority(self.params["realtime_priority"])
        if problem:
            self.get_logger().warning(problem)
        try:
            while self.loop.wait(self.stop):
                self.tick()
        except Exception as error:
            self.get_logger().fatal(f"control loop died: {traceback.format_exc()}")
            self.failure = f"{type(error).__name__}: {error}"

    def tick(self) -> None:
        """One control period: the newest state → the policy → a command stamped with that state's stamp."""
        with self.lock:
            msg, imu = self.state_msg, self.imu_msg
            inputs = dict(self.inputs)
        try:
            state = self.to_state(msg, imu)
        except MessageError as error:
            self.counters["bad_states"] += 1
            self.get_logger().error(f"state not used: {error}", throttle_duration_sec=1.0)
            return
        age = time.time() - state.stamp
        if not age <= self.params["stale_state_periods"] * self.period:
            self.counters["stale_state_ticks"] += 1
            self.get_logger().warning(f"state is {age * 1e3:.0f} ms old: no command (the robot's watchdog takes over)",
                                      throttle_duration_sec=1.0)
            return
        start = time.perf_counter()
        command = self.runtime.step(state, inputs)
        self.inference.add(time.perf_counter() - start)
        if command is None:  # a diffusion policy's first chunk is still being sampled
            self.counters["ticks_before_first_chunk"] += 1
            return
        if not np.isfinite(command.q).all() or not np.isfinite(command.tau_ff).all():
            self.counters["nonfinite_actions"] += 1
        self.command_pub.publish(joint_state_from_command(command, self.spec, self.contract.action.mode,
                                                          msg.header.stamp, self.command_msg))
        self.counters["commands_published"] += 1
        if self.first_command_time is None:
            self.first_command_time = time.time()
            if self.params["ready_path"]:
                Path(self.params["ready_path"]).write_text(f"{self.first_command_time}\n")

    # --- reports --------------------------------------------------------------------------------
    def loop_stats(self, *, since_periods: int = 0, since_inference: int = 0) -> dict[str, float]:
        return {**self.loop.period_stats(since_periods),
                **percentiles_us(self.inference.since(since_inference), "inference")}

    def publish_diagnostics(self) -> None:
        stats = self.loop_stats(since_periods=self.window_start["periods"],
                                since_inference=self.window_start["inference"])
        new_overruns = self.loop.overruns - self.window_start["overruns"]
        self.window_start = {"periods": self.loop.periods.count, "inference": self.inference.count,
                             "overruns": self.loop.overruns}
        values = {**stats, "overruns": self.loop.overruns, "missed_deadlines": self.loop.missed,
                  "late_states": self.loop.late, **self.counters,
                  **{f"robot_{k}": v for k, v in self.robot_status.items()}}
        level = DiagnosticStatus.WARN if new_overruns or self.counters["stale_state_ticks"] else DiagnosticStatus.OK
        status = DiagnosticStatus(level=level, name=f"s2r policy_node: {Path(self.params['policy']).name}",
                                  hardware_id=self.spec.name,
                                  message=f"{new_overruns} overruns in the last {self.params['diagnostics_period_s']:g} s",
                                  values=[KeyValue(key=k, value=diagnostic_text(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    def summary(self) -> dict[str, Any]:
        """Everything a deploy run reports from the policy side, for the whole run."""
        return {
            "policy": self.params["policy"],
            "robot": self.spec.name,
            "control_hz_target": 1 / self.period,
            "control_hz_achieved": self.loop.achieved_hz(),
            **self.loop_stats(),
            **percentiles_us(self.loop.lateness.values(), "wake_late"),
            **percentiles_us(np.abs(self.loop.phase_error.values()), "phase_error"),
            "ticks": self.loop.ticks,
            "late_states": self.loop.late,
            "overruns": self.loop.overruns,
            "missed_deadlines": self.loop.missed,
            **self.counters,
            "first_command_time": self.first_command_time,
            "robot_status": self.robot_status,
            "contract_warnings": self.runtime.warnings,
            **self.runtime.stats(),
        }

    def close(self) -> None:
        """Stop the control loop and write the summary. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        self.thread.join()
        self.runtime.close()
        summary = self.summary()
        self.get_logger().info(f"stopped after {summary['ticks']} ticks at {summary['control_hz_achieved']:.2f} Hz, "
                               f"period p99 {summary['period_p99_us']:.0f} µs, {summary['overruns']} overruns")
        if self.params["summary_path"]:
            write_json(self.params["summary_path"], summary)


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args, name="policy_node")


if __name__ == "__main__":
    sys.exit(main())
