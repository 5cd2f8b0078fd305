"""Twisted SMC quickstart on the embedded default model (``make demo``).

Condition a small Shakespeare language model on a rare event -- its next ``T`` tokens mention
a given word (about 0.9 % of its continuations of ``"ROMEO.\\n"`` for " love") -- and:

1. sample unconditionally (batched ancestral sampling with a KV cache) and estimate
   ``log Z = log P(event)`` by plain Monte Carlo as a reference;
2. run SMC with the model as proposal: most particles miss the event, so ``log Z_hat`` is
   noisy and often ``-inf``;
3. learn a twist by contrastive twist learning (CTL) and run twisted SMC: every run finds the
   event and ``log Z_hat`` concentrates near the reference;
4. bracket ``log Z`` between the SMC lower and conditional-SMC upper bounds (exact target samples
   by rejection), with and without the twist.

    python examples/quickstart.py [--quick] [--word love]
"""

import argparse
import time

import jax
import numpy as np

import lm_inference
from lm_inference import potentials
from lm_inference.bounds import rejection_samples
from lm_inference.twists import head_twist


def summarize(title, results):
    """Print how many runs found the event and the spread of ``log Z_hat``; return the best run."""
    log_zs = np.array([float(r.log_Z) for r in results])
    finite = np.isfinite(log_zs)
    stats = (
        f"mean {log_zs[finite].mean():.3f}, sd {log_zs[finite].std():.3f}" if finite.any() else ""
    )
    print(f"{title}: {finite.sum()}/{len(log_zs)} runs finite; log Z_hat {stats}")
    return results[int(np.argmax(log_zs))]


def show(target, result, k=3):
    if not np.isfinite(float(result.log_Z)):
        print("   (this run: no particle satisfies the event, all weights are zero)")
        return
    w = np.asarray(jax.nn.softmax(result.log_weights))
    for i in [i for i in np.argsort(-w)[:k] if w[i] > 0]:
        print(f"   [{w[i]:.2f}] {target.decode(result.samples[i : i + 1])[0]!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer particles, runs and steps")
    p.add_argument("--word", default="love", help="the word the continuation must contain")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    quick = args.quick
    n, runs, steps = (64, 8, 200) if quick else (64, 16, 400)

    lm = lm_inference.load()
    print(lm)
    prompt, T = "ROMEO.\n", 8
    word_ids = lm.tokenizer(" " + args.word)["input_ids"]
    if len(word_ids) != 1:
        raise SystemExit(f"' {args.word}' is {len(word_ids)} tokens; pick a one-token word.")
    target = lm_inference.Target(lm, prompt, T, potentials.contains_token(word_ids[0]))
    print(f"target: sigma(s) ∝ p0(s | {prompt!r}) 1[' {args.word}' in s], T = {T} tokens\n")

    out = lm_inference.sample(jax.random.key(0), lm, prompt, 3, max_new_tokens=T)
    print("unconditional samples:")
    for text in lm.tokenizer.batch_decode(np.asarray(out.tokens)):
        print(f"   {text!r}")
    m = 8192 if quick else 32768
    hits = lm_inference.smc(jax.random.key(9), target, m, ess_threshold=0.0).log_potential
    p_hat = float(np.mean(np.asarray(hits) > -np.inf))
    print(
        f"reference: P(event) from {m} model samples = {p_hat:.4f}, log Z = {np.log(p_hat):.3f}"
        f" ± {np.sqrt((1 - p_hat) / (p_hat * m)):.3f}\n"
    )

    keys = jax.random.split(jax.random.key(1), runs)
    results = [lm_inference.smc(k, target, n) for k in keys]
    show(target, summarize(f"SMC, proposal = the model, N={n}, {runs} runs", results))

    # an MLP head on the LM's last hidden state plus an embedding bag of the tokens so far
    head = head_twist(jax.random.key(5), lm.hidden_size, lm.vocab_size, T, prefix_size=64)
    trained = lm_inference.train_twist(
        jax.random.key(2), target, "ctl", twist=head, num_steps=steps
    )
    twist = trained.twist
    results = [lm_inference.smc(k, target, n, twist=twist) for k in keys]
    show(
        target, summarize(f"\ntwisted SMC, CTL twist ({steps} steps), N={n}, {runs} runs", results)
    )

    exact = rejection_samples(jax.random.key(3), target, runs, batch=2048)
    print(f"\nbounds on log Z over {runs} runs, N={n} (exact target samples by rejection):")
    for label, tw in (("no twist", None), ("CTL twist", twist)):
        b = lm_inference.bidirectional_bounds(jax.random.key(4), target, exact, n, twist=tw)
        print(
            f"   {label:9s}: E[lower] = {b.lower.mean:.3f} <= log Z <= E[upper] = "
            f"{b.upper.mean:.3f} (gap {b.gap:.3f}); "
            f"KL(sigma||q) in [{b.kl_sigma_q[0]:.2f}, {b.kl_sigma_q[1]:.2f}]"
        )
    print(f"\ndone in {time.perf_counter() - t_start:.0f} s (including compilation)")
    return 0


if __name__ == "__main__":
    main()
