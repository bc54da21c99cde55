"""Hardware: RobotInterface, drivers, the safety filter, teleop devices and bus emulators.

Imports only `s2r` and numpy: it runs on the robot computer."""
