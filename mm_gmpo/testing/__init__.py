"""Test support that ships with the package (device emulation for CPU-only checks of GPU code paths)."""
