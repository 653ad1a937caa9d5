"""Explore: sweeps, per-layer sensitivity, mixed-precision recipes and the accuracy-budget search."""
