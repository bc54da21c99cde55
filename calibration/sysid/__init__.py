"""System identification: fit a robot's MuJoCo model to a recording of it, with `mujoco.sysid`.

Parameter names are those of `s2r.sim.parameters` (randomization and SimRobot configs use
the same), plus `command_delay_s`. The package's modules follow its jobs: `problem` (the
replay model, the parameters and the residual), `fit` (`identify`: solve and judge each
estimate) and `report` (the result, the terminal table, the calibrated spec and MJCF,
randomization terms and the figure).

The recorded commands drive a replay of the model from the recorded initial state, and
`mujoco.sysid` (box-constrained least squares over batched `mujoco.rollout` rollouts, with
confidence intervals) finds the parameters whose replay matches the measured joints best:

    per joint:   damping, armature, frictionloss        (the MJCF's passive dynamics)
    per motor:   kp, kd                                  (the gains the drivers realize)
    once:        command_delay_s                         (seconds from command to motor)

    result = identify(Path("arm.mcap"), robot_spec("arm"), ["damping", "armature", "command_delay_s"],
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

from s2r.calibration.sysid.fit import identify, parse_bounds
from s2r.calibration.sysid.problem import PARAM_KINDS, SysidError, SysidProblem, replay_mjspec
from s2r.calibration.sysid.report import (
                                          Estimate,
                                          SysidResult,
                                          format_result,
                                          plot_fit,
                                          randomization_terms,
                                          write_calibration,
)

__all__ = ["PARAM_KINDS", "Estimate", "SysidError", "SysidProblem", "SysidResult", "format_result", "identify",
           "parse_bounds", "plot_fit", "randomization_terms", "replay_mjspec", "write_calibration"]
