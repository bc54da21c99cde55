"""Policies: actor-critic models, their normalizers and the PPO trainer."""
