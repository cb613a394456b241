"""The training loop (`mm-gmpo train`)."""
