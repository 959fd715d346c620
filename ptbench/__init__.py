"""ptbench: a benchmark suite for parameter transfer between models."""

__version__ = "0.1.0"
