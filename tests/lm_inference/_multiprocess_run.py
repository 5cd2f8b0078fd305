"""One of two processes of ``test_lm_sharding.py::test_two_processes_equal_one``: ``jax.distributed``
on localhost with CPU (gloo) collectives, two forced CPU devices per process, and a 2 x 2
``('particles', 'model')`` mesh whose particle axis spans the processes. Process 0 prints the
gathered run as JSON.

Usage: ``python _multiprocess_run.py PROCESS_ID NUM_PROCESSES PORT``.
"""

import json
import os
import sys

pid, num, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{port}", num_processes=num, process_id=pid)

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from lm_inference import sharding, smc  # noqa: E402
from tests.lm_inference._sharded_runs import llama_target  # noqa: E402

target = llama_target()
# rows of the device grid are processes: 'particles' across them, 'model' within each
devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
mesh = sharding.make_mesh(num, len(devices) // num, devices=devices)
r = smc(jax.random.key(1), target, 16, mesh=mesh)
samples = multihost_utils.process_allgather(r.samples, tiled=True)
log_w = multihost_utils.process_allgather(r.log_weights, tiled=True)
if pid == 0:
    print(json.dumps({
        "devices": len(jax.devices()),
        "processes": jax.process_count(),
        "mesh": dict(mesh.shape),
        "samples": np.asarray(samples).tolist(),
        "log_weights": np.asarray(log_w).tolist(),
        "log_Z": float(r.log_Z),
    }))
