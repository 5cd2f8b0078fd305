"""``ppl-lm``: twisted SMC for language models from the command line.

Subcommands (all write JSON to stdout or ``--out``, and a PNG plot with ``--plot``)::

    ppl-lm sample --prompt "Once upon a time" --num-tokens 16 --potential contains_text:dog
    ppl-lm train  --prompt "..." --potential contains_text:dog --method ctl --twist twist.safetensors
    ppl-lm bounds --prompt "..." --potential contains_text:dog --twist twist.safetensors \\
                  --particles-list 4,16,64

``--model`` is a local Hugging Face folder or hub id (default: the embedded model), or
``tabular[:V]`` for a tiny random tabular LM (token-id prompts). ``--potential`` is a built-in
(``contains_token:ID``, ``ends_with:ID``, ``contains_text:WORD``, ``none``) or an import path
``module:function`` naming a log potential ``tokens [T] -> scalar`` (a JAX function); ``ppl-lm
sample --help`` lists them with their meaning.

The JSON is strict (no ``NaN`` or ``Infinity``): non-finite numbers are written as the strings
``"-inf"`` and ``"inf"`` and NaN as ``null``; every payload says so in its ``notes`` field, which
also explains the other fields. Twist checkpoints record what they were trained for (model, ``T``,
prompt, head, potential); using one for another target is an error (``--allow-twist-mismatch``
lets a twist for another model, prompt or potential run, with a warning). Exit status: 0 on
success, 2 on bad input (with a message on stderr).
"""

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

__all__ = ["main", "run", "build_parser", "build_potential", "CLIError", "POTENTIALS", "to_json"]

EXIT_OK = 0
EXIT_USER_ERROR = 2


class CLIError(Exception):
    """Bad input on the command line: ``main`` prints the message and exits with status 2."""


# ---------------------------------------------------------------------------------------------
# Potentials: the one place ``phi`` is built from the command line
# ---------------------------------------------------------------------------------------------


def _token_id(name: str, arg: str, lm) -> int:
    try:
        tid = int(arg)
    except ValueError:
        raise CLIError(f"--potential {name}:ID needs an integer token id, got {arg!r}.") from None
    if not 0 <= tid < lm.vocab_size:
        raise CLIError(
            f"--potential {name}:{tid}: token id outside the vocabulary [0, {lm.vocab_size})."
        )
    return tid


def _contains_token(arg: str, lm) -> Callable:
    from lm_inference import potentials

    return potentials.contains_token(_token_id("contains_token", arg, lm))


def _ends_with(arg: str, lm) -> Callable:
    from lm_inference import potentials

    return potentials.ends_with(_token_id("ends_with", arg, lm))


def _contains_text(arg: str, lm) -> Callable:
    from lm_inference import potentials

    if not arg:
        raise CLIError("--potential contains_text:WORD needs a non-empty WORD.")
    if getattr(lm, "tokenizer", None) is None:
        raise CLIError("--potential contains_text needs a model with a tokenizer (not tabular).")
    word, tok = arg.lower(), lm.tokenizer
    return potentials.host(
        lambda text: 0.0 if word in text.lower() else -np.inf,
        decode=lambda ids: tok.decode([int(i) for i in ids]),
    )


POTENTIALS: dict[str, tuple[str, str, Callable | None]] = {
    "none": ("none", "phi = 1: sample the model itself (log Z = 0)", None),
    "contains_token": (
        "contains_token:ID",
        "phi = 1 if token id ID occurs among the T new tokens, else 0",
        _contains_token,
    ),
    "ends_with": ("ends_with:ID", "phi = 1 if the last new token is ID, else 0", _ends_with),
    "contains_text": (
        "contains_text:WORD",
        "phi = 1 if the decoded new text contains WORD (case-insensitive), else 0; needs a "
        "tokenizer; evaluated in Python on the host",
        _contains_text,
    ),
}
"""Built-in ``--potential`` specs: name -> (syntax, meaning, ``builder(arg, lm) -> log phi``)."""


def _named(potential, name: str):
    """Record ``name`` (the command-line spec) on a potential built here, for twist checkpoints."""
    from dataclasses import replace

    from lm_inference.potentials import Potential

    if isinstance(potential, Potential):
        return replace(potential, name=name)
    try:
        potential.name = name
    except (AttributeError, TypeError):  # a frozen object: it keeps its own name
        pass
    return potential


def _parse_potential(spec: str, lm):
    name, sep, arg = spec.partition(":")
    if name in POTENTIALS:
        builder = POTENTIALS[name][2]
        if builder is None:
            return None
        if not sep:
            raise CLIError(f"--potential {name} needs an argument: {POTENTIALS[name][0]}.")
        return _named(builder(arg, lm), spec)
    known = ", ".join(syntax for syntax, _, _ in POTENTIALS.values())
    if not sep or not arg:
        raise CLIError(f"unknown potential {spec!r}; use one of {known}, or MODULE:FUNCTION.")
    try:
        fn = getattr(importlib.import_module(name), arg)
    except (ImportError, AttributeError) as e:
        raise CLIError(
            f"unknown potential {spec!r} ({e}); use one of {known}, or MODULE:FUNCTION."
        ) from e
    if not callable(fn):
        raise CLIError(f"--potential {spec}: {arg} is not callable (need tokens [T] -> log phi).")
    return fn


def build_potential(args: argparse.Namespace, lm):
    """The target's log potential from the command-line options (``None``: ``phi = 1``).

    Every option that constrains the target is turned into a potential here and combined with
    :func:`lm_inference.potentials.product`; today that is ``--potential SPEC``
    (:data:`POTENTIALS` or ``MODULE:FUNCTION``).
    """
    from lm_inference import potentials

    parts, names = [], []
    if args.potential is not None:
        p = _parse_potential(args.potential, lm)
        if p is not None:
            parts.append(p)
            names.append(args.potential)
    try:
        if getattr(args, "regex", None):
            parts.append(potentials.regex(lm, args.regex))
            names.append(f"regex:{args.regex}")
        if getattr(args, "json_schema", None):
            parts.append(potentials.json_schema(lm, Path(args.json_schema)))
            names.append(f"json_schema:{Path(args.json_schema).name}")
        if getattr(args, "short_words", None):
            parts.append(potentials.short_words(lm, args.short_words))
            names.append(f"short_words:{args.short_words}")
        if getattr(args, "intersect", None):
            p = potentials.prompted(lm, args.intersect)
            if getattr(args, "intersect_beta", 1.0) != 1.0:
                p = potentials.tempered(p, args.intersect_beta)
            parts.append(p)
            names.append(f"intersect:{args.intersect}^{args.intersect_beta:g}")
    except (ValueError, OSError) as e:
        raise CLIError(str(e)) from e
    if not parts:
        return None
    if len(parts) == 1:
        return _named(parts[0], names[0])
    return _named(potentials.product(*parts), " * ".join(names))


# ---------------------------------------------------------------------------------------------
# Model, target, twist
# ---------------------------------------------------------------------------------------------


def _load_model(spec: str | None, seed: int):
    if spec is not None and spec.split(":")[0] == "tabular":
        from lm_inference.tabular import TabularLM

        _, _, v = spec.partition(":")
        try:
            v = int(v) if v else 8
        except ValueError:
            raise CLIError(f"--model tabular:V needs an integer V, got {spec!r}.") from None
        if v < 2:
            raise CLIError(f"--model {spec}: the vocabulary needs at least 2 tokens.")
        return TabularLM(jax.random.key(seed), vocab_size=v, hidden_size=32, max_positions=64)
    import lm_inference

    return lm_inference.load(spec) if spec else lm_inference.load()


def _prompt(args):
    if args.prompt_ids is None:
        return args.prompt
    try:
        return [int(x) for x in args.prompt_ids.split(",") if x.strip()]
    except ValueError:
        raise CLIError(
            f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}."
        ) from None


def _target(args, lm):
    from lm_inference.target import Target

    return Target(
        lm,
        _prompt(args),
        args.num_tokens,
        build_potential(args, lm),
        forced_eos=bool(getattr(args, "forced_eos", False)),
    )


def _head(args, lm, target, key):
    """A fresh twist head; its kind and prefix size default to those recorded in an existing
    ``--twist`` checkpoint (else ``mlp`` and 0)."""
    from lm_inference.twists import head_twist, read_record

    rec = {}
    if args.twist is not None and os.path.exists(args.twist):
        rec = (read_record(args.twist) or {}).get("head") or {}
    kind = args.head if args.head is not None else rec.get("kind", "mlp")
    prefix = args.prefix_size if args.prefix_size is not None else rec.get("prefix_size", 0)
    width = rec.get("width") or 128
    return head_twist(
        key, lm.hidden_size, lm.vocab_size, target.num_tokens, kind, width, prefix_size=prefix
    )


def _twist(args, target):
    from lm_inference.twists import load_twist

    if args.twist is None:
        return None
    if not os.path.exists(args.twist):
        raise CLIError(
            f"twist checkpoint {args.twist} not found; train one with "
            f"`ppl-lm train --twist {args.twist}` (same --model, --prompt, --num-tokens, "
            "--potential)."
        )
    head = _head(args, target.lm, target, jax.random.key(0))
    allow = ("model", "prompt", "potential") if args.allow_twist_mismatch else ()
    return load_twist(args.twist, target, twist=head, allow=allow)


def _decode(target, samples):
    if getattr(target.lm, "tokenizer", None) is None:
        return None
    return target.decode(samples)


# ---------------------------------------------------------------------------------------------
# Output: strict JSON and plots
# ---------------------------------------------------------------------------------------------

NON_FINITE_NOTE = (
    'JSON has no NaN or infinities: numbers that are not finite are written as the strings "-inf" '
    'and "inf", and NaN as null. A log weight or log Z of "-inf" means zero: no particle satisfied '
    "the potential (Z_hat = 0)."
)


def to_json(x):
    """``x`` with numpy values as Python ones and non-finite floats as ``"-inf"``, ``"inf"`` or
    ``None`` (NaN), so that ``json.dumps(..., allow_nan=False)`` accepts it."""
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_json(v) for v in x]
    if isinstance(x, np.ndarray | jax.Array):
        return to_json(np.asarray(x).tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    return x


def _write(args, payload):
    text = json.dumps(to_json(payload), indent=2, allow_nan=False)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


def _fmt(v: float) -> str:
    return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _curve(ax, x, y, label, fmt="o-", band=None, xname="x") -> str | None:
    """Plot the finite points of ``y(x)``; the legend and the returned note name the others."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(y)
    note = None
    if not ok.all():
        groups: dict[str, list[str]] = {}
        for xi, yi in zip(x[~ok], y[~ok], strict=True):
            groups.setdefault(_fmt(yi), []).append(f"{xi:g}")
        where = "; ".join(f"{v} at {xname} = {', '.join(xs)}" for v, xs in groups.items())
        note = f"{label}: {where} (not drawn)"
        label = f"{label} ({where}, not drawn)"
    (line,) = ax.plot(x[ok], y[ok], fmt, label=label)
    if band is not None:
        lo, hi = (np.asarray(b, np.float64) for b in band)
        keep = ok & np.isfinite(lo) & np.isfinite(hi)
        if keep.any():
            ax.fill_between(x[keep], lo[keep], hi[keep], alpha=0.3, color=line.get_color())
    return note


def _plot(path, fn):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    notes = [n for n in (fn(ax) or []) if n]
    if notes:
        ax.text(
            0.02,
            0.02,
            "\n".join(notes),
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
            color="firebrick",
            wrap=True,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _normalized_weights(log_weights) -> np.ndarray:
    lw = np.asarray(log_weights, np.float64)
    ok = np.isfinite(lw)
    if not ok.any():
        return np.zeros_like(lw)
    w = np.where(ok, np.exp(np.where(ok, lw, 0.0) - lw[ok].max()), 0.0)
    return w / w.sum()


# ---------------------------------------------------------------------------------------------
# Subcommands: each returns its JSON payload
# ---------------------------------------------------------------------------------------------


def cmd_sample(args) -> dict:
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
    log_z = float(r.log_Z)
    payload = {
        "log_Z": log_z,
        "ess": np.asarray(r.ess),
        "resampled": np.asarray(r.resampled),
        "samples": np.asarray(r.samples),
        "weights": _normalized_weights(r.log_weights),
        "text": _decode(target, r.samples),
        "notes": {
            "non_finite": NON_FINITE_NOTE,
            "log_Z": "SMC estimate of log Z = log E_p0[phi] (nats); unbiased in Z, not in log Z",
            "ess": "effective sample size after each of the T steps",
            "resampled": "whether the particles were resampled at each step",
            "samples": "[N, T] token ids of the particles (EOS-padded after an EOS)",
            "weights": "normalized importance weights of the samples (all 0 when log_Z is -inf)",
            "text": "decoded samples (null without a tokenizer)",
        },
    }
    if not math.isfinite(log_z):
        payload["warnings"] = [
            f"log_Z = {_fmt(log_z)}: no particle satisfied the potential; use more --particles, "
            "a trained --twist, or a more likely event."
        ]
    _write(args, payload)
    if args.plot:

        def draw(ax):
            note = _curve(ax, np.arange(1, target.num_tokens + 1), r.ess, "ESS", xname="token")
            ax.set_xlabel("token")
            ax.set_ylabel("ESS")
            ax.set_title(f"ESS over tokens (N={args.particles})")
            return [note]

        _plot(args.plot, draw)
    return payload


def cmd_train(args) -> dict:
    from lm_inference.twist_training import train_twist

    lm = _load_model(args.model, args.seed)
    target = _target(args, lm)
    if args.twist is None:
        raise CLIError(
            "ppl-lm train: --twist PATH (the checkpoint to write or resume) is required."
        )
    head = _head(args, lm, target, jax.random.key(args.seed + 1))
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
    losses = np.asarray(res.losses)
    d = res.diagnostics
    payload = {
        "method": args.method,
        "steps": args.steps,
        "steps_trained": int(losses.size),
        "losses": losses,
        "checkpoint": args.twist,
        "notes": {
            "non_finite": NON_FINITE_NOTE,
            "steps": "total optimizer steps asked for (counting steps resumed from the checkpoint)",
            "steps_trained": "steps run by this call (fewer when resuming a checkpoint)",
            "losses": f"training loss of method {args.method!r} at each step of this call "
            "(noisy: it is not a convergence diagnostic; see heldout)",
        },
    }
    if d is not None:
        payload["heldout"] = {
            "steps": d.steps,
            "log_mean_Z": d.log_mean_Z,
            "log_mean_Z_se": d.log_mean_Z_se,
            "ess": np.mean(d.ess, axis=1),
            "no_twist_log_mean_Z": d.baseline_log_mean_Z,
            "no_twist_log_mean_Z_se": d.baseline_log_mean_Z_se,
            "no_twist_ess": float(np.mean(d.baseline_ess)),
        }
        payload["notes"]["heldout"] = (
            f"every few steps, {d.log_Z.shape[1]} SMC runs of {d.num_particles} particles on "
            "held-out keys: log_mean_Z = log of the mean Z_hat (unbiased in Z for any twist) and "
            "its standard error, ess = mean final ESS / N; the no_twist_* figures are the same "
            "runs without a twist. A twist below no twist is worse than none (train warns)."
        )
    _write(args, payload)
    if args.plot:

        def draw(ax):
            if d is None:
                note = _curve(
                    ax, np.arange(1, losses.size + 1), losses, "loss", fmt="-", xname="step"
                )
                ax.set_ylabel("loss")
            else:
                se = np.asarray(d.log_mean_Z_se, np.float64)
                mean = np.asarray(d.log_mean_Z, np.float64)
                note = _curve(
                    ax,
                    d.steps,
                    mean,
                    "held-out log mean Z_hat (+-2 s.e.)",
                    band=(mean - 2 * se, mean + 2 * se),
                    xname="step",
                )
                base = float(d.baseline_log_mean_Z)
                if np.isfinite(base):
                    ax.axhline(base, color="gray", ls="--", label="no twist")
                ax.set_ylabel("log Z_hat (held-out)")
                ax.legend(fontsize=7)
            ax.set_xlabel("step")
            ax.set_title(args.method)
            return [note]

        _plot(args.plot, draw)
    return payload


def cmd_bounds(args) -> dict:
    from lm_inference.bounds import bidirectional_bounds, rejection_samples

    lm = _load_model(args.model, args.seed)
    target = _target(args, lm)
    twist = _twist(args, target)
    ex = rejection_samples(jax.random.key(args.seed + 1), target, args.runs)
    rows = []
    for n in args.particles_list:
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
    payload = {
        "twist": args.twist,
        "runs": args.runs,
        "bounds": rows,
        "notes": {
            "non_finite": NON_FINITE_NOTE,
            "lower": "[mean, lo, hi] over runs of the SMC lower bound on log Z (95 % t-interval; "
            "lo = hi = mean when a run is -inf)",
            "upper": "[mean, lo, hi] of the conditional-SMC upper bound on log Z",
            "iwae_lower": "mean importance-sampling (no resampling) lower bound",
            "iwae_upper": "mean importance-sampling upper bound",
            "kl_q_sigma": "[lo, hi] interval for KL(q || sigma) of the proposal (nats)",
            "kl_sigma_q": "[lo, hi] interval for KL(sigma || q) (nats)",
            "gap": "mean upper - lower (nats; 0 for a perfect twist)",
        },
    }
    _write(args, payload)
    if args.plot:

        def draw(ax):
            ns = [r["num_particles"] for r in rows]
            notes = []
            for key, label in (("lower", "SMC lower"), ("upper", "CSMC upper")):
                m = np.array([r[key] for r in rows], np.float64)
                notes.append(_curve(ax, ns, m[:, 0], label, band=(m[:, 1], m[:, 2]), xname="N"))
            ax.set_xscale("log", base=2)
            ax.set_xlabel("particles")
            ax.set_ylabel("log Z bounds")
            ax.legend(fontsize=7)
            return notes

        _plot(args.plot, draw)
    return payload


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults (except ``None`` and off flags) and keeps the epilog's layout."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


def _epilog() -> str:
    import textwrap

    specs = [(syntax, meaning) for syntax, meaning, _ in POTENTIALS.values()]
    specs.append(
        (
            "MODULE:FUNCTION",
            "an importable JAX function tokens [T] int32 -> scalar log phi (-inf for phi = 0), "
            "e.g. mypkg.events:has_rhyme",
        )
    )
    rows = [
        textwrap.fill(meaning, 96, initial_indent=f"  {syntax:<20} ", subsequent_indent=" " * 23)
        for syntax, meaning in specs
    ]
    return (
        "potentials (--potential SPEC): the target is p0(s | prompt) phi(s) / Z over the T new "
        "tokens s\n(after an EOS the remaining tokens are EOS padding):\n"
        + "\n".join(rows)
        + '\n\nJSON output: non-finite numbers are the strings "-inf" / "inf", NaN is null; '
        'the payload\'s "notes"\nfield explains every field. Exit status: 0 on success, 2 on '
        "bad input (message on stderr)."
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ppl-lm``."""
    p = argparse.ArgumentParser(
        prog="ppl-lm",
        description="Twisted SMC for language models from the command line.",
        epilog=_epilog(),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--traceback", action="store_true", help="on bad input, show the full traceback")
    sub = p.add_subparsers(dest="command", required=True, metavar="{sample,train,bounds}")
    for name, fn, helptext in (
        ("sample", cmd_sample, "run (twisted) SMC and print samples"),
        ("train", cmd_train, "train a twist head (CTL by default)"),
        ("bounds", cmd_bounds, "bidirectional log Z bounds and KLs"),
    ):
        s = sub.add_parser(
            name,
            help=helptext,
            description=helptext,
            epilog=_epilog(),
            formatter_class=_HelpFormatter,
        )
        s.set_defaults(fn=fn)
        s.add_argument(
            "--model",
            default=None,
            help="local Hugging Face folder or hub id (default: the embedded model), or "
            "tabular[:V] for a random tabular LM with V tokens (default 8) drawn with --seed",
        )
        s.add_argument("--prompt", default="Once upon a time", help="prompt text")
        s.add_argument(
            "--prompt-ids",
            default=None,
            help="comma-separated prompt token ids (replaces --prompt)",
        )
        s.add_argument(
            "--num-tokens", type=_int_at_least(1), default=8, help="T, the number of new tokens"
        )
        s.add_argument(
            "--potential",
            default="none",
            metavar="SPEC",
            help="the potential phi: none, contains_token:ID, ends_with:ID, contains_text:WORD "
            "or MODULE:FUNCTION (see 'potentials' below)",
        )
        s.add_argument(
            "--regex",
            default=None,
            metavar="PATTERN",
            help="phi *= 1[the decoded text fully matches PATTERN] (an outlines-core automaton, "
            "masked on the device); combined with every other potential option by product",
        )
        s.add_argument(
            "--json-schema",
            default=None,
            metavar="FILE",
            help="phi *= 1[the text is JSON valid for the schema in FILE]",
        )
        s.add_argument(
            "--short-words",
            type=_int_at_least(1),
            default=None,
            metavar="K",
            help="phi *= 1[every word has at most K letters] (LLaMPPL's example)",
        )
        s.add_argument(
            "--intersect",
            default=None,
            metavar="PROMPT",
            help="prompt intersection: phi *= p(s | PROMPT)^beta under the same model",
        )
        s.add_argument(
            "--intersect-beta",
            type=float,
            default=1.0,
            help="the power beta of --intersect",
        )
        s.add_argument(
            "--forced-eos",
            action="store_true",
            help="end every sequence with EOS; one without EOS after T tokens gets "
            "log p0(EOS | s) (genlm-control's semantics)",
        )
        s.add_argument(
            "--twist",
            default=None,
            help="twist checkpoint (safetensors)"
            + (": written, or resumed when it exists" if name == "train" else " from ppl-lm train"),
        )
        s.add_argument(
            "--head",
            default=None,
            choices=["mlp", "linear"],
            help="twist head kind (default: the --twist checkpoint's when it exists, else mlp)",
        )
        s.add_argument(
            "--prefix-size",
            type=_int_at_least(0),
            default=None,
            help="twist head: width of an embedding bag of the tokens so far, 0 for none "
            "(default: the --twist checkpoint's when it exists, else 0)",
        )
        if name != "train":
            s.add_argument(
                "--allow-twist-mismatch",
                action="store_true",
                help="use a --twist trained for another model, prompt or potential (with a "
                "warning; SMC stays unbiased, but may be much less efficient); another T or "
                "head is always an error",
            )
        s.add_argument("--seed", type=int, default=0, help="PRNG seed")
        s.add_argument("--out", default=None, help="JSON output file (default: stdout)")
        s.add_argument("--plot", default=None, help="PNG output file")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "sample":
            s.add_argument("--particles", type=_int_at_least(1), default=16, help="N")
            s.add_argument(
                "--ess-threshold",
                type=_fraction,
                default=0.5,
                help="resample when ESS < threshold * N",
            )
        if name == "train":
            s.add_argument(
                "--method",
                default="ctl",
                choices=["ctl", "sixo", "fudge", "rl", "dpg"],
                help="twist learning method",
            )
            s.add_argument(
                "--steps",
                type=_int_at_least(0),
                default=100,
                help="total optimizer steps (counting steps resumed from --twist)",
            )
            s.add_argument(
                "--batch-size", type=_int_at_least(1), default=64, help="sequences per step"
            )
            s.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
        if name == "bounds":
            s.add_argument(
                "--particles-list",
                type=_int_list,
                default="4,16,64",
                metavar="N1,N2,...",
                help="comma-separated particle counts N",
            )
            s.add_argument(
                "--runs", type=_int_at_least(1), default=16, help="independent runs per N"
            )
    return p


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def run(argv: list[str] | None = None) -> dict:
    """Run one ``ppl-lm`` command and return its JSON payload (also written to stdout or
    ``--out``). Bad input raises :class:`CLIError` (or the library's ``ValueError``)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.fn(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppl-lm`` console script: the exit status (0 on success, 2 on bad
    input, with a message on stderr)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)  # usage errors exit with status 2 here
    try:
        args.fn(args)
    except (CLIError, ValueError, OSError) as e:
        if args.traceback:
            raise
        print(f"ppl-lm {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
