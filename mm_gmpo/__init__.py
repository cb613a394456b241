"""mm-gmpo: Geometric-Mean Policy Optimization for vision-language and math reasoning models."""

__version__ = "0.1.0"
