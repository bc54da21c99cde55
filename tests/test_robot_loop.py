"""The one-process robot loop as a robot meets it: SimRobot in real time, a policy hosted in the loop.

No ROS here (tests/test_ros_deploy.py runs the loop inside robot_node); nothing asserts on timing.
"""

import time
from pathlib import Path

import numpy as np
import pytest

from s2r.hardware.robot_loop import LoopConfig, RobotLoop, TaskInputs
from s2r.hardware.safety import SafetyFilter
from s2r.spec import robot_spec
from s2r.state import Command, RobotState

pytest.importorskip("mujoco")

from s2r.sim.sim_robot import SimRobot, load_sim_robot_config

ROOT = Path(__file__).resolve().parent.parent
HANGING = ROOT / "hardware" / "configs" / "cartpole_hanging.yaml"
TEST_LOOP = LoopConfig(realtime_priority=0, lock_memory=False)


class ScriptedRuntime:
    """A runtime that pushes the cart with a constant effort, raising or returning NaN when told to."""

    rehearses = False
    computed_inputs = ()
    optional_inputs = {}

    def __init__(self, spec, *, fail_after: int | None = None, nan_after: int | None = None) -> None:
        self.spec, self.fail_after, self.nan_after, self.steps, self.resets = spec, fail_after, nan_after, 0, 0
        self.seen_inputs = []

    def step(self, state, inputs=None):
        self.steps += 1
        self.seen_inputs.append(dict(inputs or {}))
        if self.fail_after is not None and self.steps > self.fail_after:
            raise RuntimeError("onnxruntime: simulated failure")
        effort = np.nan if self.nan_after is not None and self.steps > self.nan_after else 1.0
        zeros = np.zeros(1)
        return Command(q=zeros, dq=zeros, kp=zeros, kd=zeros, tau_ff=np.array([effort]))

    def reset(self, ids=None):
        self.resets += 1

    def stats(self):
        return {}


class RehearsingRuntime(ScriptedRuntime):
    """The scripted runtime with a rehearsal that notes the state it ran on and how many steps came before."""

    rehearses = True

    def __init__(self, spec, *, rehearsal_fails: bool = False) -> None:
        super().__init__(spec)
        self.rehearsal_fails, self.rehearsed, self.stepped = rehearsal_fails, [], []

    def step(self, state, inputs=None):
        self.stepped.append(state.stamp)
        return super().step(state, inputs)

    def rehearse(self, state, inputs=None):
        self.rehearsed.append((state.stamp, self.steps))
        if self.rehearsal_fails:
            raise RuntimeError("onnxruntime: simulated failure")


def run_loop(runtime, seconds: float, inputs: TaskInputs | None = None):
    spec = robot_spec("cartpole")
    with SimRobot(spec, load_sim_robot_config(HANGING)) as robot:
        loop = RobotLoop(robot, SafetyFilter(spec, spec.control_period), runtime=runtime, inputs=inputs,
                         config=TEST_LOOP, log=lambda message: None)
        loop.enable()
        loop.start()
        time.sleep(seconds)
        loop.stop()
        return loop


def test_the_hosted_cartpole_policy_takes_over_from_the_soft_start_acting_on_every_measurement_once(cartpole_onnx):
    from s2r.runtime import load_runtime

    spec = robot_spec("cartpole")
    loop = run_loop(load_runtime(cartpole_onnx, spec), 3.0)  # the pole's swing-up: tests/test_ros_deploy.py
    stats = loop.stats()
    assert loop.failure is None and stats["policy_errors"] == 0 and stats["loop_errors"] == 0
    # Late and stale ticks (a measurement past its deadline, or none new) depend on the machine's load
    # (2 of 145 at load 9): bench.deploy counts them; here the policy must act on nearly every tick.
    assert stats["ticks"] >= 120 and stats["stale_ticks"] <= 5
    assert stats["ticks_with_policy"] >= stats["ticks"] - 5
    assert loop.safety.mode == "running" and loop.safety.events["watchdog"] == 0
    records = []
    while not loop.telemetry.empty():
        records.append(loop.telemetry.get())
    stamps = [r.state.stamp for r in records if r.state is not None]
    assert len(stamps) >= stats["ticks"] - 1 and len(set(stamps)) == len(stamps), "each measurement once"
    assert all(r.command is not None for r in records[2:] if r.state is not None)


def test_the_loop_rehearses_the_policy_on_its_newest_state_before_each_new_one_is_due():
    runtime = RehearsingRuntime(robot_spec("cartpole"))
    loop = run_loop(runtime, 1.5)
    stats = loop.stats()
    assert loop.failure is None and stats["rehearsal_errors"] == 0
    # How many ticks find time for one before their state depends on the machine's load (bench.deploy counts them).
    assert 0 < stats["rehearsals"] == len(runtime.rehearsed) <= stats["ticks"]
    assert loop.safety.events["nan_guard"] == 0 and loop.safety.mode == "running"
    warmup = LoopConfig().warmup_steps
    for stamp, steps in runtime.rehearsed:   # the newest step's state again, between two steps, never a step
        assert steps > warmup and stamp == runtime.stepped[steps - 1]
    assert stats["ticks_with_policy"] == runtime.steps - warmup, "a rehearsal is not a step"


@pytest.mark.parametrize("robot", ["cartpole", "go2"])
def test_a_rehearsed_safety_filter_sends_what_it_would_have_sent_without_rehearsals(robot):
    """Soft start, running, a NaN, lost states, the e-stop and its release: the same commands and counts."""
    spec = robot_spec(robot)
    plain, rehearsed = SafetyFilter(spec, spec.control_period), SafetyFilter(spec, spec.control_period)
    rng = np.random.default_rng(0)
    n, period = len(spec.actuated_index), spec.control_period
    kp = spec.joint_array("kp", actuated_only=True)
    previous = None
    for k in range(300):
        now = 100.0 + k * period
        q = spec.default_q + rng.normal(0.0, 0.3, spec.num_joints)
        base = {"base_quat": np.array([1.0, 0.0, 0.0, 0.0]), "base_ang_vel": np.zeros(3)} if spec.floating_base else {}
        state = None if 120 <= k < 126 else RobotState(now, q, np.zeros(spec.num_joints), np.zeros(spec.num_joints),
                                                       **base)
        command = None if k % 9 == 4 else Command(q=rng.normal(0.0, 2.0, n), dq=rng.normal(0.0, 30.0, n), kp=2.5 * kp,
                                                  kd=rng.uniform(0.0, 3.0, n), tau_ff=rng.normal(0.0, 40.0, n))
        if k == 90:
            command = Command(*(np.full(n, np.nan) for _ in range(5)))
        if k == 150:
            plain.estop(), rehearsed.estop()
        if k == 160:
            plain.reset_estop(), rehearsed.reset_estop()
        rehearsed.rehearse(None, previous, now - 0.001)
        expected, sent = plain.filter(command, state, now), rehearsed.filter(command, state, now)
        for key in ("q", "dq", "kp", "kd", "tau_ff"):
            assert np.array_equal(getattr(sent, key), getattr(expected, key)), f"tick {k}: {key}"
        assert rehearsed.report() == plain.report(), f"tick {k}"
        previous = state
    assert plain.events["soft_start"] and plain.events["nan_guard"] and plain.events["watchdog"] and plain.mode == "running"


def test_a_rehearsal_that_raises_is_counted_and_the_policy_still_drives_the_robot():
    loop = run_loop(RehearsingRuntime(robot_spec("cartpole"), rehearsal_fails=True), 1.5)
    stats = loop.stats()
    assert loop.failure is None and stats["rehearsal_errors"] == stats["rehearsals"] > 0
    assert stats["policy_errors"] == stats["loop_errors"] == 0 and loop.safety.events["nan_guard"] == 0


def test_a_deadline_loop_prepares_once_before_each_tick_unless_the_tick_is_due_first():
    import threading

    from s2r.hardware.deadline import DeadlineLoop

    events = []
    loop = DeadlineLoop(0.02, prepare=lambda: events.append("prepare"), prepare_s=0.003)
    stop = threading.Event()
    while len(events) < 40 and loop.wait(stop):
        events.append("tick")
    assert events[0] == "tick", "the first deadline is now: no time to prepare"
    pairs = "".join("p" if e == "prepare" else "t" for e in events)
    assert "pp" not in pairs and pairs.count("p") == loop.prepared > 0
    with pytest.raises(ValueError, match="DeadlineLoop prepare_s: expected 0 <= prepare_s < period / 2"):
        DeadlineLoop(0.02, trigger_wait_s=0.002, prepare_s=0.009)


def test_a_deadline_loop_starts_a_slow_preparation_early_enough_that_it_ends_before_the_tick():
    """A preparation that takes 4 ms (a cold policy step and filter on a loaded machine), to end 0.5 ms before
    each deadline: after the first, it starts as early as it takes, so the ticks do not wait for it."""
    import threading

    from s2r.hardware.deadline import DeadlineLoop

    ends, ticks = [], []

    def slow_prepare() -> None:
        end = time.monotonic() + 0.004
        while time.monotonic() < end:
            pass
        ends.append(time.monotonic())

    loop = DeadlineLoop(0.02, prepare=slow_prepare, prepare_s=0.0005)
    stop = threading.Event()
    while len(ticks) < 25 and loop.wait(stop):
        ticks.append(loop.served)
    assert loop.prepare_estimate >= 0.004
    pairs = list(zip(ends[1:], ticks[2:]))   # the first ran at the fixed 0.5 ms, not knowing its duration yet
    before = sum(end < tick for end, tick in pairs)
    # Started 0.5 ms before each tick, every one would run into it; a loaded machine delays a few.
    assert before >= len(pairs) // 2, f"{len(pairs) - before} of {len(pairs)} preparations ran into their tick"
    longest = loop.prepare_estimate
    loop.prepare = lambda: None   # shorter ones from now on: the plan comes down slowly, not at once
    loop.wait(stop)
    loop.wait(stop)
    assert 0.8 * longest < loop.prepare_estimate < longest


def test_a_loop_traces_where_each_tick_went_and_a_runtime_that_needs_no_rehearsal_is_not_rehearsed():
    runtime = ScriptedRuntime(robot_spec("cartpole"))
    runtime.rehearse = lambda state, inputs=None: pytest.fail("rehearsed a runtime whose rehearses is False")
    spec = robot_spec("cartpole")
    with SimRobot(spec, load_sim_robot_config(HANGING)) as robot:
        loop = RobotLoop(robot, SafetyFilter(spec, spec.control_period), runtime=runtime,
                         config=LoopConfig(realtime_priority=0, lock_memory=False, trace_ticks=30),
                         log=lambda message: None)
        loop.enable()
        loop.start()
        time.sleep(1.0)
        loop.stop()
    trace = loop.trace.arrays()
    assert loop.stats()["rehearsals"] == 0 and loop.trace.ticks == 30 == len(trace["wake"])
    assert loop.trace.thread_id > 0
    acted = np.isfinite(trace["stepped"])
    assert acted.sum() >= 25
    for earlier, later in (("stamp", "wake"), ("wake", "read"), ("read", "stepped"), ("stepped", "written")):
        assert (trace[earlier][acted] <= trace[later][acted]).all(), f"{earlier} after {later}"
    assert (np.diff(trace["wake_nvcsw"]) >= 0).all() and np.isnan(trace["rehearse_start"]).all()


def test_a_triggered_deadline_loop_whose_first_input_came_late_locks_onto_the_inputs_within_its_first_ticks():
    """A robot whose first announcement came 6 ms late (its process was starting up): the loop's
    deadlines jump to their place behind the arrivals, instead of crawling there tick by tick, each late."""
    import threading

    from s2r.hardware.deadline import PHASE_ACQUIRE_TICKS, DeadlineLoop, TickTrigger

    trigger, stop = TickTrigger(), threading.Event()
    start = time.monotonic() + 0.05

    def announce() -> None:   # the first arrival at `start`, then every 20 ms on a phase 6 ms later
        for k in range(80):
            due = start + (0.006 + 0.02 * k if k else 0.0)
            while (left := due - time.monotonic()) > 0 and not stop.wait(left):
                pass
            if stop.is_set():
                return
            trigger.fire()

    thread = threading.Thread(target=announce)
    thread.start()
    loop = DeadlineLoop(0.02, trigger=trigger, trigger_wait_s=0.002)
    late = []
    for _ in range(60):
        loop.wait(stop)
        late.append(loop.late)
    stop.set()
    thread.join()
    after = late[-1] - late[PHASE_ACQUIRE_TICKS + 2]
    assert after <= 2, f"{after} late ticks once locked on (of {len(late) - PHASE_ACQUIRE_TICKS - 3})"


def test_a_policy_that_raises_sends_the_robot_to_damping_and_the_loop_goes_on():
    runtime = ScriptedRuntime(robot_spec("cartpole"), fail_after=80)
    loop = run_loop(runtime, 2.5)
    stats = loop.stats()
    assert loop.failure is None and stats["policy_errors"] >= 20
    assert loop.safety.mode == "damping" and loop.safety.events["nan_guard"] >= 20
    assert runtime.resets == 1 and stats["ticks"] > 100, "warmed up once, then ticked on"


def test_a_policy_that_returns_nan_is_caught_by_the_nan_guard():
    loop = run_loop(ScriptedRuntime(robot_spec("cartpole"), nan_after=80), 2.5)
    assert loop.stats()["nonfinite_actions"] >= 20 and loop.safety.events["nan_guard"] >= 20
    assert loop.safety.mode == "damping"


def test_a_stalled_cmd_vel_publisher_falls_back_to_standing_still():
    inputs = TaskInputs({"cmd_vel": 3}, timeout_s=0.2)
    inputs.set("cmd_vel", np.array([0.5, 0.0, 0.3]))
    assert inputs.read()["cmd_vel"].tolist() == [0.5, 0.0, 0.3]
    time.sleep(0.25)  # the publisher stalls
    assert inputs.read()["cmd_vel"].tolist() == [0.0, 0.0, 0.0] and inputs.fallbacks["cmd_vel"] == 1
    pose = TaskInputs({"object_pose": 4}, timeout_s=0.2)
    pose.set("object_pose", np.array([0.1, 0.2, 0.0, 1.0]))
    time.sleep(0.25)
    assert pose.read()["object_pose"].tolist() == [0.1, 0.2, 0.0, 1.0], "a tracked pose keeps its newest value"


def test_the_loop_feeds_the_policy_the_task_inputs_without_waiting_for_them():
    inputs = TaskInputs({"cmd_vel": 3}, timeout_s=10.0)
    runtime = ScriptedRuntime(robot_spec("cartpole"))
    inputs.set("cmd_vel", np.array([0.2, 0.0, 0.0]))
    run_loop(runtime, 0.5, inputs)
    assert runtime.seen_inputs[-1]["cmd_vel"].tolist() == [0.2, 0.0, 0.0]


def test_a_loop_config_with_a_bad_field_is_refused_naming_it():
    with pytest.raises(ValueError, match="LoopConfig.stale_state_periods: expected an integer >= 1"):
        LoopConfig(stale_state_periods=0)
    with pytest.raises(ValueError, match="LoopConfig.rehearse_s: expected seconds >= 0"):
        LoopConfig(rehearse_s=-0.001)
    with pytest.raises(ValueError, match="LoopConfig.trace_ticks: expected an integer >= 0"):
        LoopConfig(trace_ticks=-1)


# --- a policy file checked whole at load --------------------------------------------------------
def relabelled(source: Path, target: Path, **changes) -> Path:
    """A copy of an exported policy whose contract says something its graph does not do."""
    import json

    import onnx

    from s2r.contract import METADATA_KEY

    model = onnx.load(str(source))
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            contract = json.loads(entry.value)
            contract.update(changes)
            entry.value = json.dumps(contract)
    onnx.save(model, str(target))
    return target


def test_a_policy_whose_graph_disagrees_with_its_contract_is_refused_at_load_and_by_info(cartpole_onnx, tmp_path):
    import subprocess
    import sys

    from s2r.contract import ContractError
    from s2r.runtime import load_runtime

    bad = relabelled(cartpole_onnx, tmp_path / "history2.onnx", history_length=2)
    with pytest.raises(ContractError, match=r"graph input 'obs': shape \[batch, 7\], the contract expects "
                                            r"\[batch, 14\] \(obs_dim 7 × history_length 2\)"):
        load_runtime(bad, robot_spec("cartpole"))
    for args in (("info", str(bad)), ("deploy", str(bad), "--duration", "1", "--domain-id", "random",
                                      "--out", str(tmp_path / "run"))):
        run = subprocess.run([sys.executable, "-m", "s2r.apps.cli", *args], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2, run.stderr
        assert "graph input 'obs': shape [batch, 7]" in run.stderr and "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
