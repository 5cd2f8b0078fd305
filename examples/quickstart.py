"""Twisted SMC quickstart on the embedded default model (``make demo``).

Condition a small Shakespeare language model on a rare event -- its next ``T`` tokens mention
a given word -- and:

1. sample unconditionally (batched ancestral sampling with a KV cache);
2. run SMC with the model as proposal: samples from the conditioned model and ``log Z``, the
   log-probability of the event;
3. learn a twist by contrastive twist learning (CTL) and run twisted SMC;
4. bracket ``log Z`` between the SMC lower and conditional-SMC upper bounds, with and without the
   twist, and bound the KL divergences of the proposals.

    python examples/quickstart.py [--quick] [--word love]
"""

import argparse
import time

import jax
import numpy as np

import lm_inference
from lm_inference import potentials
from lm_inference.bounds import rejection_samples


def show(title, target, result, k=3):
    w = np.asarray(jax.nn.softmax(result.log_weights))
    print(
        f"{title}: log Z_hat = {float(result.log_Z):.3f}, final ESS = {float(result.ess[-1]):.1f}"
    )
    for i in np.argsort(-w)[:k]:
        print(f"   [{w[i]:.2f}] {target.decode(result.samples[i : i + 1])[0]!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer particles and training steps")
    p.add_argument("--word", default="love", help="the word the continuation must contain")
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    lm = lm_inference.load()
    print(lm)
    prompt, T = "ROMEO.\n", 8 if args.quick else 12
    word_ids = lm.tokenizer(" " + args.word)["input_ids"]
    if len(word_ids) != 1:
        raise SystemExit(f"' {args.word}' is {len(word_ids)} tokens; pick a one-token word.")
    target = lm_inference.Target(lm, prompt, T, potentials.contains_token(word_ids[0]))
    print(f"target: p0(s | {prompt!r}) * 1[' {args.word}' in s], T = {T} tokens\n")

    out = lm_inference.sample(jax.random.key(0), lm, prompt, 3, max_new_tokens=T, temperature=1.0)
    print("unconditional samples:")
    for text in lm.tokenizer.batch_decode(np.asarray(out.tokens)):
        print(f"   {text!r}")

    n = 64 if args.quick else 256
    r = lm_inference.smc(jax.random.key(1), target, n)
    show(f"\nSMC, proposal = the model (N={n})", target, r)

    steps = 100 if args.quick else 300
    trained = lm_inference.train_twist(jax.random.key(2), target, "ctl", num_steps=steps)
    twist = trained.twist
    r = lm_inference.smc(jax.random.key(1), target, n, twist=twist)
    show(f"twisted SMC, CTL twist ({steps} steps, N={n})", target, r)

    runs = 8 if args.quick else 16
    exact = rejection_samples(jax.random.key(3), target, runs, batch=512)
    print(f"\nbounds on log Z over {runs} runs (exact target samples by rejection):")
    for label, tw in (("no twist", None), ("CTL twist", twist)):
        b = lm_inference.bidirectional_bounds(jax.random.key(4), target, exact, 16, twist=tw)
        print(
            f"   {label:9s} N=16: log Z in [{b.lower.mean:.3f}, {b.upper.mean:.3f}] "
            f"(gap {b.gap:.3f}); KL(q||sigma) in [{b.kl_q_sigma[0]:.2f}, {b.kl_q_sigma[1]:.2f}], "
            f"KL(sigma||q) in [{b.kl_sigma_q[0]:.2f}, {b.kl_sigma_q[1]:.2f}]"
        )
    print(f"\ndone in {time.perf_counter() - t_start:.0f} s (including compilation)")
    return 0


if __name__ == "__main__":
    main()
