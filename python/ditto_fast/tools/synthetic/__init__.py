"""Synthetic Ditto checkpoints: tiny hand-built models with the official tensor contract."""
