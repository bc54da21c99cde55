"""System identification: fit a robot's MuJoCo model to a recording of it, with `mujoco.sysid`.

The recorded commands drive a replay of the model from the recorded initial state, and
`mujoco.sysid` (box-constrained least squares over batched `mujoco.rollout` rollouts, with
confidence intervals) finds the parameters whose replay matches the measured joints best:

    per joint:   damping, armature, frictionloss        (the MJCF's passive dynamics)
    per motor:   kp, kd                                  (the gains the drivers realize)
    once:        delay                                   (seconds from command to motor)

    result = identify(Path("arm.mcap"), robot_spec("arm"), ["damping", "armature", "delay"],
                      out=Path("runs/arm_calibrated.yaml"))
    result.params["damping.shoulder"].value, result.rmse_before, result.rmse_after

The replay applies SimRobot's motor law, tau = clip(kp (q* − q) + kd (dq* − dq) + tau_ff, ±effort),
with time-varying gains: each actuated joint gets five actuators whose controls are the command's
channels (kp·q*, kd·dq*, tau_ff, kp, kd) and whose summed force the joint clamps to its effort
limit (`actfrcrange`). A fitted kp or kd scales what the commands ask for: the motor realizes
(kp_fit / kp_spec) × the commanded kp. The delay shifts the control signal (`apply_delay`, linear
interpolation between physics steps, so a fractional delay blends two commands within a step).

Residual: measured minus replayed joint positions (rad or m) and velocities (× `velocity_weight`
seconds) at the recorded state stamps, over sqrt(samples), so the cost is a mean square.
Confidence intervals (95%) come from the Jacobian at the optimum (`calculate_intervals`); they
assume independent residuals and are therefore optimistic. A parameter the data cannot pin down
(an infinite or huge interval) and a parameter stuck at a bound are flagged with a warning.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import mujoco
import numpy as np
import yaml
from mujoco import sysid

from s2r.calibration.recording import Recording, read_recording
from s2r.sim.model import compile_model
from s2r.spec import RobotSpec

if not hasattr(sysid, "optimize"):  # mujoco.sysid hides itself when its extras are missing
    raise ImportError("s2r.calibration.sysid needs mujoco.sysid's dependencies (scipy, absl-py, ...): "
                      "pip install 'mujoco[sysid]'")
SignalType, TimeSeries = sysid.SignalType, sysid.TimeSeries

log = logging.getLogger(__name__)

PARAM_KINDS = ("damping", "armature", "frictionloss", "kp", "kd", "delay")
"""What `identify` can fit: per joint, per motor, or the command delay."""
JOINT_KINDS = ("damping", "armature", "frictionloss")
GAIN_KINDS = ("kp", "kd")
UNITS = {"damping": "N·m·s/rad", "armature": "kg·m²", "frictionloss": "N·m", "kp": "N·m/rad", "kd": "N·m·s/rad",
         "delay": "s"}
CHANNELS = ("kp_qstar", "kd_dqstar", "tau_ff", "kp", "kd")
"""The replay controls of one actuated joint: kp·q*, kd·dq*, tau_ff, kp and kd of the command."""
MIN_DURATION_S = 2.0
"""Shorter recordings are refused."""
MIN_EXCURSION = 0.1
"""Peak-to-peak motion (rad or m) that at least one joint must show, with MIN_RMS_VELOCITY."""
MIN_RMS_VELOCITY = 0.1
"""RMS velocity (rad/s or m/s) that the same joint must show; a robot holding a pose has neither."""
HUGE_CI = 0.5
"""A 95% half-width above this fraction of a parameter's magnitude marks it not identifiable."""


class SysidError(ValueError):
    """Identification cannot run on this input, or was asked something it cannot do; says why."""


@dataclass(frozen=True)
class Estimate:
    """One identified parameter."""

    name: str
    """'damping.shoulder', 'kp.elbow', 'delay'."""
    value: float
    initial: float
    """The model's (or spec's) value before identification."""
    ci_low: float
    """95% confidence interval; ±inf where the data cannot pin the parameter down."""
    ci_high: float
    lower: float
    """The bounds the fit was held within."""
    upper: float
    unit: str
    identifiable: bool
    at_bound: Literal["lower", "upper"] | None


@dataclass
class SysidResult:
    """What `identify` found and wrote."""

    params: dict[str, Estimate]
    rmse_before: float
    """Joint position RMSE (rad or m) of the replay with the initial parameters."""
    rmse_after: float
    """The same with the identified parameters."""
    wall_s: float
    warnings: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    """'spec', 'mjcf', 'randomization', 'figure', 'result' → the files written (with `out`)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: params name → value, initial, ci_low, ci_high, ..., and the totals."""
        return {"params": {name: {k: v for k, v in asdict(e).items() if k != "name"} for name, e in self.params.items()},
                "rmse_before": self.rmse_before, "rmse_after": self.rmse_after, "wall_s": self.wall_s,
                "warnings": list(self.warnings), "files": {k: str(v) for k, v in self.files.items()}}


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


def _set_joint(mj: mujoco.MjSpec, joint: str, kind: str, value: float) -> None:
    mjoint = mj.joint(joint)
    if kind == "damping":
        mjoint.damping[0] = value
    else:
        setattr(mjoint, kind, value)


# --- the problem ------------------------------------------------------------------------------------
def _default_bounds(kind: str, nominal: float, spec: RobotSpec, timestep: float) -> tuple[float, float]:
    if kind == "delay":
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
                 delay: float = 0.0, n_threads: int | None = None) -> None:
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
        self.params = self._parameters(model, kinds, dict(bounds or {}), delay)
        self.max_delay = float(self.params["delay"].max_value[0])
        self._pad = int(math.ceil(self.max_delay / self.timestep)) + 2
        self.control, self.measured, self.initial_state = self._signals(model)
        sequences = sysid.ModelSequences(spec.name, self.mjspec, recording.path.name, self.initial_state,
                                         self.control, self.measured)
        self.residual_fn = sysid.build_residual_fn(
            models_sequences=[sequences], custom_rollout=self._rollout, modify_residual=self._residual,
            resample_true=False, n_threads=n_threads or os.cpu_count() or 1)

    # --- parameters ---
    def _parameters(self, model: mujoco.MjModel, kinds: Sequence[str], bounds: dict[str, tuple[float, float]],
                    delay: float) -> sysid.ParameterDict:
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
            field_name = {"damping": "dof_damping", "armature": "dof_armature", "frictionloss": "dof_frictionloss"}[kind]
            for joint in spec.joints:
                nominal = float(getattr(model, field_name)[model.joint(joint.name).dofadr[0]])
                name = f"{kind}.{joint.name}"
                params.add(sysid.Parameter(name, nominal, *bounded(name, kind, nominal),
                                           modifier=lambda mj, p, j=joint.name, k=kind: _set_joint(mj, j, k, p.value[0])))
        for kind in (k for k in GAIN_KINDS if k in kinds):
            for joint in spec.joints:
                nominal = getattr(joint, kind)
                if not joint.actuated or nominal <= 0:
                    continue  # no gain to scale: a passive or torque-controlled joint
                name = f"{kind}.{joint.name}"
                params.add(sysid.Parameter(
                    name, nominal, *bounded(name, kind, nominal),
                    modifier=lambda mj, p, j=joint.name, k=kind, n=nominal: _set_gain_scale(mj, j, k, p.value[0] / n)))
        name = "delay"
        lo, hi = bounded(name, name, delay)
        params.add(sysid.Parameter(name, delay, lo, hi, frozen="delay" not in kinds))
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
        for i, joint in enumerate(spec.joints):
            qpos[model.joint(joint.name).qposadr[0]] = rec.q[0, i]
            qvel[model.joint(joint.name).dofadr[0]] = rec.dq[0, i]
        return control, measured, sysid.create_initial_state(model, qpos, qvel)

    # --- rollout and residual (called by mujoco.sysid) ---
    def _rollout(self, *, models, datas, control_signal, initial_states, param_dicts, rollout_signal_mapping,
                 rollout_state_mapping, ctrl_mapping):
        """sysid_rollout of each model with the commands delayed by its own delay parameter."""
        controls = []
        for control, params in zip(control_signal, param_dicts):
            # apply_delay writes into the data of the series it is given: hand it a copy.
            own = TimeSeries(control.times, control.data.copy(), control.signal_mapping)
            delayed = sysid.apply_delay(own, "command", params["delay"])
            controls.append(TimeSeries(delayed.times[self._pad:], delayed.data[self._pad:], ctrl_mapping))
        return sysid.sysid_rollout(models, datas, controls, initial_states, rollout_signal_mapping,
                                   rollout_state_mapping, ctrl_mapping)

    def _joint_columns(self, model: mujoco.MjModel) -> np.ndarray:
        """Columns of q then dq of the spec's joints in a FULLPHYSICS state row (time first)."""
        qpos = [1 + model.joint(j).qposadr[0] for j in self.spec.joint_names]
        qvel = [1 + model.nq + model.joint(j).dofadr[0] for j in self.spec.joint_names]
        return np.array(qpos + qvel)

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


# --- identification ---------------------------------------------------------------------------------
def identify(recording: Path, spec: RobotSpec, params: Sequence[str], *, out: Path | None = None,
             bounds: Mapping[str, tuple[float, float]] | None = None, velocity_weight: float = 0.1,
             max_iters: int = 50, plot: bool = True) -> SysidResult:
    """Fit `params` (kinds from PARAM_KINDS) of the spec's model to an MCAP recording.

    bounds: per kind ('damping') or per parameter ('damping.yaw') → (lower, upper), replacing
    the defaults. With `out` (the calibrated spec YAML to write) it also writes, beside it,
    OUT.xml (the MJCF with the identified passive dynamics), OUT_randomization.yaml (ranges
    centred on the identified values), OUT_fit.png (measured vs replayed joints, before and
    after) and OUT_sysid.json (this result).
    """
    start = time.perf_counter()
    problem = SysidProblem(read_recording(recording, spec), spec, params, bounds=bounds, velocity_weight=velocity_weight)
    initial = problem.params.as_vector()
    start_params = problem.params.copy().move_off_bounds()
    trace = io.StringIO()
    solved, result = sysid.optimize(start_params, problem.residual_fn, optimizer="mujoco", verbose=False,
                                    max_iters=max_iters, output=trace)
    log.debug("mujoco.minimize trace:\n%s", trace.getvalue())
    x = solved.as_vector()
    residual_star = problem.residual(x)
    _, half_widths = sysid.calculate_intervals([residual_star], np.asarray(result.jac))
    estimates, warnings = _estimates(problem, initial, x, half_widths)
    for message in warnings:
        log.warning(message)
    outcome = SysidResult(params=estimates, rmse_before=problem.rmse(initial), rmse_after=problem.rmse(x),
                          wall_s=0.0, warnings=warnings)
    if out is not None:
        outcome.files = write_calibration(problem, outcome, Path(out), initial=initial, x=x, plot=plot)
    outcome.wall_s = time.perf_counter() - start
    if out is not None:
        outcome.files["result"].write_text(json.dumps(outcome.to_dict(), indent=2, default=float) + "\n")
    return outcome


def parse_bounds(entries: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    """`--bound NAME=LO:HI` entries ('damping=0:2', 'kp.elbow=20:60') → {name: (lo, hi)}."""
    bounds = {}
    for entry in entries or ():
        name, _, span = entry.partition("=")
        try:
            lo, hi = (float(v) for v in span.split(":"))
        except ValueError:
            raise SysidError(f"--bound {entry!r}: expected NAME=LO:HI, e.g. damping.shoulder=0:2") from None
        bounds[name.strip()] = (lo, hi)
    return bounds


def format_result(result: SysidResult) -> str:
    """A plain-text table of the estimates and the RMSEs for the terminal (the warnings go to the log)."""
    lines = [f"{'parameter':<24}{'initial':>11}{'identified':>12}  {'95% interval':<26}{'unit':<11}note"]
    for name, e in result.params.items():
        interval = f"[{e.ci_low:.4g}, {e.ci_high:.4g}]"
        note = "NOT IDENTIFIABLE" if not e.identifiable else f"at {e.at_bound} bound" if e.at_bound else ""
        lines.append(f"{name:<24}{e.initial:>11.4g}{e.value:>12.5g}  {interval:<26}{e.unit:<11}{note}")
    lines.append(f"position RMSE {result.rmse_before:.4g} → {result.rmse_after:.4g} "
                 f"(× {result.rmse_after / max(result.rmse_before, 1e-300):.3g}), {result.wall_s:.1f} s")
    lines += [f"wrote {kind}: {path}" for kind, path in result.files.items()]
    return "\n".join(lines)


def _estimates(problem: SysidProblem, initial: np.ndarray, x: np.ndarray,
               half_widths: np.ndarray) -> tuple[dict[str, Estimate], list[str]]:
    estimates: dict[str, Estimate] = {}
    warnings: list[str] = []
    free = [p for p in problem.params.values() if not p.frozen]
    for i, param in enumerate(free):
        kind = param.name.split(".")[0]
        value, lo, hi, width = float(x[i]), float(param.min_value[0]), float(param.max_value[0]), float(half_widths[i])
        magnitude = max(abs(value), abs(float(initial[i])), problem.timestep if kind == "delay" else 1e-6)
        identifiable = math.isfinite(width) and width <= HUGE_CI * magnitude
        ci = (value - width, value + width) if math.isfinite(width) else (-math.inf, math.inf)
        if not identifiable:
            warnings.append(f"{param.name}: not identifiable from this recording (95% interval ±{width:.3g} around "
                            f"{value:.4g}): excite the joint more, or do not fit it")
        tolerance = 1e-3 * (hi - lo)
        at_bound = "lower" if value - lo <= tolerance else "upper" if hi - value <= tolerance else None
        if at_bound:
            bound = lo if at_bound == "lower" else hi
            warnings.append(f"{param.name}: stuck at its {at_bound} bound {bound:.4g}; the data's optimum may lie "
                            f"outside [{lo:.4g}, {hi:.4g}] (widen it with bounds / --bound {param.name}=LO:HI)")
        estimates[param.name] = Estimate(param.name, value, float(initial[i]), ci[0], ci[1], lo, hi,
                                         UNITS[kind], identifiable, at_bound)
    return estimates, warnings


# --- what identification writes ---------------------------------------------------------------------
def write_calibration(problem: SysidProblem, result: SysidResult, out: Path, *, initial: np.ndarray,
                      x: np.ndarray, plot: bool = True) -> dict[str, Path]:
    """The calibrated spec YAML at `out` and, beside it, its MJCF, the randomization YAML and the figure.

    Parameters flagged not identifiable keep their initial value in the spec and MJCF.
    """
    spec = problem.spec
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {"spec": out, "mjcf": out.with_suffix(".xml"),
             "randomization": out.with_name(f"{out.stem}_randomization.yaml"),
             "result": out.with_name(f"{out.stem}_sysid.json")}
    trusted = {name: e.value for name, e in result.params.items() if e.identifiable}

    mj = mujoco.MjSpec.from_file(str(spec.mjcf))
    if len(mj.meshes) or len(mj.textures) or len(mj.hfields) or len(mj.skins):
        root = spec.mjcf.parent  # the copy lives elsewhere: point it at the original's assets
        for key in ("meshdir", "texturedir"):
            setattr(mj, key, str((root / getattr(mj, key)).resolve()) + os.sep)
    for name, value in trusted.items():
        kind, _, joint = name.partition(".")
        if kind in JOINT_KINDS:
            _set_joint(mj, joint, kind, value)
    files["mjcf"].write_text(f"<!-- {spec.mjcf.name} calibrated by s2r sysid from {problem.recording.path.name} -->\n"
                             + mj.to_xml())

    data = yaml.safe_load(Path(spec.source).read_text()) if spec.source else spec.to_dict()
    data["mjcf"] = files["mjcf"].name
    for joint in data["joints"]:
        for kind in GAIN_KINDS:
            if f"{kind}.{joint['name']}" in trusted:
                joint[kind] = round(trusted[f"{kind}.{joint['name']}"], 6)
    joints = data.pop("joints")
    files["spec"].write_text(
        f"# {spec.name} calibrated by `s2r sysid` from {problem.recording.path.name}: kp/kd are the gains its\n"
        f"# motors realize; damping, armature and frictionloss are in {files['mjcf'].name}.\n"
        + yaml.safe_dump(data, sort_keys=False) + "joints:\n" + _flow_items(joints, "  "))
    files["randomization"].write_text(
        f"# Ranges centred on the values `s2r sysid` identified from {problem.recording.path.name}, half-widths\n"
        "# max(2 x the 95% interval, 10% of the value); parameters it could not identify get ±50%.\n"
        + _flow_items(randomization_terms(result, problem.timestep)))
    if plot:
        files["figure"] = out.with_name(f"{out.stem}_fit.png")
        plot_fit(problem, initial, x, files["figure"], result)
    return files


def _flow_items(items: list[dict[str, Any]], indent: str = "") -> str:
    """A YAML list with one flow mapping per line, as the hand-written files have it."""
    return "".join(f"{indent}- {yaml.safe_dump(item, default_flow_style=True, sort_keys=False, width=1 << 16)}"
                   for item in items)


def randomization_terms(result: SysidResult, timestep: float) -> list[dict[str, Any]]:
    """`s2r.sim.randomization` terms (as YAML data) that `set` each identified parameter uniformly
    around its value: half-width max(2 × CI half-width, 10% of the value), ±50% if not identifiable."""
    terms = []
    for name, e in result.params.items():
        kind, _, joint = name.partition(".")
        half = abs(e.ci_high - e.value)
        width = max(2 * half, 0.1 * abs(e.value)) if e.identifiable else 0.5 * abs(e.value)
        if kind == "delay":
            width = max(width, timestep)
            lo, hi = max(0.0, (e.value - width) / timestep), (e.value + width) / timestep
            terms.append({"target": "action_delay", "dist": ["uniform", round(lo, 3), round(hi, 3)],
                          "operation": "set", "mode": "reset"})
            continue
        terms.append({"target": kind, "dist": ["uniform", round(max(0.0, e.value - width), 6), round(e.value + width, 6)],
                      "operation": "set", "mode": "reset", "names": [joint]})
    return terms


def plot_fit(problem: SysidProblem, initial: np.ndarray, x: np.ndarray, path: Path, result: SysidResult) -> Path:
    """PNG: per joint, measured q against the replay before and after identification."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = problem.spec
    times, before = problem.predict(initial)
    _, after = problem.predict(x)
    measured = problem.measured.data
    fig, axes = plt.subplots(spec.num_joints, 2, figsize=(14, 2.2 * spec.num_joints), sharex=True, squeeze=False)
    for i, (left, right) in enumerate(axes):
        left.plot(times, measured[:, i], color="black", lw=1.6, label="measured")
        left.plot(times, before[:, i], color="tab:red", lw=0.9, ls="--", label="model before")
        left.plot(times, after[:, i], color="tab:blue", lw=0.9, label="model after")
        left.set_ylabel(f"{spec.joint_names[i]}: q")
        right.plot(times, measured[:, i] - before[:, i], color="tab:red", lw=0.9, label="before")
        right.plot(times, measured[:, i] - after[:, i], color="tab:blue", lw=0.9, label="after")
        right.set_ylabel("measured − model")
        for ax in (left, right):
            ax.grid(alpha=0.3)
    axes[0][0].legend(loc="upper right", ncol=3, fontsize=8)
    axes[0][1].legend(loc="upper right", ncol=2, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time since the first state (s)")
    fig.suptitle(f"{spec.name}: {problem.recording.path.name} — position RMSE {result.rmse_before:.4g} → "
                 f"{result.rmse_after:.4g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
