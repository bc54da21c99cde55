"""Robots (MJCF + RobotSpec YAML), tasks and batched simulation backends."""
