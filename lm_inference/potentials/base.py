"""The potential protocol (:mod:`kernels.smc.potential`), re-exported for the LM layer.

The protocol is pure JAX and shared by every twisted SMC in the project: the LM sweep
(:mod:`lm_inference.twisted_smc`) and the function-model driver :func:`kernels.smc.twisted.run`
run the same step function (:class:`kernels.smc.twisted.Sweep`).
"""

from kernels.smc.potential import (
    Potential,
    PotentialError,
    as_potential,
    log_value,
    product,
    tempered,
)

__all__ = ["Potential", "PotentialError", "as_potential", "product", "tempered", "log_value"]
