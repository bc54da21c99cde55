"""Identification: solve a recording's `SysidProblem` with `mujoco.sysid` and judge each estimate.

    result = identify(Path("arm.mcap"), robot_spec("arm"), ["damping", "command_delay_s"],
                      out=Path("runs/arm_calibrated.yaml"))
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from mujoco import sysid

from s2r.calibration.recording import read_recording
from s2r.calibration.sysid.problem import DELAY, UNITS, SysidError, SysidProblem
from s2r.calibration.sysid.report import Estimate, SysidResult, write_calibration
from s2r.spec import RobotSpec

log = logging.getLogger("s2r.calibration.sysid")

HUGE_CI = 0.5
"""A 95% half-width above this fraction of a parameter's magnitude marks it not identifiable."""


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


def _estimates(problem: SysidProblem, initial: np.ndarray, x: np.ndarray,
               half_widths: np.ndarray) -> tuple[dict[str, Estimate], list[str]]:
    estimates: dict[str, Estimate] = {}
    warnings: list[str] = []
    free = [p for p in problem.params.values() if not p.frozen]
    for i, param in enumerate(free):
        kind = param.name.split(".")[0]
        value, lo, hi, width = float(x[i]), float(param.min_value[0]), float(param.max_value[0]), float(half_widths[i])
        magnitude = max(abs(value), abs(float(initial[i])), problem.timestep if kind == DELAY else 1e-6)
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


