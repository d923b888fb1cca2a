"""Test-wide settings. Every test process sees 8 CPU devices, so multi-device code is exercised on the CPU."""

import os

# LLVM's optimisations off: the suite compiles far more than it runs (a small DDPM++'s training step
# compiles in 13 s instead of 32 s and runs 1.3x slower).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must follow the environment above)

import score_sde  # noqa: E402, F401  (adds its XLA flags before jax starts its backends)

assert jax.device_count() == 8, "XLA_FLAGS was set after jax initialised its backends"


def pytest_collection_modifyitems(items):
    """Heavy tests first (a stable sort keeps the rest in order): longest first balances the workers."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
