"""Hugging Face causal language models in JAX, and twisted SMC over their tokens."""
