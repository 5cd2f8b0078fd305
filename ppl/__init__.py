"""NumPyro integration: our kernels as ``numpyro.infer.MCMCKernel`` objects, SMC for NumPyro
models, and bidirectional (BDMC) bounds on the log marginal likelihood."""
