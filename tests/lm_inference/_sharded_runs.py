"""Run by ``test_lm_sharding.py`` in a subprocess with 8 forced CPU devices (the device count is
fixed when JAX starts). Prints one JSON object of comparisons."""

import json
import os
import sys
import tempfile

if __name__ == "__main__":  # imported by _multiprocess_run.py, which sets its own devices
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import transformers as T  # noqa: E402

import lm_inference  # noqa: E402
from lm_inference import Target, sample, sharding, smc  # noqa: E402
from lm_inference.loading import CausalLM  # noqa: E402
from lm_inference.models import module_class  # noqa: E402

MESHES = [(1, 8), (2, 4), (4, 2), (8, 1)]


def random_lm(config, seed=0):
    lm = CausalLM(module_class(config)(config, jnp.float32), config)
    leaves, treedef = jax.tree.flatten(lm.params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    lm.params = jax.tree.unflatten(
        treedef, [0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )
    return lm


def potential(s):
    return jnp.where(s[0] == 5, 0.0, -1.0) - 0.1 * jnp.sum(s == 7)


def llama_config():
    """An 8-head Llama (8 KV heads), so every mesh of 8 devices divides its heads."""
    return T.LlamaConfig(
        vocab_size=48, hidden_size=64, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=64,
        eos_token_id=1,
    )


def llama_target(lm=None):
    lm = random_lm(llama_config()) if lm is None else lm
    return Target(lm, jnp.asarray([2, 3, 4], jnp.int32), 6, potential)


def compare(a, b):
    """Same samples, and log weights / log Z to float rounding (the largest difference)."""
    return {
        "same_samples": bool(np.array_equal(a.samples, b.samples)),
        "same_resampled": bool(np.array_equal(a.resampled, b.resampled)),
        "log_Z": float(abs(a.log_Z - b.log_Z)),
        "log_weights": float(np.nanmax(np.abs(np.asarray(a.log_weights - b.log_weights)))),
    }


def main(which):
    out = {"devices": len(jax.devices())}
    if which in ("llama", "all"):
        cfg = llama_config()
        lm = random_lm(cfg)
        tg = llama_target(lm)
        prompt = tg.prompt_ids
        ref = smc(jax.random.key(1), tg, 16)
        cref = smc(jax.random.key(3), tg, 16, reference=ref.samples[0])
        sref = sample(jax.random.key(2), lm, prompt, 16, 6)
        runs = {}
        for p, m in MESHES:
            mesh = sharding.make_mesh(p, m)
            r = smc(jax.random.key(1), tg, 16, mesh=mesh)
            s = sample(jax.random.key(2), lm, prompt, 16, 6, mesh=mesh)
            runs[f"{p}x{m}"] = {
                "smc": compare(r, ref),
                "sample_same": bool(np.array_equal(s.tokens, sref.tokens)),
                "sample_log_probs": float(np.abs(s.log_probs - sref.log_probs).max()),
                "samples_spec": str(r.samples.sharding.spec),
            }
        c = smc(jax.random.key(3), tg, 16, reference=ref.samples[0], mesh=sharding.make_mesh(2, 4))
        runs["2x4"]["csmc"] = compare(c, cref)
        out["llama"] = runs
        # placement: weights by the rules, the cache over particles and KV heads
        mesh = sharding.make_mesh(2, 4)
        placed = lm.shard(mesh)
        layer = placed.params["model"]["layers"][0]
        q = layer["self_attn"]["q_proj"]["weight"].get_value()
        o = layer["self_attn"]["o_proj"]["weight"].get_value()
        norm = layer["input_layernorm"]["weight"].get_value()
        constrain = sharding.particle_constraint(mesh, lm.vocab_size)
        _, cache = jax.jit(lambda pr: lm.prefill(pr, jnp.zeros((8, 3), jnp.int32),
                                                 jnp.ones((8, 3), jnp.int32), 8))(placed.params)
        cache = jax.jit(constrain)(cache)
        k = cache["layers"]["k"]
        out["placement"] = {
            "q_proj": [str(q.sharding.spec), list(q.addressable_shards[0].data.shape)],
            "o_proj": [str(o.sharding.spec), list(o.addressable_shards[0].data.shape)],
            "norm": str(norm.sharding.spec),
            "cache_k": [str(k.sharding.spec), list(k.addressable_shards[0].data.shape)],
            "repr": repr(placed),
        }
        # load(mesh=) places tensor by tensor and gives the same run
        with tempfile.TemporaryDirectory() as d:
            lm.save_pretrained(d)
            loaded = lm_inference.load(d, mesh=mesh)
            w = loaded.params["model"]["layers"][1]["mlp"]["up_proj"]["weight"].get_value()
            r = smc(jax.random.key(1), Target(loaded, prompt, 6, potential), 16)
            out["load"] = {
                "up_proj": [str(w.sharding.spec), list(w.addressable_shards[0].data.shape)],
                "mesh": dict(loaded.mesh.shape),
                "smc": compare(r, ref),
            }
        errors = {}
        small = T.LlamaConfig(**{**cfg.to_dict(), "num_key_value_heads": 2})
        for name, fn in {
            "heads": lambda: random_lm(small).shard(sharding.make_mesh(1, 8)),
            "particles": lambda: smc(jax.random.key(0), tg, 12, mesh=sharding.make_mesh(8, 1)),
        }.items():
            try:
                fn()
                errors[name] = None
            except ValueError as e:
                errors[name] = str(e)
        out["errors"] = errors
    if which in ("architectures", "all"):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        from tests.lm_inference.test_models_scan import CONFIGS

        arch = {}
        mesh = sharding.make_mesh(4, 2)
        for name, cfg in sorted(CONFIGS.items()):
            lm = random_lm(cfg)
            tg = Target(lm, jnp.asarray([2, 3, 4], jnp.int32), 5, potential, eos_token_id=1)
            ref = smc(jax.random.key(1), tg, 8)
            arch[name] = compare(smc(jax.random.key(1), tg, 8, mesh=mesh), ref)
        out["architectures"] = arch
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
