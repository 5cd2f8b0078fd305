"""LLaMPPL's "every word at most 5 letters" on the embedded model, on the device.

``potentials.short_words(lm, 5)`` masks every token that would make a word longer than five
letters (per-token letter counts from the vocabulary, the current word length as the state).
The same constraint as a host Python check on the decoded prefixes of all particles
(``potentials.host_prefix``, one batched callback per step, LLaMPPL's ``condition`` semantics)
gives the same target; the mask is the locally constrained proposal, the check is the bootstrap
one, and both estimate the same ``log Z = log P(every word <= 5 letters)``.

    python examples/short_words.py [--quick]
"""

import argparse
import time

import jax
import numpy as np

import lm_inference
from lm_inference import potentials
from lm_inference.potentials.words import max_word_length


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n, T, runs = (16, 16, 2) if args.quick else (64, 24, 8)
    lm = lm_inference.load()
    eos = lm.eos_token_id
    host = potentials.host_prefix(
        lambda xs: [0.0 if max_word_length(x) <= 5 else -np.inf for x in xs],
        decode=lm.tokenizer.decode, eos=eos, name="words<=5",
    )
    out = {}
    for name, pot in (("mask (on device)", potentials.short_words(lm, 5)),
                      ("check (on device)", potentials.short_words(lm, 5, mask=False)),
                      ("check (host Python)", host)):
        target = lm_inference.Target(lm, "ROMEO.\n", T, pot)
        lz, t0 = [], None
        for seed in range(runs + 1):
            if seed == 1:
                t0 = time.perf_counter()
            r = lm_inference.smc(jax.random.key(seed), target, n)
            lz.append(float(r.log_Z))
        secs = (time.perf_counter() - t0) / runs
        lz = np.array(lz[1:])
        out[name] = (target, r, lz)
        print(f"{name:20s} log Z_hat mean {lz.mean():7.2f} sd {lz.std():.2f} over {runs} runs, "
              f"{secs:.2f} s per run after compilation")
    target, r, _ = out["mask (on device)"]
    for t in sorted(set(target.decode(r.samples)))[:3]:
        assert max_word_length(t) <= 5
        print("  ", repr(t))
    return out


if __name__ == "__main__":
    main()
