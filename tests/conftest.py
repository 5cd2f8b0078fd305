import os

# Sharding tests need several host devices; this must be set before JAX is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop compiled executables after each test module: the suite compiles hundreds of sweeps
    (one per potential and configuration), and keeping them all in one process exhausted memory
    in XLA (a crash far from the test that caused it)."""
    yield
    import jax

    jax.clear_caches()
    gc.collect()
