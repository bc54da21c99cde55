"""What system identification reports and writes: the estimates, a terminal table, the calibrated
spec and MJCF, randomization terms around the identified values, and the fit figure.

    result = identify(...)                                   # a SysidResult
    print(format_result(result))
    files = write_calibration(problem, result, Path("runs/arm_calibrated.yaml"), initial=x0, x=x)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import mujoco
import numpy as np
import yaml

from s2r.calibration.sysid.problem import DELAY, GAIN_KINDS, JOINT_KINDS, SysidProblem
from s2r.sim.parameters import PARAMETERS


@dataclass(frozen=True)
class Estimate:
    """One identified parameter."""

    name: str
    """'damping.shoulder', 'kp.elbow', 'command_delay_s'."""
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
            PARAMETERS[kind].write_spec(mj, joint, value)
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
    around its value: half-width max(2 × CI half-width, 10% of the value), ±50% if not identifiable;
    the command delay in seconds, at least one physics step (`timestep`, s) either side."""
    terms = []
    for name, e in result.params.items():
        kind, _, joint = name.partition(".")
        half = abs(e.ci_high - e.value)
        width = max(2 * half, 0.1 * abs(e.value)) if e.identifiable else 0.5 * abs(e.value)
        term = {"target": kind, "dist": ["uniform", round(max(0.0, e.value - width), 6), round(e.value + width, 6)],
                "operation": "set", "mode": "reset", "names": [joint]}
        if kind == DELAY:  # one value per world, at least a physics step either side
            width = max(width, timestep)
            term.update(dist=["uniform", round(max(0.0, e.value - width), 6), round(e.value + width, 6)])
            del term["names"]
        terms.append(term)
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
