"""Shared helpers: enumeration of a target, z-tests of log Z_hat, exact proposal identities."""

import re

import jax
import numpy as np
from scipy import stats

from lm_inference import exact
from lm_inference.twisted_smc import smc_runs, teacher_force
from tests.lm_inference._text import EOS, TEXT


def text(seq) -> str | None:
    """The text of a sequence up to EOS (``None`` if it uses an id the tokenizer lacks)."""
    out = []
    for s in np.asarray(seq):
        if s == EOS:
            break
        if s >= len(TEXT) or TEXT[int(s)] is None:
            return None
        out.append(TEXT[int(s)])
    return "".join(out)


def brute_regex(pattern: str, seqs) -> np.ndarray:
    """``[M]`` bool: Python's ``re.fullmatch`` of each sequence's text."""
    return np.array(
        [(x := text(s)) is not None and re.fullmatch(pattern, x) is not None
         for s in np.asarray(seqs)]
    )


def z_unbiased(target, n: int, runs: int, seed: int, log_Z: float, **kw) -> float:
    """z-score of ``mean(Z_hat / Z) - 1`` over ``runs`` independent SMC runs."""
    keys = jax.random.split(jax.random.key(seed), runs)
    lz = np.asarray(smc_runs(keys, target, n, **kw).log_Z, np.float64)
    r = np.exp(lz - log_Z)
    assert r.std() > 1e-3, "degenerate estimator: the z-test would not test anything"
    return float((r.mean() - 1) / (r.std() / np.sqrt(r.size)))


def exact_identity(target, twist=None):
    """``(sum_s q(s), E_q[p0 phi / q], Z)`` by enumeration (the proposal of the shared step)."""
    en = exact.enumerate_target(target)
    tf = teacher_force(target, en.sequences, twist=twist)
    q = np.exp(np.asarray(tf.log_q.sum(1), np.float64))
    w = np.exp(np.asarray(tf.log_weight(), np.float64))
    return q.sum(), float((q * np.nan_to_num(w)).sum()), float(np.exp(float(en.log_Z)))


def chi2_pvalue(samples, sequences, probs, v: int) -> float:
    T = np.asarray(sequences).shape[1]
    powers = v ** np.arange(T - 1, -1, -1)
    codes = np.asarray(samples) @ powers
    en_codes = np.asarray(sequences) @ powers
    counts = np.array([(codes == c).sum() for c in en_codes])
    assert counts.sum() == len(codes), "a sample outside the enumerated (valid) sequences"
    expected = len(codes) * np.asarray(probs, np.float64)
    keep = expected > 5
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    return float(stats.chi2.sf(chi2, keep.sum() - 1))
