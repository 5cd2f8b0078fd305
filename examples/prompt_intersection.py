"""Prompt intersection on the embedded model: ``sigma(s) ∝ p(s | "ROMEO.\\n") p(s | "JULIET.\\n")``.

``potentials.prompted(lm, prompt_b)`` is another prompt's LM probability as a potential, with its
own KV cache in the potential's state; the proposal ``p(. | a) p(. | b)`` is normalized over the
whole vocabulary in one pass and the weights are exact. ``tempered(prompted(...), beta)`` gives
``p(s | a) p(s | b)^beta``; ``beta = 0`` is the model alone (``log Z = 0``).

    python examples/prompt_intersection.py [--quick]
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
    n, T = (16, 8) if args.quick else (64, 16)
    lm = lm_inference.load()
    out = {}
    for beta in (0.0, 0.5, 1.0):
        pot = potentials.tempered(potentials.prompted(lm, "JULIET.\n"), beta)
        target = lm_inference.Target(lm, "ROMEO.\n", T, pot)
        r = lm_inference.smc(jax.random.key(0), target, n)
        ess = np.asarray(r.ess)
        out[beta] = r
        print(f"beta = {beta:3.1f}: log Z_hat = {float(r.log_Z):8.3f}, min ESS {ess.min():.1f} "
              f"of {n}, {int(np.asarray(r.resampled).sum())} resampling steps")
        for t in sorted(set(target.decode(r.samples)))[:2]:
            print("   ", repr(t))
    assert abs(float(out[0.0].log_Z)) < 1e-4  # the model alone: Z = 1
    return out


if __name__ == "__main__":
    main()
