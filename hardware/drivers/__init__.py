"""The driver registry: every kind of robot connection s2r can open, and how to open it.

A driver is named on the command line and in the robot node's `driver` parameter as
`KIND[:WHERE]`: the kind, then what the kind needs to find its robot. For a bus driver WHERE
is the port (`dynamixel:/dev/ttyUSB0`); for `sim` it is the SimRobot YAML that says how the
simulated robot differs from its model (latency, noise, start pose, parameter overrides), and
`sim` alone is the model as it is. One token names the whole connection, so there is one
option (`--driver`) and one ROS parameter (`driver`) for it, whatever the kind.

Each kind names its implementation by an import string, imported only when a robot of that
kind is opened: the robot side never loads MuJoCo unless it opens a `sim` robot.

    driver = parse_driver("sim:hardware/configs/cartpole_hanging.yaml")
    with open_driver(driver, robot_spec("cartpole")) as robot:   # connected; disabled and closed on exit
        state = robot.read_state()

`KINDS` lists the kinds (argparse choices and help); `DRIVERS` holds their entries.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from s2r.interface import RobotError, RobotInterface
from s2r.spec import RobotSpec


class DriverError(ValueError):
    """A driver that cannot be parsed or opened as named; the message names `--driver` and what was expected."""


@dataclass(frozen=True)
class DriverKind:
    """One kind of driver: what it is and where its implementation lives."""

    summary: str
    """What the kind drives, for help texts."""
    where: str
    """What follows `KIND:`, for help texts and errors."""
    opener: str
    """`module:callable` taking (spec: RobotSpec, config) and returning the RobotInterface."""
    config_loader: str | None = None
    """`module:callable` turning WHERE into the opener's config; None: WHERE itself is the config."""
    preflight: bool = False
    """True: `preflight` opens the robot and checks it could be enabled before nodes start (a bus: port, motors,
    models, calibration, ranges), so that a user's mistake is one line from the command, not a node's log."""


DRIVERS: dict[str, DriverKind] = {
    "sim": DriverKind(
        summary="SimRobot: the robot's MuJoCo model stepped in real time",
        where="a SimRobot YAML (latency, noise, start pose, overrides); none: the model as it is",
        opener="s2r.sim.sim_robot:SimRobot",
        config_loader="s2r.sim.sim_robot:load_sim_robot_config",
    ),
    "dynamixel": DriverKind(
        summary="Dynamixel X-series motors, protocol 2.0, through dynamixel-sdk (docs/drivers.md)",
        where="PORT[@BAUD][,calibration=FILE] (baud default 1000000; calibration default: the spec's bus ids)",
        opener="s2r.hardware.drivers.dynamixel:Dynamixel",
        config_loader="s2r.hardware.drivers.dynamixel:load_dynamixel_config",
        preflight=True,
    ),
    "feetech": DriverKind(
        summary="Feetech STS/SMS servos (STS3215: SO-100/SO-101 arms), one sync read + one sync write per tick",
        where="PORT[@BAUD][,calibration=FILE] (baud 1000000 by default; calibration from s2r calibrate-motors)",
        opener="s2r.hardware.drivers.feetech:FeetechRobot",
        config_loader="s2r.hardware.drivers.feetech:load_feetech_address",
        preflight=True,
    ),
    "mit_can": DriverKind(
        summary="MIT-protocol CAN motors (CubeMars AK, Damiao DM) through python-can, one frame per motor per tick",
        where="INTERFACE:CHANNEL[@BITRATE],calibration=FILE (socketcan:can0, slcan:/dev/ttyACM0, virtual:NAME, "
              "udp_multicast:239.0.0.1; docs/can-motors.md)",
        opener="s2r.hardware.drivers.mit_can:MitCanRobot",
        config_loader="s2r.hardware.drivers.mit_can:parse_can_address",
        preflight=True,
    ),
}
"""Driver kind → its entry; a new driver is one entry here."""
KINDS = tuple(DRIVERS)
"""The driver kinds, in the order help texts list them."""


@dataclass(frozen=True)
class Driver:
    """A parsed `KIND[:WHERE]`."""

    kind: str
    where: str = ""
    """The port or config file after the colon; empty when none was given."""

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}" if self.where else self.kind

    @property
    def entry(self) -> DriverKind:
        return DRIVERS[self.kind]


def parse_driver(text: str | Driver) -> Driver:
    """`KIND[:WHERE]` as a Driver; DriverError for an unknown kind."""
    if isinstance(text, Driver):
        return text
    kind, _, where = str(text).partition(":")
    if kind not in DRIVERS:
        raise DriverError(f"--driver: unknown kind {kind!r} in {str(text)!r} (expected KIND[:WHERE], kinds: "
                          f"{', '.join(KINDS)})")
    return Driver(kind, where)


def load_driver_config(driver: str | Driver) -> Any:
    """The driver's config read from its WHERE (its kind's loader); None when no WHERE was given."""
    driver = parse_driver(driver)
    if not driver.where:
        return None
    loader = driver.entry.config_loader
    return _imported(loader)(driver.where) if loader else driver.where


def open_driver(driver: str | Driver, spec: RobotSpec, *, config: Any = None) -> RobotInterface:
    """A RobotInterface of `driver`'s kind for `spec`, not yet connected.

    config: the opener's config (default: `load_driver_config(driver)`), for a caller that
    adjusts it first (excitation steps a SimRobot by hand).
    """
    driver = parse_driver(driver)
    if config is None:
        config = load_driver_config(driver)
    return _imported(driver.entry.opener)(spec, config)


def preflight(driver: str | Driver, spec: RobotSpec) -> None:
    """Open `driver`'s robot, check it could be enabled (`check_enable`: no torque) and close it; DriverError with
    the driver's one-line reason otherwise. Kinds without `preflight` are left alone."""
    driver = parse_driver(driver)
    if not driver.entry.preflight:
        return
    try:
        with open_driver(driver, spec) as robot:
            robot.check_enable()
    except (RobotError, ValueError) as error:
        raise DriverError(str(error)) from None


def help_text() -> str:
    """One line per kind for a `--driver` option's help."""
    return "; ".join(f"{kind}[:WHERE]: {entry.summary}, WHERE {entry.where}" for kind, entry in DRIVERS.items())


def _imported(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
