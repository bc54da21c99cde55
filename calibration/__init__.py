"""Calibration: domain randomization, system identification against recordings, camera calibration.

Randomization writes per-world model fields through `BatchEnv.model_field`."""
