"""Infilling on the embedded model: sample the middle ``s`` of ``prompt + s + continuation``,
``sigma(s) ∝ p0(s | prompt) p0(continuation | prompt, s)``, with SMC and with exact samples
from the joint-sampling trick, and bracket ``log Z = log p0(continuation | prompt)`` between the
SMC lower and conditional-SMC upper bounds.

    python examples/infilling.py [--quick]
"""

import argparse

import jax
import numpy as np

import lm_inference
from lm_inference import potentials


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n, runs = (16, 8) if args.quick else (64, 32)
    lm = lm_inference.load()
    prompt = lm.tokenizer("ROMEO.\n")["input_ids"]
    cont = lm.tokenizer(" love")["input_ids"]
    T = 2
    target = lm_inference.Target(lm, prompt, T, potentials.infilling(lm, prompt, cont),
                                 eos_token_id=-1)
    exact = potentials.infilling_joint_samples(jax.random.key(0), target, runs)
    b = lm_inference.bidirectional_bounds(jax.random.key(1), target, exact, n)
    print(f"log p0({' love'!r} after 2 tokens | 'ROMEO.\\n'): SMC lower {b.lower.mean:.3f} "
          f"[{b.lower.lo:.3f}, {b.lower.hi:.3f}], CSMC upper {b.upper.mean:.3f} "
          f"[{b.upper.lo:.3f}, {b.upper.hi:.3f}] ({runs} runs, N = {n})")
    r = lm_inference.smc(jax.random.key(2), target, n)
    w = np.exp(np.asarray(r.log_weights) - np.max(np.asarray(r.log_weights)))
    top = np.argsort(-w)[:3]
    for i in top:
        print("   ", repr(target.decode(r.samples[i:i + 1])[0] + " love"))
    return b


if __name__ == "__main__":
    main()
