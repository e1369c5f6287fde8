"""The NNX decoder: Llama / Qwen2 / Qwen3 layouts with a KV cache and switchable LoRA.

Layout (attribute names follow Hugging Face's, so ``flame_jax.policy._hf`` maps state paths
mechanically): ``embed_tokens``, ``layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj,
self_attn.{q,k}_norm, post_attention_layernorm, mlp.{gate,up,down}_proj}``, ``norm``, and
``lm_head`` unless the embeddings are tied. Projection kernels are stored [in, out] (HF stores
[out, in]).

Numerics: parameters in ``config.param_dtype``; RMSNorm statistics, the RoPE angles, attention
scores and the softmax are float32; ``logits`` are float32.

Attention masking: query slot i (= ``cache_index`` + its offset in the call) attends key slot
j iff j <= i and ``kv_mask[b, j]``. A query none of whose keys is visible (a left-padding
position) attends to nothing (attention output 0, never NaN); its hidden state is meaningless
and must be masked by the caller.

LoRA switch: every projection is a ``Projection`` that may carry an ``nnx.LoRA`` adapter (see
``flame_jax.policy.add_lora``). ``Decoder.__call__(..., lora=False)`` skips every adapter; it is
a static Python bool, so the policy (``lora=True``) and the reference policy (``lora=False``)
are two traces of the same module with the same state, inside one jitted function, without a
second copy of the base weights.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from flame_jax.arraytypes import Array, Bool, Float, Int
from flame_jax.policy._config import DecoderConfig, RopeScaling

__all__ = ["Decoder", "KVCache", "Projection", "RMSNorm", "rope_inverse_frequencies"]

_NEG = float(np.finfo(np.float32).min)


class KVCache(NamedTuple):
    """Keys (after RoPE) and values of every layer, one slot per cached token.

    Attributes:
      k: [layers, batch, slots, kv_heads, head_dim], in the parameter dtype.
      v: same shape as ``k``.
    """

    k: Float[Array, "layers batch slots kv_heads head_dim"]
    v: Float[Array, "layers batch slots kv_heads head_dim"]


def rope_inverse_frequencies(
    head_dim: int, theta: float, scaling: RopeScaling | None = None
) -> np.ndarray:
    """RoPE inverse frequencies theta^(-2i/d), i < d/2, with optional Llama-3 scaling (float32).

    Computed in float32 in the same order as Hugging Face transformers, so that the angles agree
    bit for bit in most cases.

    Examples:
      >>> rope_inverse_frequencies(4, 10000.0).tolist()
      [1.0, 0.009999999776482582]
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv = (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)
    if scaling is None:
        return inv
    factor = np.float32(scaling.factor)
    low, high = np.float32(scaling.low_freq_factor), np.float32(scaling.high_freq_factor)
    old = np.float32(scaling.original_max_position_embeddings)
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = np.float32(2 * math.pi) / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv).astype(np.float32)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _rope(
    x: Float[Array, "batch tokens heads head_dim"],
    cos: Float[Array, "batch tokens 1 head_dim"],
    sin: Float[Array, "batch tokens 1 head_dim"],
) -> Float[Array, "batch tokens heads head_dim"]:
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos.astype(x.dtype) + rotated * sin.astype(x.dtype)


def _masked_scores(
    q_bkrh: Float[Array, "batch kv_heads rows head_dim"],
    k_bksh: Float[Array, "batch kv_heads slots head_dim"],
    allowed: Bool[Array, "batch tokens slots"],
    groups: int,
) -> Float[Array, "batch kv_heads rows slots"]:
    b, nk, rows, _ = q_bkrh.shape
    slots = k_bksh.shape[2]
    scores = jnp.einsum("bkrh,bksh->bkrs", q_bkrh, k_bksh, preferred_element_type=jnp.float32)
    scores = scores.reshape(b, nk, groups, rows // groups, slots)
    return jnp.where(allowed[:, None, None], scores, _NEG).reshape(b, nk, rows, slots)


def _attend_fwd_impl(q_bkrh, k_bksh, v_bksh, allowed, groups):
    scores = _masked_scores(q_bkrh, k_bksh, allowed, groups)
    top = scores.max(axis=-1, keepdims=True)
    e = jnp.exp(scores - top)
    total = e.sum(axis=-1, keepdims=True)
    probs = (e / total).astype(v_bksh.dtype)
    out = jnp.einsum("bkrs,bksh->bkrh", probs, v_bksh)
    return out, top + jnp.log(total)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attend(
    q_bkrh: Float[Array, "batch kv_heads rows head_dim"],
    k_bksh: Float[Array, "batch kv_heads slots head_dim"],
    v_bksh: Float[Array, "batch kv_heads slots head_dim"],
    allowed: Bool[Array, "batch tokens slots"],
    groups: int,
) -> Float[Array, "batch kv_heads rows head_dim"]:
    """softmax(mask(q k^T)) v per kv head, rows = (query head in the group, token).

    Row ``r = g * tokens + t`` is query head g of the kv head at token t; ``allowed[b, t, s]``
    says whether it sees key slot s (masked scores are float32 min, so a row with no visible
    key is meaningless here: the caller zeroes its output, hence its cotangent). ``q`` is
    already scaled by 1/sqrt(head_dim). Scores and the softmax are float32.

    The backward pass (a custom VJP, as in FlashAttention) recomputes the probabilities from
    the saved log-sum-exp instead of storing them, and uses the identity
    sum_s P_rs dP_rs = sum_h dO_rh O_rh:

        dS = P * (dO v^T - rowsum(dO * O)),  dq = dS k,  dk = dS^T q,  dv = P^T dO.

    References:
        Dao et al., "FlashAttention", arXiv 2205.14135 (2022), Algorithm 4.
    """
    return _attend_fwd_impl(q_bkrh, k_bksh, v_bksh, allowed, groups)[0]


def _attend_fwd(q_bkrh, k_bksh, v_bksh, allowed, groups):
    out, lse = _attend_fwd_impl(q_bkrh, k_bksh, v_bksh, allowed, groups)
    return out, (q_bkrh, k_bksh, v_bksh, allowed, out, lse)


def _attend_bwd(groups, residuals, d_out):
    q_bkrh, k_bksh, v_bksh, allowed, out, lse = residuals
    probs = jnp.exp(_masked_scores(q_bkrh, k_bksh, allowed, groups) - lse)
    d_probs = jnp.einsum("bkrh,bksh->bkrs", d_out, v_bksh, preferred_element_type=jnp.float32)
    row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    d_scores = (probs * (d_probs - row)).astype(q_bkrh.dtype)
    d_q = jnp.einsum("bkrs,bksh->bkrh", d_scores, k_bksh).astype(q_bkrh.dtype)
    d_k = jnp.einsum("bkrs,bkrh->bksh", d_scores, q_bkrh).astype(k_bksh.dtype)
    d_v = jnp.einsum("bkrs,bkrh->bksh", probs.astype(d_out.dtype), d_out).astype(v_bksh.dtype)
    return d_q, d_k, d_v, None


_attend.defvjp(_attend_fwd, _attend_bwd)


class RMSNorm(nnx.Module):
    """y = w * (x / sqrt(mean(x^2) + eps)), statistics in float32, result in the input dtype."""

    def __init__(self, dim: int, *, eps: float, param_dtype: DTypeLike = jnp.float32):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: Float[Array, "*rest dim"]) -> Float[Array, "*rest dim"]:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return self.weight[...].reshape((1,) * (x.ndim - 1) + (-1,)) * y


class Projection(nnx.Module):
    """A linear map x @ kernel (+ bias), with an optional LoRA adapter (alpha / rank) x A B.

    ``kernel`` is [in, out]. ``lora`` is None until ``flame_jax.policy.add_lora`` attaches an
    ``nnx.LoRA`` (its ``lora_a`` / ``lora_b`` are ``nnx.LoRAParam``).
    """

    def __init__(
        self, in_features: int, out_features: int, *, bias: bool, param_dtype, rngs: nnx.Rngs
    ):
        self.in_features = in_features
        self.out_features = out_features
        init = nnx.initializers.normal(0.02)
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if bias else None
        self.lora: nnx.LoRA | None = nnx.data(None)
        self.lora_scale = 1.0

    def __call__(self, x: Float[Array, "*rest din"], *, lora: bool = True) -> Array:
        # A 2-D [rows, din] @ [din, dout] product: XLA:CPU runs it (and the transposed products
        # of its gradient) as plain matrix multiplies; a 3-D operand costs extra transposes.
        kernel = self.kernel[...]
        x2 = x.reshape(-1, x.shape[-1])
        y = x2 @ kernel
        if self.bias is not None:
            y = y + self.bias[...][None, :]
        if lora and self.lora is not None:
            y = y + (self.lora_scale * self.lora(x2)).astype(y.dtype)
        return y.reshape(*x.shape[:-1], kernel.shape[-1])


class Attention(nnx.Module):
    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        c = config
        dt = jnp.dtype(c.param_dtype)
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        kw = {"param_dtype": dt, "rngs": rngs}
        self.q_proj = Projection(c.hidden_size, c.num_heads * c.head_dim, bias=c.qkv_bias, **kw)
        self.k_proj = Projection(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias, **kw)
        self.v_proj = Projection(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias, **kw)
        self.o_proj = Projection(c.num_heads * c.head_dim, c.hidden_size, bias=c.o_bias, **kw)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, eps=c.rms_norm_eps, param_dtype=dt)
            self.k_norm = RMSNorm(c.head_dim, eps=c.rms_norm_eps, param_dtype=dt)
        else:
            self.q_norm = self.k_norm = None

    def __call__(self, x, cos, sin, allowed, cache, layer, cache_index, *, lora):
        b, t, _ = x.shape
        q = self.q_proj(x, lora=lora).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x, lora=lora).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x, lora=lora).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        if cache is not None:
            # Write into the stacked [layers, ...] buffers in place (no per-step copy of the
            # whole cache when the caller donates it), then read this layer's slots.
            start = (layer, 0, cache_index, 0, 0)
            ck = jax.lax.dynamic_update_slice(cache.k, k[None].astype(cache.k.dtype), start)
            cv = jax.lax.dynamic_update_slice(cache.v, v[None].astype(cache.v.dtype), start)
            cache = KVCache(k=ck, v=cv)
            k, v = ck[layer], cv[layer]
        nk, hd = self.num_kv_heads, self.head_dim
        groups = self.num_heads // nk
        # Batched [b, kv_heads] matrix products with the query heads of a kv head stacked along
        # the rows ([b, k, g * t, h] @ [b, k, h, s]): the layout XLA:CPU multiplies (and
        # differentiates) fastest. The 1/sqrt(d) scale goes on q, not on the larger scores.
        q_bkrh = (q * hd**-0.5).reshape(b, t, nk, groups, hd).transpose(0, 2, 3, 1, 4)
        q_bkrh = q_bkrh.reshape(b, nk, groups * t, hd)
        k_bksh, v_bksh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        out_bkrh = _attend(q_bkrh, k_bksh, v_bksh, allowed, groups)
        out_btkgh = out_bkrh.reshape(b, nk, groups, t, hd).transpose(0, 3, 1, 2, 4)
        # A query with no visible key (left padding) attends to nothing rather than uniformly.
        out_btkgh = jnp.where(allowed.any(-1)[:, :, None, None, None], out_btkgh, 0.0)
        out = out_btkgh.reshape(b, t, self.num_heads * hd)
        return self.o_proj(out, lora=lora), cache


class MLP(nnx.Module):
    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        c = config
        kw = {"bias": False, "param_dtype": jnp.dtype(c.param_dtype), "rngs": rngs}
        self.gate_proj = Projection(c.hidden_size, c.intermediate_size, **kw)
        self.up_proj = Projection(c.hidden_size, c.intermediate_size, **kw)
        self.down_proj = Projection(c.intermediate_size, c.hidden_size, **kw)

    def __call__(self, x, *, lora):
        h = jax.nn.silu(self.gate_proj(x, lora=lora)) * self.up_proj(x, lora=lora)
        return self.down_proj(h, lora=lora)


class Block(nnx.Module):
    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        dt = jnp.dtype(config.param_dtype)
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps=eps, param_dtype=dt)
        self.self_attn = Attention(config, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=eps, param_dtype=dt)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x, cos, sin, allowed, cache, layer, cache_index, *, lora):
        a, cache = self.self_attn(
            self.input_layernorm(x), cos, sin, allowed, cache, layer, cache_index, lora=lora
        )
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x), lora=lora)
        return x, cache


class Decoder(nnx.Module):
    """Decoder-only transformer (Llama / Qwen2 / Qwen3 layouts), returning final-normed states.

    Examples:
      >>> cfg = DecoderConfig.tiny(vocab_size=32, num_layers=1)
      >>> model = Decoder(cfg, rngs=nnx.Rngs(0))
      >>> tokens = jnp.array([[0, 5, 6, 7]])
      >>> mask = tokens != 0  # one left-padding slot
      >>> positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
      >>> hidden, _ = model(model.embed(tokens), positions, kv_mask=mask)
      >>> model.logits(hidden).shape
      (1, 4, 32)
      >>> model.init_cache(1, 6).k.shape  # layers, batch, slots, kv_heads, head_dim
      (1, 1, 6, 2, 16)
    """

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        dt = jnp.dtype(config.param_dtype)
        self.embed_tokens = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            param_dtype=dt,
            dtype=dt,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.layers = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, param_dtype=dt)
        if config.tie_embeddings:
            self.lm_head = None
        else:
            init = nnx.initializers.normal(0.02)
            # Stored [vocab, dim] like HF's lm_head.weight, so unembedding() needs no transpose.
            self.lm_head = nnx.Param(
                init(rngs.params(), (config.vocab_size, config.hidden_size), dt)
            )

    def embed(self, tokens: Int[Array, "batch tokens"]) -> Float[Array, "batch tokens dim"]:
        """Input embeddings of token ids, in the parameter dtype."""
        return self.embed_tokens(tokens)

    def unembedding(self) -> Float[Array, "vocab dim"]:
        """The output projection as [vocab, dim] (the tied embedding table or ``lm_head``)."""
        if self.lm_head is None:
            return self.embed_tokens.embedding[...]
        return self.lm_head[...]

    def logits(
        self, hidden: Float[Array, "batch tokens dim"]
    ) -> Float[Array, "batch tokens vocab"]:
        """float32 logits hidden @ unembedding().T (accumulated in float32)."""
        w = self.unembedding()
        return jnp.einsum(
            "btd,vd->btv", hidden.astype(w.dtype), w, preferred_element_type=jnp.float32
        )

    def init_cache(self, batch: int | np.integer, slots: int | np.integer) -> KVCache:
        """An all-zero cache of ``slots`` slots in the parameter dtype."""
        c = self.config
        shape = (c.num_layers, int(batch), int(slots), c.num_kv_heads, c.head_dim)
        zeros = jnp.zeros(shape, jnp.dtype(c.param_dtype))
        return KVCache(k=zeros, v=zeros)

    def __call__(
        self,
        embeddings: Float[Array, "batch tokens dim"],
        positions: Int[Array, "batch tokens"],
        *,
        kv_mask: Bool[Array, "batch slots"],
        cache: KVCache | None = None,
        cache_index: Int[Array, ""] | int | np.integer = 0,
        lora: bool = True,
    ) -> tuple[Float[Array, "batch tokens dim"], KVCache | None]:
        """Runs the layers; returns the final-normed hidden states and the updated cache.

        Args:
          embeddings: [batch, tokens, dim] input embeddings (``embed(tokens)``, possibly with
            some slots replaced by knowledge fusion).
          positions: [batch, tokens] RoPE positions (with left padding:
            ``max(cumsum(mask) - 1, 0)``).
          kv_mask: [batch, slots] which key slots hold real tokens; slots == tokens without a
            cache, else the cache's slot count.
          cache: None, or a ``KVCache``; the new keys/values go to slots
            [cache_index, cache_index + tokens).
          cache_index: first slot written (traced or static).
          lora: False skips every LoRA adapter (the reference policy).

        Returns:
          (hidden [batch, tokens, dim] in the parameter dtype, the updated cache or None).
        """
        t = embeddings.shape[1]
        slots = kv_mask.shape[1]
        if cache is None and slots != t:
            raise ValueError(f"kv_mask has {slots} slots but there is no cache and {t} tokens")
        if cache is not None and cache.k.shape[2] != slots:
            raise ValueError(f"kv_mask has {slots} slots but the cache has {cache.k.shape[2]}")
        dt = jnp.dtype(self.config.param_dtype)
        x = embeddings.astype(dt)
        c = self.config
        inv_freq = rope_inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None]
        angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None]
        cos, sin = jnp.cos(angles), jnp.sin(angles)
        query_slot = cache_index + jnp.arange(t)
        causal_ts = jnp.arange(slots)[None, :] <= query_slot[:, None]
        allowed = causal_ts[None] & kv_mask[:, None, :]
        for i, layer in enumerate(self.layers):
            x, cache = layer(x, cos, sin, allowed, cache, i, cache_index, lora=lora)
        return self.norm(x), cache
