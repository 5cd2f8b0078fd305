r"""Language models as potentials: another prompt or another model, with its own KV cache in the
potential's state.

- :func:`prompted`: ``phi(s) = p(s | prompt_b)`` under a model (possibly the target's own).
  ``Target(lm, prompt_a, T, prompted(lm, prompt_b))`` is prompt intersection,
  ``sigma(s) ∝ p(s | a) p(s | b)``; with another model of the same tokenizer it is a product of
  models, and ``tempered(prompted(...), beta)`` a power ``p^beta``. The next-token weights are
  the model's log probabilities of every token (``logw_next``), so the proposal is
  ``q ∝ p_a p_b^beta psi`` in one pass.
- :func:`infilling`: ``phi(s) = p0(continuation | prompt, s)`` at completion.
"""

import jax
import jax.numpy as jnp
import numpy as np

from kernels.types import Array, PRNGKey
from lm_inference.potentials.base import Potential

__all__ = ["prompted", "infilling", "infilling_joint_samples"]


def _prompt_ids(lm, prompt, what: str) -> np.ndarray:
    if isinstance(prompt, str):
        if getattr(lm, "tokenizer", None) is None:
            raise ValueError(f"{what}: a text prompt needs a tokenizer; pass token ids.")
        ids = lm.tokenizer(prompt)["input_ids"]
        if len(ids) == 0 and getattr(lm.tokenizer, "bos_token_id", None) is not None:
            ids = [lm.tokenizer.bos_token_id]
    else:
        ids = prompt
    ids = np.asarray(ids, np.int64).reshape(-1)
    if ids.size == 0:
        raise ValueError(f"{what}: the prompt is empty; give at least one token (e.g. BOS).")
    if ids.min() < 0 or ids.max() >= lm.vocab_size:
        raise ValueError(f"{what}: prompt token ids must be in [0, {lm.vocab_size}).")
    return ids.astype(np.int32)


def prompted(lm, prompt: str | Array, name: str | None = None) -> Potential:
    """``log phi(s) = log p(s | prompt)`` under ``lm`` (module docstring).

    Args:
        lm: a language model with the target's vocabulary (same tokenizer).
        prompt: text or token ids conditioning this factor.
        name: label for messages (default ``"prompted(...)"``).
    """
    ids = jnp.asarray(_prompt_ids(lm, prompt, "prompted"))
    plen = int(ids.shape[0])
    max_pos = getattr(lm, "max_positions", None)

    def init(params, _target_prompt, num_tokens):
        if max_pos is not None and plen + num_tokens + 1 > max_pos:
            raise ValueError(
                f"prompted: prompt ({plen} tokens) + T ({num_tokens}) exceeds the model's "
                f"maximum positions ({max_pos})."
            )
        out, cache = lm.prefill(
            params, ids[None], jnp.ones((1, plen), jnp.int32), plen + num_tokens + 1
        )
        logp = jax.nn.log_softmax(out.logits[0].astype(jnp.float32))
        return logp, jax.tree.map(lambda x: x[0], cache)

    def logw_next(params, state, t):
        return state[0]

    def update(params, state, tokens, t):
        out, cache = lm.decode_step(params, tokens, state[1])
        logp = jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1)
        return (logp, cache), jnp.zeros(tokens.shape[0], jnp.float32)

    label = name or (f"prompted({prompt!r})" if isinstance(prompt, str) else f"prompted({plen} ids)")
    return Potential(
        init=init,
        update=update,
        logw_next=logw_next,
        params=lm.params,
        batched=True,
        name=label,
        info={"kind": "prompted", "prompt_ids": np.asarray(ids)},
    )


def infilling(lm, prompt_ids: Array, continuation: Array) -> Potential:
    """``log phi(s) = log p0(continuation | prompt, s)`` with the LM itself (infilling target).

    Use with EOS handling off (``Target(..., eos_token_id=-1)``). ``Z`` is then
    ``p0(continuation | prompt)`` marginally over the ``T`` middle tokens.
    """
    cont = np.asarray(continuation)
    if cont.ndim != 1 or cont.size == 0:
        raise ValueError("infilling: continuation must be a non-empty 1-D array of token ids.")
    prompt = jnp.asarray(prompt_ids, jnp.int32)
    cont_j = jnp.asarray(cont, jnp.int32)

    def complete(params, state, tokens):
        ids = jnp.concatenate([prompt, tokens, cont_j])
        p, t, c = prompt.shape[0], tokens.shape[0], cont_j.shape[0]
        out, cache = lm.prefill(
            params, ids[None, : p + t], jnp.ones((1, p + t), jnp.int32), p + t + c
        )

        def body(carry, tok):
            out, cache = carry
            lp = jax.nn.log_softmax(out.logits[0].astype(jnp.float32))[tok]
            out, cache = lm.decode_step(params, tok[None], cache)
            return (out, cache), lp

        _, lps = jax.lax.scan(body, (out, cache), cont_j)
        return jnp.sum(lps)

    return Potential(
        complete=complete,
        params=lm.params,
        name="infilling",
        info={"kind": "infilling", "continuation": cont.astype(np.int32)},
    )


def infilling_joint_samples(key: PRNGKey, target, num_samples: int) -> Array:
    """Exact posterior samples for an infilling target by the joint-sampling trick.

    Sample ``(s, c) ~ p0(s, c | prompt)`` ancestrally (middle tokens then ``len(continuation)``
    more); keeping ``s`` from the draws whose ``c`` equals the continuation gives exact draws of
    ``sigma(s) ∝ p0(s) p0(continuation | s)``. This is rejection sampling with acceptance
    probability ``Z``; for a fixed budget it is exact, not approximate.

    Args:
        key: PRNG key.
        target: a target whose potential came from :func:`infilling`.
        num_samples: number of exact draws wanted.
    """
    from lm_inference.target import Target
    from lm_inference.twisted_smc import smc

    pot = target.potential
    if pot is None or pot.info.get("kind") != "infilling":
        raise ValueError("infilling_joint_samples: the target's potential is not infilling(...).")
    cont = pot.info["continuation"]
    joint = Target(target.lm, target.prompt_ids, target.num_tokens + cont.shape[0], None, -1)
    T = target.num_tokens
    out, n = [], 0
    for _ in range(1000):
        key, k = jax.random.split(key)
        s = np.asarray(smc(k, joint, 1024, ess_threshold=0.0).samples)
        keep = np.all(s[:, T:] == cont, axis=1)
        out.append(s[keep, :T])
        n += int(keep.sum())
        if n >= num_samples:
            return jnp.asarray(np.concatenate(out)[:num_samples])
    raise ValueError("infilling_joint_samples: continuation too unlikely for the joint trick.")
