"""Twisted SMC quickstart: sample a rare event from a language model, learn a twist, bound log Z.

Runs on the embedded default model (``lm_inference.load()``) when it is available, otherwise on a
tiny random tabular LM. Steps: no-twist SMC; contrastive twist learning (CTL); the SMC lower and
conditional-SMC upper bounds on ``log Z`` with and without the twist.

    python examples/quickstart.py [--quick]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import lm_inference
from lm_inference import potentials
from lm_inference.bounds import bidirectional_bounds, rejection_samples
from lm_inference.target import Target
from lm_inference.twist_training import train_twist
from lm_inference.twisted_smc import smc


def load_model():
    """The embedded default model, or a tiny tabular LM when it is not there yet."""
    try:
        lm = lm_inference.load()
        return lm, "embedded default model"
    except Exception as e:  # noqa: BLE001 - the demo falls back to a toy model
        from lm_inference.tabular import TabularLM

        print(f"(default model unavailable: {type(e).__name__}: {e}; using a tabular LM)")
        return TabularLM(jax.random.key(0), vocab_size=16, max_positions=64), "tabular LM"


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    lm, name = load_model()
    T = 6 if args.quick else 10
    prompt = "Once upon a time" if lm.tokenizer is not None else [0, 1]
    # a rare event: the continuation contains a given token
    token = 5 if lm.tokenizer is None else lm.tokenizer(" dog")["input_ids"][0]
    target = Target(lm, prompt, T, potentials.contains_token(token))
    print(f"model: {name}, vocab {lm.vocab_size}, T = {T}, potential: contains token {token}")

    t0 = time.time()
    r = smc(jax.random.key(1), target, 64)
    print(
        f"no-twist SMC (N=64): log Z_hat = {float(r.log_Z):.3f}, "
        f"final ESS = {float(r.ess[-1]):.1f} ({time.time() - t0:.1f}s incl. compile)"
    )

    steps = 60 if args.quick else 200
    tw = train_twist(jax.random.key(2), target, "ctl", num_steps=steps, batch_size=64).twist
    r = smc(jax.random.key(1), target, 64, twist=tw)
    print(
        f"CTL-twisted SMC (N=64): log Z_hat = {float(r.log_Z):.3f}, "
        f"final ESS = {float(r.ess[-1]):.1f}"
    )
    if lm.tokenizer is not None:
        w = np.asarray(jax.nn.softmax(r.log_weights))
        for i in np.argsort(-w)[:3]:
            print(f"  [{w[i]:.2f}] {target.decode(r.samples[i : i + 1])[0]!r}")

    runs = 8 if args.quick else 16
    ex = rejection_samples(jax.random.key(3), target, runs, batch=512)
    for label, twist in (("no twist", None), ("CTL twist", tw)):
        b = bidirectional_bounds(jax.random.key(4), target, ex, 16, twist=twist)
        print(
            f"{label:9s} N=16: log Z in [{b.lower.mean:.3f}, {b.upper.mean:.3f}] "
            f"(gap {b.gap:.3f}); KL(q||sigma) in [{b.kl_q_sigma[0]:.2f}, {b.kl_q_sigma[1]:.2f}]"
        )
    return jnp.asarray(0)


if __name__ == "__main__":
    main()
