"""The least-squares problem of system identification: a replay model, its parameters and the residual.

`SysidProblem(recording, spec, kinds)` builds the robot's replay model (the MJCF with one
actuator per command channel, `replay_mjspec`), the parameters to fit with their bounds, and
the batched residual `mujoco.sysid` minimizes; `s2r.calibration.sysid.identify` solves it.
Parameter names are `s2r.sim.parameters`' (damping, armature, frictionloss per joint; kp, kd
per motor) and `command_delay_s`, the seconds from a command to its motor.

    problem = SysidProblem(read_recording(path, spec), spec, ["damping", "command_delay_s"])
    problem.residual(problem.params.as_vector())            # (m,), a mean square when summed
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import mujoco
import numpy as np
from mujoco import sysid

from s2r.calibration.recording import Recording
from s2r.sim.model import compile_model
from s2r.sim.parameters import PARAMETERS
from s2r.sim.robot_view import RobotView
from s2r.spec import RobotSpec

if not hasattr(sysid, "optimize"):  # mujoco.sysid hides itself when its extras are missing
    raise ImportError("s2r.calibration.sysid needs mujoco.sysid's dependencies (scipy, absl-py, ...): "
                      "pip install 'mujoco[sysid]'")
SignalType, TimeSeries = sysid.SignalType, sysid.TimeSeries

JOINT_KINDS = tuple(p.name for p in PARAMETERS.values() if p.per == "joint")
"""Per-joint parameters, written into the replay MJCF through `s2r.sim.parameters`."""
GAIN_KINDS = ("kp", "kd")
"""Per-motor gains: the gains the motor realizes, as scales of the replay actuators."""
DELAY = "command_delay_s"
PARAM_KINDS = (*JOINT_KINDS, *GAIN_KINDS, DELAY)
"""What `identify` can fit: per joint, per motor, or the command delay (seconds)."""
UNITS = {**{kind: PARAMETERS[kind].unit for kind in JOINT_KINDS + GAIN_KINDS}, DELAY: "s"}
CHANNELS = ("kp_qstar", "kd_dqstar", "tau_ff", "kp", "kd")
"""The replay controls of one actuated joint: kp·q*, kd·dq*, tau_ff, kp and kd of the command."""
MIN_DURATION_S = 2.0
"""Shorter recordings are refused."""
MIN_EXCURSION = 0.1
"""Peak-to-peak motion (rad or m) that at least one joint must show, with MIN_RMS_VELOCITY."""
MIN_RMS_VELOCITY = 0.1
"""RMS velocity (rad/s or m/s) that the same joint must show; a robot holding a pose has neither."""


class SysidError(ValueError):
    """Identification cannot run on this input, or was asked something it cannot do; says why."""


# --- the replay model -----------------------------------------------------------------------------
def replay_mjspec(spec: RobotSpec) -> mujoco.MjSpec:
    """The robot's MJCF with the replay actuators (CHANNELS per actuated joint, gains 1: the motor law
    of the spec) and a jointpos and a jointvel sensor per spec joint (the measured signals)."""
    compile_model(spec, "position")  # the same checks as the simulator: joints exist, no MJCF actuators
    mj = mujoco.MjSpec.from_file(str(spec.mjcf))
    for joint in spec.joints:
        if not joint.actuated:
            continue
        mjoint = mj.joint(joint.name)
        mjoint.actfrclimited = mujoco.mjtLimited.mjLIMITED_TRUE
        mjoint.actfrcrange = [-joint.effort_limit, joint.effort_limit]
        for channel in CHANNELS:
            act = mj.add_actuator()
            act.name = f"{joint.name}/{channel}"
            act.trntype = mujoco.mjtTrn.mjTRN_JOINT
            act.target = joint.name
            act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
            act.forcelimited = mujoco.mjtLimited.mjLIMITED_FALSE
            if channel in ("kp", "kd"):
                # force = ctrl · (gainprm[1] q + gainprm[2] dq): −kp q and −kd dq with the command's gains
                act.gaintype = mujoco.mjtGain.mjGAIN_AFFINE
                act.gainprm[0] = 0.0
                act.gainprm[1 if channel == "kp" else 2] = -1.0
    for kind, sensor_type in (("q", mujoco.mjtSensor.mjSENS_JOINTPOS), ("dq", mujoco.mjtSensor.mjSENS_JOINTVEL)):
        for joint in spec.joints:
            sensor = mj.add_sensor()
            sensor.name = f"{joint.name}/{kind}"
            sensor.type = sensor_type
            sensor.objtype = mujoco.mjtObj.mjOBJ_JOINT
            sensor.objname = joint.name
    return mj


def _set_gain_scale(mj: mujoco.MjSpec, joint: str, kind: str, scale: float) -> None:
    """The motor realizes `scale` × the commanded kp (or kd)."""
    if kind == "kp":
        mj.actuator(f"{joint}/kp_qstar").gainprm[0] = scale
        mj.actuator(f"{joint}/kp").gainprm[1] = -scale
    else:
        mj.actuator(f"{joint}/kd_dqstar").gainprm[0] = scale
        mj.actuator(f"{joint}/kd").gainprm[2] = -scale


# --- the problem ------------------------------------------------------------------------------------
def _default_bounds(kind: str, nominal: float, spec: RobotSpec, timestep: float) -> tuple[float, float]:
    if kind == DELAY:
        return 0.0, max(2 * spec.control_period, 10 * timestep)
    if kind in GAIN_KINDS:
        return 0.2 * nominal, 3.0 * nominal
    floor = {"damping": 1.0, "armature": 0.05, "frictionloss": 0.5}[kind]
    return 0.0, max(5.0 * nominal, floor)


class SysidProblem:
    """The least-squares problem of one recording: parameters with bounds and the batched residual.

    `params` holds the initial values; `residual(x)` takes x (n,) or a batch (n, k) and returns
    (m,) or (m, k), rolling the k models out on a thread pool. `identify` solves it with
    `mujoco.sysid.optimize`; bench/sysid_cma.py solves the very same one with CMA-ES.
    """

    def __init__(self, recording: Recording, spec: RobotSpec, kinds: Sequence[str], *,
                 bounds: Mapping[str, tuple[float, float]] | None = None, velocity_weight: float = 0.1,
                 command_delay_s: float = 0.0, n_threads: int | None = None) -> None:
        self.recording, self.spec = recording, spec
        unknown = [k for k in kinds if k not in PARAM_KINDS]
        if unknown or not kinds:
            raise SysidError(f"params: {unknown[0] if unknown else 'nothing'!r} is not a parameter kind "
                             f"(known: {', '.join(PARAM_KINDS)})")
        if spec.floating_base:
            raise SysidError(f"{spec.name}: a floating-base robot needs its base pose, which a recording of "
                             "joint_states lacks")
        _check_excitation(recording, spec)
        self.mjspec = replay_mjspec(spec)
        model = self.mjspec.compile()
        self.model = model
        self.timestep = float(model.opt.timestep)
        self.velocity_weight = velocity_weight
        self.view = RobotView(model, spec)
        """The spec's joints in the replay model (its state rows and initial state)."""
        self.params = self._parameters(model, kinds, dict(bounds or {}), command_delay_s)
        self.max_delay = float(self.params[DELAY].max_value[0])
        self._pad = int(math.ceil(self.max_delay / self.timestep)) + 2
        self.control, self.measured, self.initial_state = self._signals(model)
        sequences = sysid.ModelSequences(spec.name, self.mjspec, recording.path.name, self.initial_state,
                                         self.control, self.measured)
        self.residual_fn = sysid.build_residual_fn(
            models_sequences=[sequences], custom_rollout=self._rollout, modify_residual=self._residual,
            resample_true=False, n_threads=n_threads or os.cpu_count() or 1)

    # --- parameters ---
    def _parameters(self, model: mujoco.MjModel, kinds: Sequence[str], bounds: dict[str, tuple[float, float]],
                    command_delay_s: float) -> sysid.ParameterDict:
        spec = self.spec
        used: set[str] = set()

        def bounded(name: str, kind: str, nominal: float) -> tuple[float, float]:
            for key in (name, kind):
                if key in bounds:
                    used.add(key)
                    lo, hi = (float(v) for v in bounds[key])
                    if not lo < hi:
                        raise SysidError(f"bounds {key}: expected lower < upper, got [{lo}, {hi}]")
                    return lo, hi
            return _default_bounds(kind, nominal, spec, self.timestep)

        params = sysid.ParameterDict()
        for kind in (k for k in JOINT_KINDS if k in kinds):
            parameter = PARAMETERS[kind]
            nominals = parameter.nominal(model, self.view.dof_index)
            for joint, nominal in zip(spec.joint_names, nominals.tolist()):
                name = f"{kind}.{joint}"
                params.add(sysid.Parameter(name, nominal, *bounded(name, kind, nominal),
                                           modifier=lambda mj, p, j=joint, w=parameter.write_spec: w(mj, j, p.value[0])))
        for kind in (k for k in GAIN_KINDS if k in kinds):
            for joint in spec.joints:
                nominal = getattr(joint, kind)
                if not joint.actuated or nominal <= 0:
                    continue  # no gain to scale: a passive or torque-controlled joint
                name = f"{kind}.{joint.name}"
                params.add(sysid.Parameter(
                    name, nominal, *bounded(name, kind, nominal),
                    modifier=lambda mj, p, j=joint.name, k=kind, n=nominal: _set_gain_scale(mj, j, k, p.value[0] / n)))
        lo, hi = bounded(DELAY, DELAY, command_delay_s)
        params.add(sysid.Parameter(DELAY, command_delay_s, lo, hi, frozen=DELAY not in kinds))
        unused = set(bounds) - used
        if unused:
            raise SysidError(f"bounds {sorted(unused)[0]}: not a fitted parameter or kind "
                             f"(fitted: {', '.join(params.keys())})")
        if params.size == 0:
            raise SysidError(f"params {', '.join(kinds)}: nothing to fit on {spec.name}")
        return params

    # --- signals ---
    def _signals(self, model: mujoco.MjModel) -> tuple[TimeSeries, TimeSeries, np.ndarray]:
        """The command channels at physics resolution (zero before the first command), the
        measured q and dq at the state stamps after the first, and the initial state; times
        relative to the first state."""
        rec, spec, dt = self.recording, self.spec, self.timestep
        t0 = rec.state_time[0]
        steps = int(math.floor((rec.state_time[-1] - t0) / dt + 1e-6))
        grid = dt * np.arange(-self._pad, steps + 1)
        k = np.searchsorted(rec.command_time - t0, grid + 0.5 * dt, side="right") - 1
        c = rec.commands
        channels = {"kp_qstar": c.kp * c.q, "kd_dqstar": c.kd * c.dq, "tau_ff": c.tau_ff, "kp": c.kp, "kd": c.kd}
        columns = []
        for j in range(len(spec.actuated_joint_names)):
            for channel in CHANNELS:
                column = np.where(k >= 0, channels[channel][np.maximum(k, 0), j], 0.0)
                columns.append(column)
        control = TimeSeries(grid, np.stack(columns, axis=1),
                             {"command": (SignalType.MjCtrl, np.arange(len(columns)))})
        times = rec.state_time - t0
        keep = (times > 0.5 * dt) & (times <= steps * dt + 1e-9)
        measured = TimeSeries(times[keep], np.concatenate([rec.q[keep], rec.dq[keep]], axis=1),
                              {"joints": (SignalType.MjSensor, np.arange(2 * spec.num_joints))})
        qpos = model.qpos0.copy()
        qvel = np.zeros(model.nv)
        self.view.write_joint_state(qpos, qvel, rec.q[0], rec.dq[0])
        return control, measured, sysid.create_initial_state(model, qpos, qvel)

    # --- rollout and residual (called by mujoco.sysid) ---
    def _rollout(self, *, models, datas, control_signal, initial_states, param_dicts, rollout_signal_mapping,
                 rollout_state_mapping, ctrl_mapping):
        """sysid_rollout of each model with the commands delayed by its own delay parameter."""
        controls = []
        for control, params in zip(control_signal, param_dicts):
            # apply_delay writes into the data of the series it is given: hand it a copy.
            own = TimeSeries(control.times, control.data.copy(), control.signal_mapping)
            delayed = sysid.apply_delay(own, "command", params[DELAY])
            controls.append(TimeSeries(delayed.times[self._pad:], delayed.data[self._pad:], ctrl_mapping))
        return sysid.sysid_rollout(models, datas, controls, initial_states, rollout_signal_mapping,
                                   rollout_state_mapping, ctrl_mapping)

    def _joint_columns(self, model: mujoco.MjModel) -> np.ndarray:
        """Columns of q then dq of the spec's joints in a FULLPHYSICS state row (time first)."""
        return np.concatenate([1 + self.view.qpos_index, 1 + model.nq + self.view.dof_index])

    def _residual(self, params, pred_sensordata, measured_sensordata, model, return_pred_all, *, state, **_):
        """(measured − replayed) q and weighted dq at the measured stamps, / sqrt(samples)."""
        predicted = TimeSeries(state[:, 0], state[:, self._joint_columns(model)], measured_sensordata.signal_mapping)
        predicted = predicted.resample(measured_sensordata.times)
        weights = np.repeat([1.0, self.velocity_weight], self.spec.num_joints)
        residual = (measured_sensordata.data - predicted.data) * weights / math.sqrt(len(predicted.times))
        return residual, predicted, measured_sensordata

    # --- public ---
    def residual(self, x: np.ndarray) -> np.ndarray:
        """Residual of the free parameters `x`, (n,) → (m,) or (n, k) → (m, k)."""
        residuals, _, _ = self.residual_fn(x, self.params.copy())
        return np.concatenate(residuals)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Measured stamps (S,) and the replayed q, dq there, (S, 2·num_joints), for free parameters x (n,)."""
        _, predicted, _ = self.residual_fn(np.asarray(x, dtype=np.float64), self.params.copy())
        return predicted[0][0].times, predicted[0][0].data

    def rmse(self, x: np.ndarray) -> float:
        """Joint position RMSE (rad or m) of the replay with free parameters x (n,)."""
        _, predicted = self.predict(x)
        error = self.measured.data[:, :self.spec.num_joints] - predicted[:, :self.spec.num_joints]
        return float(np.sqrt(np.mean(error ** 2)))


def _check_excitation(recording: Recording, spec: RobotSpec) -> None:
    """Refuse a recording too short or too still to identify anything from."""
    if recording.duration < MIN_DURATION_S or len(recording.state_time) < 20:
        raise SysidError(f"{recording.path}: too short to identify from: {recording.duration:.2f} s and "
                         f"{len(recording.state_time)} states (needs at least {MIN_DURATION_S} s and 20 states)")
    excursion = np.ptp(recording.q, axis=0)
    speed = np.sqrt(np.mean(recording.dq ** 2, axis=0))
    if not np.any((excursion >= MIN_EXCURSION) & (speed >= MIN_RMS_VELOCITY)):
        best = int(np.argmax(np.minimum(excursion / MIN_EXCURSION, speed / MIN_RMS_VELOCITY)))
        raise SysidError(f"{recording.path}: no excitation: the joint that moved most, "
                         f"{spec.joint_names[best]}, moved {excursion[best]:.3g} peak to peak at "
                         f"{speed[best]:.3g} RMS velocity; sysid needs a joint with at least {MIN_EXCURSION} and "
                         f"{MIN_RMS_VELOCITY} (record one with `s2r excite`)")


