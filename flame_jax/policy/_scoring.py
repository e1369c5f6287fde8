"""Teacher-forced per-token log-probabilities, chunked over the vocabulary; shared-prefix Yes/No.

``chunked_token_logprobs`` computes

    logp[n] = h_n . W[y_n] - logsumexp_v (h_n . W[v])

from final hidden states ``h`` and the unembedding ``W`` ([vocab, dim]) one vocabulary chunk at a
time, with an online log-sum-exp (running max and rescaled sum). The backward pass is a
``jax.custom_vjp`` that recomputes each chunk's logits from the saved log-sum-exp:

    d logp[n] / d logits[n, v] = 1[v = y_n] - softmax(logits[n])_v,
    dh_n = sum_v g_n (1[v = y_n] - p_nv) W[v],    dW[v] = sum_n g_n (1[v = y_n] - p_nv) h_n,

so neither pass holds a ``[tokens, vocab]`` float32 array: the largest temporary is
``[tokens, chunk_size]``. Logits are always accumulated in float32 (bfloat16 parameters are
multiplied with ``preferred_element_type=float32``).

Sequence conventions (used by the sampler too). A row of ``tokens`` is left-padded prompt +
right-padded completion with a ``mask`` of real tokens; ``positions = cumsum(mask) - 1`` clipped
at 0, so padding never shifts RoPE positions. ``token_logprobs`` returns ``[batch, tokens]`` with
entry t = log p(tokens[t] | real tokens before t), and 0 where token t is padding or has no real
token before it (the first real token of a row).

``lora=False`` runs the same decoder with its adapters off (the reference policy; see
``flame_jax.policy._model``).

References:
    Milakov & Gimelshein, "Online normalizer calculation for softmax", arXiv 1805.02867 (2018).
    Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", arXiv 2411.09009 (2024).
    FLAME, arXiv 2505.20218 (2025), §4 (pi_cls Yes/No prediction).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, Bool, Float, Int
from flame_jax.policy._model import Decoder

__all__ = [
    "YesNoScores",
    "chunked_logsumexp",
    "chunked_token_logprobs",
    "completion_logprobs",
    "naive_token_logprobs",
    "positions_from_mask",
    "token_logprobs",
    "yes_no_scores",
]


def positions_from_mask(mask: Bool[Array, "batch tokens"]) -> Int[Array, "batch tokens"]:
    """RoPE positions of a padded batch: ``cumsum(mask) - 1`` clipped at 0.

    Examples:
        >>> import jax.numpy as jnp
        >>> positions_from_mask(jnp.array([[False, True, True, False]])).tolist()
        [[0, 0, 1, 1]]
    """
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def _num_chunks(vocab: int, chunk: int) -> tuple[int, int]:
    """(chunk width, number of chunks): the fewest chunks of at most ``chunk`` columns, balanced.

    Equal widths keep the shifted last window's overlap (masked, wasted columns) below the
    number of chunks: vocabulary 7040 with ``chunk`` 4096 runs 2 x 3520, not 2 x 4096.
    """
    num = -(-vocab // min(chunk, vocab))
    return -(-vocab // num), num


def _chunk_logits(h: Array, w: Array, j: Array, chunk: int) -> tuple[Array, Array, Array]:
    """Logits of vocabulary chunk j, read from ``w`` in place (no padded copy of ``w``).

    The last chunk's window is shifted left to stay inside ``w``; columns it shares with the
    previous chunk are masked (-inf) so that every column counts exactly once.
    """
    vocab = w.shape[0]
    start = jnp.minimum(j * chunk, vocab - chunk)
    w_chunk = jax.lax.dynamic_slice_in_dim(w, start, chunk, axis=0)
    logits = jnp.einsum("nd,cd->nc", h, w_chunk, preferred_element_type=jnp.float32)
    cols = start + jnp.arange(chunk, dtype=jnp.int32)
    fresh = cols >= j * chunk
    return jnp.where(fresh[None, :], logits, -jnp.inf), cols, start


def _forward(h: Array, w: Array, y: Array, chunk: int) -> tuple[Array, Array]:
    chunk, num = _num_chunks(w.shape[0], chunk)
    n = h.shape[0]

    def body(j, carry):
        m, s, picked = carry
        logits, cols, _ = _chunk_logits(h, w, j, chunk)
        m_new = jnp.maximum(m, logits.max(axis=1))
        s = s * jnp.exp(m - m_new) + jnp.exp(logits - m_new[:, None]).sum(axis=1)
        hit = cols[None, :] == y[:, None]
        picked = picked + jnp.where(hit & jnp.isfinite(logits), logits, 0.0).sum(axis=1)
        return m_new, s, picked

    init = (
        jnp.full((n,), -jnp.inf, jnp.float32),
        jnp.zeros((n,), jnp.float32),
        jnp.zeros((n,), jnp.float32),
    )
    m, s, picked = jax.lax.fori_loop(0, num, body, init)
    lse = m + jnp.log(s)
    return picked - lse, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked(h: Array, w: Array, y: Array, chunk: int) -> Array:
    return _forward(h, w, y, chunk)[0]


def _chunked_fwd(h, w, y, chunk):
    logp, lse = _forward(h, w, y, chunk)
    return logp, (h, w, y, lse)


def _chunked_bwd(chunk, residuals, g):
    h, w, y, lse = residuals
    chunk, num = _num_chunks(w.shape[0], chunk)
    g = g.astype(jnp.float32)
    h32 = h.astype(jnp.float32)

    def body(j, carry):
        dh, dw = carry
        logits, cols, start = _chunk_logits(h, w, j, chunk)
        p = jnp.exp(logits - lse[:, None])  # exactly 0 on masked columns (logit -inf)
        onehot = (cols[None, :] == y[:, None]) & jnp.isfinite(logits)
        d_logits = g[:, None] * (onehot.astype(jnp.float32) - p)
        w_chunk = jax.lax.dynamic_slice_in_dim(w, start, chunk, axis=0).astype(jnp.float32)
        dh = dh + jnp.einsum("nc,cd->nd", d_logits, w_chunk, preferred_element_type=jnp.float32)
        dw_chunk = jnp.einsum("nc,nd->cd", d_logits, h32, preferred_element_type=jnp.float32)
        old = jax.lax.dynamic_slice_in_dim(dw, start, chunk, axis=0)
        dw = jax.lax.dynamic_update_slice_in_dim(dw, old + dw_chunk.astype(dw.dtype), start, 0)
        return dh, dw

    # dW accumulates in w's dtype without loss: a column gets a non-zero update from exactly one
    # chunk (the shifted last window adds exact zeros to the columns it shares).
    init = (jnp.zeros(h.shape, jnp.float32), jnp.zeros(w.shape, w.dtype))
    dh, dw = jax.lax.fori_loop(0, num, body, init)
    return dh.astype(h.dtype), dw.astype(w.dtype), None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def chunked_token_logprobs(
    hidden: Float[Array, "*lead dim"],
    unembedding: Float[Array, "vocab dim"],
    targets: Int[Array, "*lead"],
    *,
    chunk_size: int = 4096,
) -> Float[Array, "*lead"]:
    """log softmax(hidden @ unembedding.T)[targets], chunked over the vocabulary (differentiable).

    Differentiable in ``hidden`` and ``unembedding`` with a chunked custom VJP; neither pass
    materialises ``[..., vocab]`` float32 logits (the largest temporary is ``[n, chunk_size]``).

    Args:
        hidden: ``[..., dim]`` final-normed hidden states (any float dtype).
        unembedding: ``[vocab, dim]`` output embedding (``Decoder.unembedding()``).
        targets: ``[...]`` token ids in ``[0, vocab)``.
        chunk_size: vocabulary columns per chunk (static; clipped to the vocabulary size).

    Returns:
        ``[...]`` float32 log-probabilities.

    Examples:
        >>> import jax.numpy as jnp
        >>> h = jnp.ones((2, 3))
        >>> w = jnp.zeros((5, 3))
        >>> out = chunked_token_logprobs(h, w, jnp.array([0, 4]), chunk_size=2)
        >>> [round(v, 4) for v in out.tolist()]
        [-1.6094, -1.6094]
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    lead = targets.shape
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_y = targets.reshape(-1).astype(jnp.int32)
    return _chunked(flat_h, unembedding, flat_y, int(chunk_size)).reshape(lead)


def chunked_logsumexp(
    hidden: Float[Array, "*lead dim"],
    unembedding: Float[Array, "vocab dim"],
    *,
    chunk_size: int = 4096,
) -> Float[Array, "*lead"]:
    """logsumexp_v (hidden . unembedding[v]) over vocabulary chunks (float32; forward only).

    Examples:
        >>> import jax.numpy as jnp
        >>> round(float(chunked_logsumexp(jnp.ones((3,)), jnp.zeros((4, 3)))), 4)
        1.3863
    """
    lead = hidden.shape[:-1]
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    zeros = jnp.zeros(flat_h.shape[:1], jnp.int32)
    return _forward(flat_h, unembedding, zeros, int(chunk_size))[1].reshape(lead)


def naive_token_logprobs(
    hidden: Float[Array, "*lead dim"],
    unembedding: Float[Array, "vocab dim"],
    targets: Int[Array, "*lead"],
) -> Float[Array, "*lead"]:
    """The unchunked computation (full float32 logits, then log-softmax); for tests and benches.

    Examples:
        >>> import jax.numpy as jnp
        >>> round(float(naive_token_logprobs(jnp.ones((3,)), jnp.zeros((4, 3)), jnp.array(1))), 4)
        -1.3863
    """
    logits = jnp.einsum("...d,vd->...v", hidden, unembedding, preferred_element_type=jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def token_logprobs(
    model: Decoder,
    tokens: Int[Array, "batch tokens"],
    mask: Bool[Array, "batch tokens"],
    *,
    embeddings: Float[Array, "batch tokens dim"] | None = None,
    chunk_size: int = 4096,
    lora: bool = True,
) -> Float[Array, "batch tokens"]:
    """Teacher-forced log p(tokens[:, t] | real tokens before t) for every position.

    Args:
        model: a ``flame_jax.policy.Decoder``.
        tokens: ``[batch, tokens]`` ids (any padding layout; padding ids are ignored).
        mask: ``[batch, tokens]`` True at real tokens.
        embeddings: input embeddings to use instead of ``model.embed(tokens)`` (knowledge fusion).
        chunk_size: vocabulary chunk of ``chunked_token_logprobs``.
        lora: False runs the decoder with its LoRA adapters off (the reference policy).

    Returns:
        ``[batch, tokens]`` float32; 0 at padding and at the first real token of each row.
    """
    if embeddings is None:
        embeddings = model.embed(tokens)
    hidden, _ = model(embeddings, positions_from_mask(mask), kv_mask=mask, lora=lora)
    logp = chunked_token_logprobs(
        hidden[:, :-1], model.unembedding(), tokens[:, 1:], chunk_size=chunk_size
    )
    # Token t has a real predecessor iff some real token precedes it.
    seen = jnp.cumsum(mask.astype(jnp.int32), axis=1)[:, :-1] > 0
    keep = mask[:, 1:] & seen
    logp = jnp.where(keep, logp, 0.0)
    return jnp.concatenate([jnp.zeros_like(logp[:, :1]), logp], axis=1)


def completion_logprobs(
    model: Decoder,
    prompt_tokens: Int[Array, "batch prompt"],
    prompt_mask: Bool[Array, "batch prompt"],
    completion_tokens: Int[Array, "batch completion"],
    completion_mask: Bool[Array, "batch completion"],
    *,
    prompt_embeddings: Float[Array, "batch prompt dim"] | None = None,
    chunk_size: int = 4096,
    lora: bool = True,
    allowed: Bool[Array, "batch completion vocab"] | None = None,
) -> Float[Array, "batch completion"]:
    """Per-token log-probs of completions given left-padded prompts (the GRPO / SFT quantity).

    ``completion_tokens`` are right-padded (``completion_mask`` True at real tokens), as the
    sampler returns them. Entries at completion padding are 0.

    Args:
        model: a ``flame_jax.policy.Decoder``.
        prompt_tokens: ``[batch, prompt]`` left-padded prompt ids.
        prompt_mask: ``[batch, prompt]`` True at real prompt tokens (at least one per row).
        completion_tokens: ``[batch, completion]`` right-padded completion ids.
        completion_mask: ``[batch, completion]`` True at real completion tokens.
        prompt_embeddings: fused prompt embeddings (knowledge fusion) instead of ``embed``.
        chunk_size: vocabulary chunk.
        lora: False runs the decoder with its LoRA adapters off (the reference policy).
        allowed: the log-probs of a constrained policy: at each real completion position only
            these tokens (which must include the completion's token) are possible, and the
            distribution is renormalised over them (the sampler's ``constrained_logprobs``).
            Computed with dense ``[batch, completion, vocab]`` logits (not chunked).

    Returns:
        ``[batch, completion]`` float32 log-probabilities.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from flame_jax.policy._config import DecoderConfig
        >>> model = Decoder(DecoderConfig.tiny(vocab_size=32, num_layers=1), rngs=nnx.Rngs(0))
        >>> prompt = jnp.array([[0, 5, 6]])  # one left-padding slot
        >>> completion = jnp.array([[7, 8, 0]])  # one right-padding slot
        >>> lp = completion_logprobs(model, prompt, prompt != 0, completion, completion != 0)
        >>> lp.shape, bool(lp[0, 2] == 0), bool((lp[0, :2] < 0).all())
        ((1, 3), True, True)
    """
    tokens = jnp.concatenate([prompt_tokens, completion_tokens], axis=1)
    mask = jnp.concatenate([prompt_mask, completion_mask], axis=1)
    embeddings = None
    if prompt_embeddings is not None:
        embeddings = jnp.concatenate(
            [prompt_embeddings, model.embed(completion_tokens).astype(prompt_embeddings.dtype)],
            axis=1,
        )
    prompt = prompt_tokens.shape[1]
    if prompt == 0:
        if allowed is not None:
            raise ValueError("completion_logprobs: allowed needs a prompt of >= 1 token")
        logp = token_logprobs(
            model, tokens, mask, embeddings=embeddings, chunk_size=chunk_size, lora=lora
        )
        return logp[:, prompt:]
    if embeddings is None:
        embeddings = model.embed(tokens)
    hidden, _ = model(embeddings, positions_from_mask(mask), kv_mask=mask, lora=lora)
    seen = jnp.cumsum(mask.astype(jnp.int32), axis=1)[:, prompt - 1 : -1] > 0
    if allowed is not None:
        logits = model.logits(hidden[:, prompt - 1 : -1]).astype(jnp.float32)
        keep = allowed | ~(completion_mask & seen)[..., None]  # padding: any finite value
        logits = jnp.where(keep, logits, -jnp.inf)
        picked = jnp.take_along_axis(logits, completion_tokens[..., None], axis=-1)[..., 0]
        logp = picked - jax.nn.logsumexp(logits, axis=-1)
        return jnp.where(completion_mask & seen, logp, 0.0)
    # Only the states that predict completion tokens go through the vocabulary projection (the
    # prompt's next-token log-probs would be computed and thrown away).
    logp = chunked_token_logprobs(
        hidden[:, prompt - 1 : -1],
        model.unembedding(),
        completion_tokens,
        chunk_size=chunk_size,
    )
    return jnp.where(completion_mask & seen, logp, 0.0)


class YesNoScores(NamedTuple):
    """Yes/No scores of candidates: full-vocabulary log-probs and the renormalised p(Yes)."""

    logp_yes: Float[Array, "batch items"]
    logp_no: Float[Array, "batch items"]
    p_yes: Float[Array, "batch items"]


def yes_no_scores(
    model: Decoder,
    prefix_tokens: Int[Array, "batch prefix"],
    prefix_mask: Bool[Array, "batch prefix"],
    suffix_tokens: Int[Array, "batch items suffix"],
    suffix_mask: Bool[Array, "batch items suffix"],
    *,
    yes_id: int,
    no_id: int,
    prefix_embeddings: Float[Array, "batch prefix dim"] | None = None,
    suffix_embeddings: Float[Array, "batch items suffix dim"] | None = None,
    chunk_size: int = 4096,
    item_block: int | None = None,
    lora: bool = True,
) -> YesNoScores:
    """Score the next token after ``prefix + suffix[i]`` as Yes/No for many candidates at once.

    The shared prefix (one per batch row, left-padded) runs once into a KV cache of
    ``prefix + suffix`` slots; the cache is broadcast to every candidate (of a block of
    ``item_block`` candidates) and the right-padded candidate suffixes run against it. The
    answer is read at each suffix's last real token:

        p_yes = p(Yes) / (p(Yes) + p(No))   (FLAME's renormalised 2-way probability),

    equal to scoring every ``prefix + suffix[i]`` sequence separately (tested).

    Args:
        model: a ``flame_jax.policy.Decoder``.
        prefix_tokens: ``[batch, prefix]`` left-padded shared prompt prefixes.
        prefix_mask: ``[batch, prefix]`` True at real prefix tokens (at least one per row).
        suffix_tokens: ``[batch, items, suffix]`` right-padded candidate tails.
        suffix_mask: ``[batch, items, suffix]`` True at real tokens (at least one per candidate).
        yes_id: token id of "Yes".
        no_id: token id of "No".
        prefix_embeddings: fused prefix embeddings instead of ``embed(prefix_tokens)``.
        suffix_embeddings: fused suffix embeddings instead of ``embed(suffix_tokens)``.
        chunk_size: vocabulary chunk of the log-sum-exp.
        item_block: candidates per block (static); blocks run one after another
            (``lax.map``), so the broadcast prefix cache holds ``batch * item_block`` copies
            instead of ``batch * items``. None: all candidates in one block.
        lora: False runs the decoder with its LoRA adapters off (the reference policy).

    Returns:
        ``YesNoScores`` with ``[batch, items]`` arrays.
    """
    batch, prefix = prefix_tokens.shape
    items, suffix = suffix_tokens.shape[1:]
    if prefix_embeddings is None:
        prefix_embeddings = model.embed(prefix_tokens)
    if suffix_embeddings is None:
        suffix_embeddings = model.embed(suffix_tokens.reshape(batch * items, suffix))
    slots = prefix + suffix
    kv_prefix = jnp.concatenate([prefix_mask, jnp.zeros((batch, suffix), bool)], axis=1)
    cache = model.init_cache(batch, slots)
    _, cache = model(
        prefix_embeddings,
        positions_from_mask(prefix_mask),
        kv_mask=kv_prefix,
        cache=cache,
        cache_index=0,
        lora=lora,
    )
    w = model.unembedding()
    start = prefix_mask.sum(axis=1).astype(jnp.int32)
    block = items if item_block is None else min(int(item_block), items)
    num = -(-items // block)
    pad = num * block - items
    dim = suffix_embeddings.shape[-1]
    emb = suffix_embeddings.reshape(batch, items, suffix, dim).astype(prefix_embeddings.dtype)
    smask = suffix_mask
    if pad:
        # Padding candidates hold one real token so that no row is empty; their scores are dropped.
        emb = jnp.pad(emb, ((0, 0), (0, pad), (0, 0), (0, 0)))
        smask = jnp.pad(smask, ((0, 0), (0, pad), (0, 0))).at[:, items:, 0].set(True)
    # [blocks, batch * block, ...]: candidates of one block, for every prefix.
    emb = emb.reshape(batch, num, block, suffix, dim).swapaxes(0, 1)
    emb = emb.reshape(num, batch * block, suffix, dim)
    smask = smask.reshape(batch, num, block, suffix).swapaxes(0, 1).reshape(num, -1, suffix)

    def score_block(args):
        emb_b, mask_b = args
        block_cache = jax.tree.map(lambda c: jnp.repeat(c, block, axis=1), cache)
        positions = start.repeat(block)[:, None] + jnp.cumsum(mask_b.astype(jnp.int32), 1) - 1
        kv_mask = jnp.concatenate([jnp.repeat(prefix_mask, block, axis=0), mask_b], axis=1)
        hidden, _ = model(
            emb_b,
            jnp.maximum(positions, 0),
            kv_mask=kv_mask,
            cache=block_cache,
            cache_index=prefix,
            lora=lora,
        )
        last = jnp.maximum(mask_b.sum(axis=1) - 1, 0)
        h_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        lse = chunked_logsumexp(h_last, w, chunk_size=chunk_size)
        pair = jnp.einsum(
            "nd,kd->nk", h_last, w[jnp.array([yes_id, no_id])], preferred_element_type=jnp.float32
        )
        return pair - lse[:, None], pair[:, 0] - pair[:, 1]

    if num == 1:
        logp, margin = score_block((emb[0], smask[0]))
        logp, margin = logp[None], margin[None]
    else:
        logp, margin = jax.lax.map(score_block, (emb, smask))
    # [blocks, batch * block, ...] -> [batch, items]
    logp = logp.reshape(num, batch, block, 2).swapaxes(0, 1).reshape(batch, num * block, 2)
    margin = margin.reshape(num, batch, block).swapaxes(0, 1).reshape(batch, num * block)
    logp_yes, logp_no = logp[:, :items, 0], logp[:, :items, 1]
    p_yes = jax.nn.sigmoid(margin[:, :items])
    return YesNoScores(logp_yes=logp_yes, logp_no=logp_no, p_yes=p_yes)
