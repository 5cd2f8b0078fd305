"""Load Hugging Face causal LM checkpoints into JAX, with no torch at run time.

Configuration and tokenizer come through transformers (``AutoConfig``, ``AutoTokenizer``), the
weights through safetensors as NumPy arrays (one ``model.safetensors`` or shards listed in
``model.safetensors.index.json``). The architectures are flax nnx modules whose parameters carry
Hugging Face's names (:mod:`lm_inference.models`), so loading is a lookup by name with a shape
check, and :meth:`CausalLM.save_pretrained` writes a checkpoint transformers loads back.

:class:`CausalLM` implements the decoding contract of :mod:`lm_inference.base`: pure ``prefill``
and ``decode_step`` functions of explicit parameters over a static-shape KV cache whose leaves
have the batch axis first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kernels.types import Array, ArrayTree
from lm_inference.base import DecodeOutput, broadcast_cache, reorder_cache
from lm_inference.models import (
    SUPPORTED_ARCHITECTURES,
    UnsupportedArchitectureError,
    dims,
    module_class,
    rules,
)
from lm_inference.models.layers import new_cache

__all__ = [
    "load",
    "CausalLM",
    "SUPPORTED_ARCHITECTURES",
    "UnsupportedArchitectureError",
    "CheckpointError",
    "default_dtype",
]

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match its configuration."""


def default_dtype():
    """bfloat16 on GPU and TPU, float32 on CPU."""
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


class CausalLM:
    """A causal LM in JAX: a flax nnx module split into a graph definition and parameters.

    Attributes:
        config: the Hugging Face configuration.
        tokenizer: a transformers tokenizer (left padding, a pad token), or ``None``.
        params: the parameters (an ``nnx.State`` pytree, Hugging Face names), passed explicitly
            to :meth:`prefill` and :meth:`decode_step` so that they are jit arguments.
        vocab_size, hidden_size, max_positions, num_layers: sizes from the config.
        eos_token_id: the end-of-sequence id (first one when the config lists several), or None.
        dtype: parameter and activation dtype.
        mesh: the ``('particles', 'model')`` mesh the parameters are placed on
            (:mod:`lm_inference.sharding`), or ``None``; :func:`lm_inference.sample` and
            :func:`lm_inference.smc` shard their particles over it.
    """

    def __init__(
        self, module: nnx.Module, config, tokenizer=None, path: Path | None = None, mesh=None
    ):
        self.graphdef, self.params = nnx.split(module)
        self.config = config
        self.tokenizer = tokenizer
        self.path = path
        self.mesh = mesh
        d = dims(config)
        self.dims = d
        self.vocab_size, self.hidden_size = d.vocab_size, d.hidden_size
        self.max_positions, self.num_layers = d.max_positions, d.num_layers
        leaf = jax.tree.leaves(self.params)[0]
        self.dtype = leaf.dtype
        eos = getattr(config, "eos_token_id", None)
        if isinstance(eos, list | tuple):
            eos = eos[0] if eos else None
        if eos is None and tokenizer is not None:
            eos = tokenizer.eos_token_id
        self.eos_token_id = None if eos is None else int(eos)

    def __repr__(self) -> str:
        n = sum(x.size for x in jax.tree.leaves(self.params))
        mesh = "" if self.mesh is None else f", mesh={dict(self.mesh.shape)}"
        return (
            f"CausalLM({self.config.model_type}, {n / 1e6:.2f}M parameters, {self.dtype}, "
            f"vocab {self.vocab_size}, {self.num_layers} layers, path={self.path}{mesh})"
        )

    def shard(self, mesh) -> CausalLM:
        """This model with its parameters placed on ``mesh`` by the architecture's partition rules
        (:func:`lm_inference.sharding.shard_params`); ``None``: on the default device, unsharded.

        Raises:
            ValueError: the mesh's ``'model'`` axis does not divide the (KV) heads.
        """
        from lm_inference import sharding

        if mesh is None:
            return self.replace(params=jax.device_put(self.params, jax.devices()[0]), mesh=None)
        sharding.check_mesh(self.dims, mesh)
        return self.replace(params=sharding.shard_params(self.params, rules(self.config), mesh),
                            mesh=mesh)

    def replace(self, **changes) -> CausalLM:
        """A copy with attributes changed (e.g. ``share_prompt=False``, ``params=...``); the
        rest (parameters, tokenizer, config) is shared, compiled functions are not."""
        out = object.__new__(CausalLM)
        out.__dict__.update({k: v for k, v in self.__dict__.items() if not k.startswith("_")})
        for name, value in changes.items():
            if not hasattr(self, name):
                raise AttributeError(f"CausalLM.replace: no attribute {name!r}.")
            setattr(out, name, value)
        return out

    #: :meth:`broadcast_state` keeps one copy of the prompt's keys and values for all particles
    #: (``False``: ``N`` copies, the layout of :func:`lm_inference.base.broadcast_cache`)
    share_prompt: bool = True

    # ---------------------------------------------------------------- pure functions
    def _forward(self, params, tokens, positions, cache, start):
        model = nnx.merge(self.graphdef, params)
        hidden, layers = model(tokens, positions, cache["layers"], cache["valid"], start)
        return model, hidden, layers

    def broadcast_state(self, cache: dict, num_particles: int, prompt_length: int) -> dict:
        """A batch-1 prefill cache (``prompt_length`` slots used) for ``num_particles`` rows.

        With :attr:`share_prompt` (default) the prompt's keys and values stay one copy,
        ``cache["prefix"]`` (``[1, L, H_kv, P, D]``, attended by every row,
        :mod:`lm_inference.models.layers`), and each row holds only the generated slots:
        memory per particle is ``S - P`` slots instead of ``S``, and :meth:`reorder_state`
        moves only those. Otherwise every leaf is repeated (``broadcast_cache``)."""
        if not self.share_prompt or "prefix" in cache:
            return broadcast_cache(cache, num_particles)
        p, n = int(prompt_length), int(num_particles)
        layers = cache["layers"]
        s = layers["k"].shape[3]
        prefix = {
            "k": layers["k"][:, :, :, :p], "v": layers["v"][:, :, :, :p],
            "valid": cache["valid"][:, :p],
        }
        gen = jnp.zeros((n, *layers["k"].shape[1:3], s - p, layers["k"].shape[4]), layers["k"].dtype)
        return {
            "prefix": prefix,
            "layers": {"k": gen, "v": gen},
            "valid": jnp.zeros((n, s - p), bool),
            "index": jnp.broadcast_to(cache["index"][:1] - p, (n,)),
            "position": jnp.broadcast_to(cache["position"][:1], (n,)),
        }

    @staticmethod
    def reorder_state(cache: dict, ancestors: Array) -> dict:
        """Rows gathered by ``ancestors``; a shared prompt (:meth:`broadcast_state`) is not
        moved."""
        rows = reorder_cache({k: v for k, v in cache.items() if k != "prefix"}, ancestors)
        return rows if "prefix" not in cache else {**rows, "prefix": cache["prefix"]}

    def prefill(
        self, params: ArrayTree, token_ids: Array, attention_mask: Array, max_length: int
    ) -> tuple[DecodeOutput, dict]:
        """Run left-padded prompts ``[B, P]``; return the next-token output and a cache of
        ``max_length`` slots (``P`` used). Position ids count real tokens only (as ``generate``)."""
        b, p = token_ids.shape
        d = self.dims
        mask = attention_mask.astype(jnp.int32)
        cache = new_cache(b, max_length, d.num_layers, d.num_kv_heads, d.head_dim, self.dtype)
        valid = cache["valid"].at[:, :p].set(mask.astype(bool))
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        cache = {**cache, "valid": valid}
        model, hidden, layers = self._forward(params, token_ids, positions, cache, 0)
        last = hidden[:, -1]
        out = DecodeOutput(model.unembed(last).astype(jnp.float32), last)
        cache = {
            "layers": layers,
            "valid": valid,
            "index": jnp.full((b,), p, jnp.int32),
            "position": jnp.sum(mask, axis=1).astype(jnp.int32),
        }
        return out, cache

    def decode_step(
        self, params: ArrayTree, tokens: Array, cache: dict
    ) -> tuple[DecodeOutput, dict]:
        """Append one token per row (``tokens [B]``) and return the next-token output (also on
        a shared-prompt cache, :meth:`broadcast_state`)."""
        start = cache["index"][0]
        slots = jnp.arange(cache["valid"].shape[1])
        valid = cache["valid"] | (slots == start)[None]
        positions = cache["position"][:, None]
        if "prefix" in cache:  # slots: the prompt's P, then the generated ones
            pre = cache["prefix"]
            p = pre["valid"].shape[1]
            b = tokens.shape[0]
            step = {
                "layers": {**cache["layers"], "prefix_k": pre["k"], "prefix_v": pre["v"]},
                "valid": jnp.concatenate([jnp.broadcast_to(pre["valid"], (b, p)), valid], 1),
            }
            model, hidden, layers = self._forward(params, tokens[:, None], positions, step, start + p)
            layers = {"k": layers["k"], "v": layers["v"]}
        else:
            step = {**cache, "valid": valid}
            model, hidden, layers = self._forward(params, tokens[:, None], positions, step, start)
        last = hidden[:, 0]
        out = DecodeOutput(model.unembed(last).astype(jnp.float32), last)
        new = {
            "layers": layers,
            "valid": valid,
            "index": cache["index"] + 1,
            "position": cache["position"] + 1,
        }
        return out, (new if "prefix" not in cache else {**new, "prefix": cache["prefix"]})

    def _full_logits(self, params, token_ids, attention_mask):
        b, t = token_ids.shape
        d = self.dims
        mask = attention_mask.astype(jnp.int32)
        cache = new_cache(b, t, d.num_layers, d.num_kv_heads, d.head_dim, self.dtype)
        cache = {**cache, "valid": mask.astype(bool)}
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        model, hidden, _ = self._forward(params, token_ids, positions, cache, 0)
        return model.unembed(hidden).astype(jnp.float32)

    @cached_property
    def _logits_jit(self):
        return jax.jit(self._full_logits)

    # ---------------------------------------------------------------- conveniences
    def logits(self, token_ids: Array, attention_mask: Array | None = None) -> Array:
        """Full-sequence next-token logits ``[B, T, V]`` (float32) for left-padded ``[B, T]`` ids."""
        ids = self.check_ids(token_ids)
        mask = jnp.ones_like(ids) if attention_mask is None else jnp.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask has shape {mask.shape} but token_ids has {ids.shape}."
            )
        return self._logits_jit(self.params, ids, mask)

    def check_ids(self, token_ids, extra: int = 0) -> Array:
        """Validate ``[B, T]`` token ids (range, and ``T + extra`` within the maximum positions)."""
        ids = np.asarray(token_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"token ids must be an integer array [B, T], got {ids.dtype} {ids.shape}."
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]."
            )
        if ids.shape[1] + extra > self.max_positions:
            raise ValueError(
                f"sequence of {ids.shape[1]} tokens{f' + {extra} new' if extra else ''} exceeds the "
                f"model's maximum positions ({self.max_positions}); shorten the prompt."
            )
        return jnp.asarray(ids, jnp.int32)

    def encode(self, prompts: str | list[str]) -> tuple[Array, Array]:
        """Tokenize one or several prompts into left-padded ``(token_ids, attention_mask)``."""
        if self.tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer files; pass token ids instead.")
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = [self.tokenizer(t)["input_ids"] for t in texts]
        bos = self.tokenizer.bos_token_id
        rows = [r if r else ([bos] if bos is not None else []) for r in rows]
        if any(len(r) == 0 for r in rows):
            raise ValueError(
                "a prompt is empty and the tokenizer has no BOS token to stand for it."
            )
        p = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = np.array([[pad] * (p - len(r)) + list(r) for r in rows], np.int32)
        mask = np.array([[0] * (p - len(r)) + [1] * len(r) for r in rows], np.int32)
        return jnp.asarray(ids), jnp.asarray(mask)

    def cache_bytes_per_particle(self, max_length: int, prompt_length: int = 0) -> int:
        """Bytes of KV cache one particle holds for ``max_length`` positions, of which the first
        ``prompt_length`` are a prompt shared by all particles (:attr:`share_prompt`; those
        are :meth:`cache_bytes_shared`, counted once)."""
        s = max_length - (prompt_length if self.share_prompt else 0)
        return self._kv_bytes(s) + s + 8  # + the validity mask and the two int32 counters

    def cache_bytes_shared(self, prompt_length: int) -> int:
        """Bytes of the prompt's KV cache held once for all particles (0 without
        :attr:`share_prompt`)."""
        return self._kv_bytes(prompt_length) + prompt_length if self.share_prompt else 0

    def _kv_bytes(self, slots: int) -> int:
        d = self.dims
        return 2 * d.num_layers * slots * d.num_kv_heads * d.head_dim * jnp.dtype(self.dtype).itemsize

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` (Hugging Face names) and the tokenizer."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(path)
        tensors = {
            ".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(self.params)
        }
        save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        return path


# -------------------------------------------------------------------- loading
def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or env.lower() in ("1", "true", "yes", "on")


def _resolve(name_or_path, cache_dir=None, revision=None) -> Path:
    """A local folder, or a hub id's snapshot folder from the local cache (or the hub)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; pass the checkpoint's folder.")
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CheckpointError(f"no checkpoint folder at {path}.")
    from huggingface_hub import snapshot_download

    kw = dict(
        allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
        cache_dir=cache_dir,
        revision=revision,
    )
    try:
        return Path(snapshot_download(name, local_files_only=True, **kw))
    except Exception as local_error:  # not in the local cache
        if _offline():
            raise CheckpointError(
                f"{name!r} is neither a local folder nor in the Hugging Face cache, and "
                "HF_HUB_OFFLINE is set; pass a local checkpoint folder."
            ) from local_error
        try:
            return Path(snapshot_download(name, **kw))
        except Exception as e:
            raise CheckpointError(
                f"{name!r} is neither a local folder nor in the Hugging Face cache, and it could "
                f"not be downloaded ({type(e).__name__}); pass a local checkpoint folder."
            ) from e


def _weight_files(path: Path) -> list[Path]:
    single, index = path / WEIGHTS_NAME, path / WEIGHTS_INDEX_NAME
    if single.exists():
        return [single]
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({e}).") from e
        missing = [s for s in shards if not (path / s).exists()]
        if missing:
            raise CheckpointError(f"{index} lists shards that are missing: {missing}.")
        return [path / s for s in shards]
    others = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
    hint = (
        f" It has {others}: convert them once with transformers' "
        "`model.save_pretrained(folder, safe_serialization=True)`."
        if others
        else ""
    )
    raise CheckpointError(
        f"no weights in {path}: expected {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}.{hint}"
    )


def _unreadable(f: Path, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"cannot read {f} ({type(e).__name__}: {e}); the file is corrupt or not "
        "safetensors: download or save the checkpoint again."
    )


def _index_tensors(files: list[Path]) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
    """Each tensor's ``(file, name, shape)``, from the safetensors headers only (no data is read).

    A key present in several files maps to the last one, as reading them all in order would."""
    from safetensors import safe_open

    index = {}
    for f in files:
        try:
            with safe_open(str(f), framework="np") as h:
                for k in h.keys():
                    index[k] = (f, k, tuple(h.get_slice(k).get_shape()))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise _unreadable(f, e) from e
    return index


def _read_tensor(f: Path, key: str) -> np.ndarray:
    """One tensor as a NumPy array that owns its memory.

    The file is opened for this tensor alone: safetensors memory-maps the whole file, and the
    pages a read touches count in the process's resident memory for as long as the map is open,
    so a handle kept across tensors would end up holding a second copy of the checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(str(f), framework="np") as h:
            return h.get_tensor(key)
    except Exception as e:
        raise _unreadable(f, e) from e


def _place(
    x: np.ndarray, dtype: jnp.dtype, device: jax.Device | jax.sharding.Sharding | None = None
) -> jax.Array:
    """``x`` on ``device`` (a device or sharding; ``None``: the default device) in ``dtype``.

    Host memory beyond the result is ``x`` and, when the target is the CPU, ``x`` cast (cast on
    the host: casting on the CPU device would allocate a float32 device copy first, and the freed
    copies fragment the heap); an accelerator casts its own copy. The call waits for the transfer
    so that ``x`` can be freed before the next tensor is read."""
    if device is None:
        on_cpu = jax.default_backend() == "cpu"
    elif isinstance(device, jax.sharding.Sharding):
        on_cpu = all(d.platform == "cpu" for d in device.device_set)
    else:
        on_cpu = device.platform == "cpu"
    if x.dtype != dtype and on_cpu:
        x = x.astype(dtype)
    out = jax.device_put(x, device)
    if out.dtype != dtype:
        out = out.astype(dtype)
    return out.block_until_ready()


def _lookup(tensors: dict, key: str):
    if key in tensors:
        return tensors[key]
    # some checkpoints (e.g. the hub's gpt2) store the base model without its prefix
    for prefix in ("transformer.", "model."):
        if key.startswith(prefix) and key[len(prefix) :] in tensors:
            return tensors[key[len(prefix) :]]
    return None


def _load_state(
    path: Path,
    config,
    state: nnx.State,
    dtype: jnp.dtype,
    device: jax.Device | jax.sharding.Sharding | Callable | None = None,
) -> list:
    """The flat state of ``state`` (abstract) filled from the weights in ``path``, tensor by tensor
    (``device`` may be ``dotted name -> device or sharding``).

    Names and shapes are checked against the file headers before any tensor is read; then each
    tensor is read, placed on ``device`` in ``dtype`` and its host copy dropped before the next
    one, so host memory holds the placed parameters and about two tensors more at most."""
    index = _index_tensors(_weight_files(path))
    todo, missing, mismatched = [], [], []
    for p, var in nnx.to_flat_state(state):
        key = ".".join(map(str, p))
        want = var.get_value()
        hit = _lookup(index, key)
        if hit is None:
            missing.append(key)
            continue
        f, stored, shape = hit
        if shape != tuple(want.shape):
            mismatched.append(f"{key}: checkpoint {shape}, config {tuple(want.shape)}")
            continue
        todo.append((p, var, f, stored))
    if missing or mismatched:
        problems = []
        if mismatched:
            problems.append(f"shape mismatches: {mismatched[:5]}")
        if missing:
            problems.append(f"missing tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        raise CheckpointError(
            f"the weights in {path} do not match its config.json ({config.model_type}): "
            + "; ".join(problems)
            + ". Check that config.json belongs to these weights."
        )
    where = device if callable(device) else (lambda key: device)
    return [
        (p, var.replace(value=_place(_read_tensor(f, stored), dtype, where(".".join(map(str, p))))))
        for p, var, f, stored in todo
    ]


def _tokenizer(path: Path):
    if not any((path / f).exists() for f in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        # batching only needs *a* pad id: padded slots are masked out of attention
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
    return tok


def load(
    name_or_path: str | os.PathLike | None = None,
    dtype: str | jnp.dtype | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    mesh=None,
) -> CausalLM:
    """Load a causal LM checkpoint in Hugging Face format into JAX.

    Args:
        name_or_path: a local folder with ``config.json`` and safetensors weights (single file or
            sharded with an index), or a hub id resolved through the local Hugging Face cache
            (downloaded only when the machine is online and ``HF_HUB_OFFLINE`` is unset).
            ``None`` loads the embedded default model (``lm_inference.DEFAULT_MODEL_PATH``).
        dtype: parameter and activation dtype; default bfloat16 on GPU, float32 on CPU.
        cache_dir: the Hugging Face cache to resolve hub ids in (default: ``HF_HUB_CACHE``).
        revision: the hub revision (branch, tag or commit) of a hub id.
        mesh: a ``('particles', 'model')`` mesh (:func:`lm_inference.sharding.make_mesh`): each
            tensor goes straight to its shards by the architecture's partition rules, and
            ``sample`` / ``smc`` shard their particles over the mesh. ``None``: one device.

    Names and shapes are checked against the safetensors headers before any weight is read; then
    each tensor is read alone, placed on the default device in ``dtype`` and its host copy freed,
    so host memory never holds a second full copy of the checkpoint (on CPU the peak is the loaded
    parameters plus about two of the largest tensor, measured in ``test_loading_memory.py``).

    Returns:
        :class:`CausalLM`. ``.tokenizer`` is ``None`` when the folder has no tokenizer files.

    Raises:
        UnsupportedArchitectureError: the ``model_type`` is not one of ``SUPPORTED_ARCHITECTURES``.
        CheckpointError: missing or corrupt weights, or weights that do not match the config.
        ValueError: the mesh's ``'model'`` axis does not divide the (KV) heads.
    """
    if name_or_path is None:
        from lm_inference import DEFAULT_MODEL_PATH

        name_or_path = DEFAULT_MODEL_PATH
        if not (Path(name_or_path) / "config.json").exists():
            raise CheckpointError(
                f"the embedded default model is missing from {name_or_path}; "
                "regenerate it with `python scripts/train_default_model.py`."
            )
    path = _resolve(name_or_path, cache_dir, revision)
    if not (path / "config.json").exists():
        raise CheckpointError(f"no config.json in {path}; is this a Hugging Face checkpoint?")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path))
    except ValueError as e:
        raw = json.loads((path / "config.json").read_text())
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise UnsupportedArchitectureError(
            f"architecture {raw.get('model_type')!r} is not supported (transformers does not "
            f"recognize it either); supported model types: {supported}."
        ) from e
    cls = module_class(config)  # raises UnsupportedArchitectureError
    dtype = jnp.dtype(dtype or default_dtype())
    abstract = nnx.eval_shape(lambda: cls(config, dtype))
    graphdef, state = nnx.split(abstract)
    device = None
    if mesh is not None:
        from lm_inference import sharding

        sharding.check_mesh(dims(config), mesh)
        placed = sharding.param_shardings(state, rules(config), mesh)
        by_name = {
            sharding.param_name(p): s for p, s in jax.tree_util.tree_flatten_with_path(placed)[0]
        }
        device = by_name.__getitem__
    flat = _load_state(path, config, state, dtype, device)
    module = nnx.merge(graphdef, nnx.from_flat_state(flat))
    return CausalLM(module, config, _tokenizer(path), path, mesh)
