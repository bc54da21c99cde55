"""Bus emulators: motors that speak the vendors' bytes on a pseudo-terminal or a CAN bus and move a plant.

`serial_bus.PtyBus` serves a serial bus (byte timing, fault switches); `plant.Plant` is the physics
the motors move (MuJoCo's in `s2r.sim.motor_plant`); `dynamixel`, `feetech` and `mit_can` are the
motors. An emulator as its own process: `s2r emulate` (`s2r.sim.emulate`).
"""
