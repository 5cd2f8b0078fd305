"""``ppl-lm``: twisted SMC for language models from the command line.

Subcommands (all write JSON with ``--out`` and PNG plots with ``--plot``)::

    ppl-lm sample --prompt "Once upon a time" --num-tokens 16 --potential contains_text:dog
    ppl-lm train  --prompt "..." --potential contains_text:dog --method ctl --twist twist.safetensors
    ppl-lm bounds --prompt "..." --potential contains_text:dog --twist twist.safetensors \\
                  --particles 4,16,64

``--model`` is a local Hugging Face folder or hub id (default: the embedded model), or
``tabular[:V]`` for a tiny random tabular LM (token-id prompts). ``--potential`` is a built-in
(``contains_token:ID``, ``ends_with:ID``, ``contains_text:WORD``, ``none``) or an import path
``module:function`` naming a log potential ``tokens [T] -> scalar`` (a JAX function).
"""

import argparse
import importlib
import json
import sys

import jax
import numpy as np

__all__ = ["main", "build_parser"]


def _load_model(spec: str | None, seed: int):
    if spec is not None and spec.startswith("tabular"):
        from lm_inference.tabular import TabularLM

        v = int(spec.split(":")[1]) if ":" in spec else 8
        return TabularLM(jax.random.key(seed), vocab_size=v, hidden_size=32, max_positions=64)
    import lm_inference

    return lm_inference.load(spec) if spec else lm_inference.load()


def _potential(spec: str, lm):
    from lm_inference import potentials

    if spec in (None, "none"):
        return None
    name, _, arg = spec.partition(":")
    if name in ("contains_token", "ends_with"):
        return potentials.BUILTIN[name](int(arg))
    if name == "contains_text":
        if lm.tokenizer is None:
            raise SystemExit("ppl-lm: contains_text needs a model with a tokenizer.")
        word = arg.lower()
        tok = lm.tokenizer
        return potentials.host(
            lambda text: 0.0 if word in text.lower() else -np.inf,
            decode=lambda ids: tok.decode([int(i) for i in ids]),
        )
    try:
        module = importlib.import_module(name)
        return getattr(module, arg)
    except (ImportError, AttributeError) as e:
        raise SystemExit(
            f"ppl-lm: unknown potential {spec!r} ({e}); use contains_token:ID, ends_with:ID, "
            "contains_text:WORD, none, or module:function."
        ) from e


def _target(args, lm):
    from lm_inference.target import Target

    if args.prompt_ids is not None:
        prompt = [int(x) for x in args.prompt_ids.split(",")]
    else:
        prompt = args.prompt
    return Target(lm, prompt, args.num_tokens, _potential(args.potential, lm))


def _twist(args, target, required=False):
    from lm_inference.twists import head_twist, load_params

    if args.twist is None:
        if required:
            raise SystemExit("ppl-lm: --twist PATH is required.")
        return None
    tw = head_twist(
        jax.random.key(0),
        target.lm.hidden_size,
        target.lm.vocab_size,
        target.num_tokens,
        kind=args.head,
        prefix_size=args.prefix_size,
    )
    import os

    if not os.path.exists(args.twist):
        raise SystemExit(f"ppl-lm: twist checkpoint {args.twist} not found; run `ppl-lm train`.")
    params = load_params(args.twist, {"params": tw.params})["params"]
    return tw._replace(params=params)


def _decode(target, samples):
    if target.lm.tokenizer is None:
        return None
    return target.decode(samples)


def _write(args, payload):
    text = json.dumps(payload, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


def _plot(path, fn):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    fn(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_sample(args):
    from lm_inference.twisted_smc import smc

    lm = _load_model(args.model, args.seed)
    target = _target(args, lm)
    twist = _twist(args, target)
    r = smc(
        jax.random.key(args.seed),
        target,
        args.particles,
        twist=twist,
        ess_threshold=args.ess_threshold,
    )
    w = np.asarray(jax.nn.softmax(r.log_weights))
    payload = {
        "log_Z": float(r.log_Z),
        "ess": np.asarray(r.ess).tolist(),
        "resampled": np.asarray(r.resampled).tolist(),
        "samples": np.asarray(r.samples).tolist(),
        "weights": w.tolist(),
        "text": _decode(target, r.samples),
    }
    _write(args, payload)
    if args.plot:
        _plot(
            args.plot,
            lambda ax: (
                ax.plot(np.arange(1, target.num_tokens + 1), r.ess, "o-"),
                ax.set_xlabel("token"),
                ax.set_ylabel("ESS"),
                ax.set_title(f"ESS over tokens (N={args.particles})"),
            ),
        )
    return payload


def cmd_train(args):
    from lm_inference.twist_training import train_twist

    lm = _load_model(args.model, args.seed)
    target = _target(args, lm)
    if args.twist is None:
        raise SystemExit("ppl-lm train: --twist PATH (checkpoint to write/resume) is required.")
    from lm_inference.twists import head_twist

    head = head_twist(
        jax.random.key(args.seed + 1),
        lm.hidden_size,
        lm.vocab_size,
        target.num_tokens,
        kind=args.head,
        prefix_size=args.prefix_size,
    )
    res = train_twist(
        jax.random.key(args.seed),
        target,
        args.method,
        twist=head,
        num_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        checkpoint=args.twist,
        progress=not args.quiet,
    )
    payload = {
        "method": args.method,
        "steps": args.steps,
        "losses": res.losses.tolist(),
        "checkpoint": args.twist,
    }
    _write(args, payload)
    if args.plot:
        _plot(
            args.plot,
            lambda ax: (
                ax.plot(res.losses),
                ax.set_xlabel("step"),
                ax.set_ylabel("loss"),
                ax.set_title(args.method),
            ),
        )
    return payload


def cmd_bounds(args):
    from lm_inference.bounds import bidirectional_bounds, rejection_samples

    lm = _load_model(args.model, args.seed)
    target = _target(args, lm)
    twist = _twist(args, target)
    ex = rejection_samples(jax.random.key(args.seed + 1), target, args.runs)
    rows = []
    for n in [int(x) for x in args.particles_list.split(",")]:
        b = bidirectional_bounds(
            jax.random.key(args.seed), target, ex, n, twist=twist, num_runs=args.runs
        )
        rows.append(
            {
                "num_particles": n,
                "lower": [b.lower.mean, b.lower.lo, b.lower.hi],
                "upper": [b.upper.mean, b.upper.lo, b.upper.hi],
                "iwae_lower": b.iwae_lower.mean,
                "iwae_upper": b.iwae_upper.mean,
                "kl_q_sigma": list(b.kl_q_sigma),
                "kl_sigma_q": list(b.kl_sigma_q),
                "gap": b.gap,
            }
        )
    payload = {"twist": args.twist, "runs": args.runs, "bounds": rows}
    _write(args, payload)
    if args.plot:

        def draw(ax):
            ns = [r["num_particles"] for r in rows]
            for key, label in (("lower", "SMC lower"), ("upper", "CSMC upper")):
                m = np.array([r[key] for r in rows])
                ax.plot(ns, m[:, 0], "o-", label=label)
                ax.fill_between(ns, m[:, 1], m[:, 2], alpha=0.3)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("particles")
            ax.set_ylabel("log Z bounds")
            ax.legend()

        _plot(args.plot, draw)
    return payload


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ppl-lm``."""
    p = argparse.ArgumentParser(prog="ppl-lm", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, helptext in (
        ("sample", cmd_sample, "run (twisted) SMC and print samples"),
        ("train", cmd_train, "train a twist head (CTL by default)"),
        ("bounds", cmd_bounds, "bidirectional log Z bounds and KLs"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.set_defaults(fn=fn)
        s.add_argument("--model", default=None, help="folder / hub id / tabular[:V]")
        s.add_argument("--prompt", default="Once upon a time")
        s.add_argument("--prompt-ids", default=None, help="comma-separated token ids")
        s.add_argument("--num-tokens", type=int, default=8)
        s.add_argument("--potential", default="none")
        s.add_argument("--twist", default=None, help="twist checkpoint (safetensors)")
        s.add_argument("--head", default="mlp", choices=["mlp", "linear"])
        s.add_argument(
            "--prefix-size",
            type=int,
            default=0,
            help="twist head: width of an embedding bag of the tokens so far (0: none)",
        )
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out", default=None, help="JSON output file (default stdout)")
        s.add_argument("--plot", default=None, help="PNG output file")
        s.add_argument("--quiet", action="store_true")
        if name == "sample":
            s.add_argument("--particles", type=int, default=16)
            s.add_argument("--ess-threshold", type=float, default=0.5)
        if name == "train":
            s.add_argument("--method", default="ctl", choices=["ctl", "sixo", "fudge", "rl", "dpg"])
            s.add_argument("--steps", type=int, default=100)
            s.add_argument("--batch-size", type=int, default=64)
            s.add_argument("--lr", type=float, default=3e-3)
        if name == "bounds":
            s.add_argument("--particles-list", default="4,16,64")
            s.add_argument("--runs", type=int, default=16)
    return p


def main(argv: list[str] | None = None):
    """Entry point of the ``ppl-lm`` console script; returns the JSON payload."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.fn(args)


if __name__ == "__main__":
    main()
