"""Constrained generation on the embedded model: a regular expression and a JSON schema, masked
on the device inside one compiled SMC sweep (``lm_inference.potentials.regex`` / ``json_schema``).

The target is ``sigma(s) ∝ p0(s | prompt) 1[text(s) matches]``: the proposal is the model's
next-token distribution restricted to the tokens that keep the text extendable to a match
(locally constrained decoding), and the SMC weights correct it exactly, so ``log Z_hat``
estimates ``log P(match)`` under the model and the samples follow the conditional distribution.

    python examples/constrained_generation.py [--quick]
"""

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import lm_inference
from lm_inference import potentials

PATTERN = r"[A-Z][a-z]+( [a-z]+){2,5}[.!?]"
SCHEMA = Path(__file__).parent / "data" / "person.schema.json"


def run(lm, prompt, T, pot, n, seed=0, forced_eos=False):
    target = lm_inference.Target(lm, prompt, T, pot, forced_eos=forced_eos)
    t0 = time.perf_counter()
    r = lm_inference.smc(jax.random.key(seed), target, n)
    r.log_Z.block_until_ready()
    return target, r, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer particles (for the tests)")
    args = ap.parse_args(argv)
    n = 16 if args.quick else 64
    lm = lm_inference.load()

    pot = potentials.regex(lm, PATTERN)
    info = pot.info
    print(f"regex {PATTERN!r}: {info['num_states']} states x {info['num_classes']} token "
          f"classes, {info['nbytes'] / 1024:.1f} KiB on the device")
    target, r, secs = run(lm, "ROMEO.\n", 32, pot, n)
    alive = np.isfinite(np.asarray(r.log_weights))
    print(f"N = {n}, T = 32: log Z_hat = {float(r.log_Z):.2f} ({secs:.1f} s with compilation), "
          f"{alive.sum()}/{n} particles matched")
    texts = target.decode(r.samples)
    for t in sorted(set(np.array(texts)[alive].tolist()))[:4]:
        print("  ", repr(t))
    assert all(__import__("re").fullmatch(PATTERN, t) for t in np.array(texts)[alive])

    schema = json.loads(SCHEMA.read_text())
    pot = potentials.json_schema(lm, SCHEMA)
    target, r, secs = run(lm, "ROMEO.\n", 40, pot, n, seed=1)
    alive = np.isfinite(np.asarray(r.log_weights))
    texts = np.array(target.decode(r.samples))[alive]
    print(f"JSON schema {SCHEMA.name}: log Z_hat = {float(r.log_Z):.2f}, {alive.sum()}/{n} "
          "particles complete")
    for t in sorted(set(texts))[:3]:
        print("  ", t)
    try:
        import jsonschema

        for t in texts:
            jsonschema.validate(json.loads(t), schema)
        print(f"   all {len(texts)} documents parse and validate")
    except ImportError:
        for t in texts:
            json.loads(t)
        print(f"   all {len(texts)} documents parse (install jsonschema to validate)")
    return r


if __name__ == "__main__":
    main()
