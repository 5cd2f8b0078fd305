"""Qwen3 (dense): the Llama block with an RMSNorm per head on the queries and keys, before rope.

Per layer, with ``D = head_dim`` (explicit in the config, so ``H * D`` may differ from
``hidden_size``)::

    q = rope(q_norm(q_proj(x) as [B, T, H, D]))      q_norm, k_norm: RMSNorm over D, one weight
    k = rope(k_norm(k_proj(x) as [B, T, H_kv, D]))   shared by all heads
    v = v_proj(x) as [B, T, H_kv, D]

everything else as :mod:`lm_inference.models.llama`: pre-norm, SwiGLU MLP without biases,
``attention_bias`` on q/k/v and o, sliding window on the layers ``layer_types`` marks
``sliding_attention`` (``sliding_window`` is set only with ``use_sliding_window``), tied head when
``tie_word_embeddings``.
"""

from __future__ import annotations

from kernels.types import Array
from lm_inference.models import Architecture, decoder_dims
from lm_inference.models.layers import RMSNorm
from lm_inference.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM

__all__ = ["Qwen3ForCausalLM", "Qwen3Attention", "ARCHITECTURES"]


class Qwen3Attention(LlamaAttention):
    """Llama attention with ``q_norm``, ``k_norm`` (RMSNorm over ``head_dim``) before rope."""

    def __init__(self, config, layer: int, dtype):
        super().__init__(config, layer, dtype)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, dtype)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, dtype)

    def heads(self, x: Array) -> tuple[Array, Array, Array]:
        q, k, v = super().heads(x)
        return self.q_norm(q), self.k_norm(k), v


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_class = Qwen3Attention


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3 causal LM (``Qwen3ForCausalLM``)."""

    layer_class = Qwen3DecoderLayer


ARCHITECTURES = {
    "qwen3": Architecture(Qwen3ForCausalLM, "Qwen3 (dense)", decoder_dims),
}
