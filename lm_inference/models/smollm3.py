"""SmolLM3: the Llama block with rope left out on some layers ("NoPE" layers).

Layer ``i`` applies rope to q and k when ``no_rope_layers[i]`` is 1 and none when it is 0 (despite
the name, a 1 means *use* rope; transformers builds the list from ``no_rope_layer_interval = n`` as
``no_rope_layers[i] = int((i + 1) % n != 0)``, so every ``n``-th layer has no rope). Sliding window
on the layers ``layer_types`` marks ``sliding_attention`` (by default the no-rope layers, when
``use_sliding_window`` and ``sliding_window`` are set), as transformers' eager attention masks them.
Everything else as :mod:`lm_inference.models.llama`: pre-norm, SwiGLU MLP (``mlp_bias``),
``attention_bias`` on q/k/v and o, tied head unless ``tie_word_embeddings`` is false.
"""

from __future__ import annotations

import jax.numpy as jnp

from kernels.types import Array
from lm_inference.models import Architecture, decoder_dims
from lm_inference.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM

__all__ = ["SmolLM3ForCausalLM", "SmolLM3Attention", "uses_rope", "ARCHITECTURES"]


def uses_rope(config) -> list[bool]:
    """Whether each layer applies rope (``no_rope_layers[i] == 1``)."""
    flags = list(config.no_rope_layers)
    if len(flags) != config.num_hidden_layers:
        raise ValueError(
            f"no_rope_layers has {len(flags)} entries for {config.num_hidden_layers} layers."
        )
    return [bool(f) for f in flags]


class SmolLM3Attention(LlamaAttention):
    """Llama attention whose q and k are rotated only where ``spec["rope"]`` (:func:`uses_rope`)."""

    def rotate(
        self, q: Array, k: Array, positions: Array, inv_freq: Array, spec: dict
    ) -> tuple[Array, Array]:
        flag = spec["rope"]
        if isinstance(flag, bool):  # unrolled: a Python flag
            return super().rotate(q, k, positions, inv_freq, spec) if flag else (q, k)
        qr, kr = super().rotate(q, k, positions, inv_freq, spec)  # scanned: a traced flag
        return jnp.where(flag, qr, q), jnp.where(flag, kr, k)


class SmolLM3DecoderLayer(LlamaDecoderLayer):
    attention_class = SmolLM3Attention


class SmolLM3ForCausalLM(LlamaForCausalLM):
    """SmolLM3 causal LM (``SmolLM3ForCausalLM``)."""

    layer_class = SmolLM3DecoderLayer

    def __init__(self, config, dtype):
        super().__init__(config, dtype)
        self.rope_flags = tuple(uses_rope(config))

    def layer_specs(self) -> list[dict]:
        return [
            {**s, "rope": r} for s, r in zip(super().layer_specs(), self.rope_flags, strict=True)
        ]


ARCHITECTURES = {
    "smollm3": Architecture(SmolLM3ForCausalLM, "SmolLM3 (rope and no-rope layers)", decoder_dims),
}
