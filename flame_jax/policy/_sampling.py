"""A jitted KV-cache generator: left-padded batches, greedy / temperature / top-k / top-p.

``make_generator(config)`` returns ``generate(model, prompt_tokens, prompt_mask, *, key, ...)``.
The whole decode (prefill + a ``lax.while_loop`` over new tokens that exits early when every row
has stopped) is one compiled program per (batch bucket, prompt-length bucket): the batch is padded
to a power of two (at least ``min_batch_bucket``) with dummy rows, and the prompts are left-padded
to a power of two (at least ``min_length_bucket``). The cache has ``length bucket +
max_new_tokens`` slots.

Per step, from the model's float32 next-token logits ``z``:

1. tokens in ``banned`` (a ``[vocab]`` mask, e.g. entity placeholder tokens) get ``-inf``;
2. ``temperature == 0``: greedy argmax; otherwise ``z / temperature``, then top-k (keep the
   logits >= the k-th largest, ties kept, as Hugging Face does), then top-p / nucleus (keep the
   smallest prefix of the descending-sorted distribution whose mass reaches p: a token is kept iff
   the mass strictly before it is < p), then a categorical draw with ``key``. The draw (and the
   greedy argmax) is exactly ``jax.random.categorical`` (``jnp.argmax``), computed with two plain
   reductions instead of XLA's variadic argmax, which XLA:CPU runs as a slow scalar loop.

Per-row settings (``generate(..., sampling=SamplingParams(...))``): temperature, top-k, top-p and
a token cap given as ``[batch]`` arrays are traced values, so one batch can mix settings and new
values reuse the compiled program (a server facing arbitrary client values compiles one program
per bucket pair, not one per temperature). Greedy rows (temperature 0) take the argmax inside the
same program; every other row draws exactly what the static sampler draws with the same settings
and key. The config's ``max_new_tokens`` is then the static bucket (the cache size) and each
row's ``max_new_tokens`` its cap, a traced stop condition.

Returned log-probs are of the **base policy**: ``log_softmax(z)[token]`` of the raw logits, before
the ban, temperature and filtering, so they equal the teacher-forced ``completion_logprobs`` of
the same sequence (the "old policy" log-probs of GRPO). With ``constrained_logprobs`` they are of
the **constrained policy** instead: the raw logits with the banned tokens, the grammar's and the
per-row bans' disallowed tokens removed, renormalised (still before temperature and filtering);
they equal ``completion_logprobs(..., allowed=...)`` with the same mask.

Stopping: a row stops after an EOS id (``eos_ids``) or after a stop sequence. Stop strings are
matched **as token sequences on device** (``stop_sequences``: tuples of ids, e.g. from
``stop_sequences_from_strings(tokenizer, ["\\n\\n"])``), which keeps decoding inside one compiled
loop; a string that the tokenizer splits differently in context is not caught, so
``truncate_at_stop_strings`` crops decoded texts exactly on the host afterwards. EOS and stop tokens
are part of the returned completion and counted in ``lengths``; later positions hold ``pad_id``
and log-prob 0.

References:
    Holtzman et al., "The Curious Case of Neural Text Degeneration" (nucleus sampling), 2020.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.arraytypes import Array, Bool, Float, Int, PRNGKeyArray
from flame_jax.policy._model import Decoder
from flame_jax.policy._scoring import positions_from_mask

__all__ = [
    "Generation",
    "SamplingConfig",
    "SamplingParams",
    "TokenGrammar",
    "filter_logits",
    "filter_logits_per_row",
    "left_pad",
    "make_generator",
    "sample_tokens",
    "sample_tokens_per_row",
    "stop_sequences_from_strings",
    "truncate_at_stop_strings",
]


def _bucket(n: int, minimum: int) -> int:
    return max(int(minimum), 1 << max(int(n) - 1, 0).bit_length())


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """Static settings of the generator (each distinct config compiles its own programs).

    Attributes:
        max_new_tokens: cap on generated tokens per row (>= 1).
        temperature: 0 for greedy decoding, else > 0.
        top_k: keep the k most likely tokens (0: off).
        top_p: nucleus mass in (0, 1] (1: off).
        eos_ids: token ids that end a row (included in the completion).
        stop_sequences: token-id sequences that end a row (included in the completion).
        pad_id: id written after a row has stopped.
        min_batch_bucket: smallest batch bucket (batch sizes are padded to powers of two).
        min_length_bucket: smallest prompt-length bucket (lengths padded to powers of two).
        constrained_logprobs: return the log-probs of the constrained policy (``banned``, the
            grammar and the per-row bans applied, renormalised) instead of the base policy's.
    """

    max_new_tokens: int = 64
    temperature: float | int = 1.0
    top_k: int = 0
    top_p: float | int = 1.0
    eos_ids: tuple[int, ...] = ()
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    pad_id: int = 0
    min_batch_bucket: int = 1
    min_length_bucket: int = 16
    constrained_logprobs: bool = False

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(len(s) == 0 for s in self.stop_sequences):
            raise ValueError(
                f"stop_sequences must not contain empty sequences: {self.stop_sequences}"
            )
        if self.min_batch_bucket < 1 or self.min_length_bucket < 1:
            raise ValueError(
                f"min_batch_bucket and min_length_bucket must be >= 1, got "
                f"{self.min_batch_bucket}, {self.min_length_bucket}"
            )
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "eos_ids", tuple(int(i) for i in self.eos_ids))
        object.__setattr__(
            self, "stop_sequences", tuple(tuple(int(i) for i in s) for s in self.stop_sequences)
        )

    @property
    def greedy(self) -> bool:
        """True when decoding is greedy (temperature 0)."""
        return self.temperature == 0


class SamplingParams(NamedTuple):
    """Per-row sampling settings, traced: new values reuse the compiled program.

    Each field is a ``[batch]`` array (or a scalar, broadcast to the batch). When given to
    ``generate``, they replace the config's ``temperature``, ``top_k`` and ``top_p``.

    Attributes:
        temperature: 0 for a greedy row, else > 0.
        top_k: keep the k most likely tokens (0 or >= vocab: off).
        top_p: nucleus mass in [0, 1] (1: off; 0 keeps the most likely token, ties kept).
        max_new_tokens: the row's cap on generated tokens, in [1, config.max_new_tokens].
    """

    temperature: Float[Array | np.ndarray, "*batch"] | float
    top_k: Int[Array | np.ndarray, "*batch"] | int
    top_p: Float[Array | np.ndarray, "*batch"] | float
    max_new_tokens: Int[Array | np.ndarray, "*batch"] | int


class Generation(NamedTuple):
    """Generated completions, right-padded with ``pad_id``."""

    tokens: Int[Array, "batch tokens"]
    logprobs: Float[Array, "batch tokens"]  # base-policy log-probs; 0 after the end
    lengths: Int[Array, " batch"]  # generated tokens per row, EOS / stop tokens included

    @property
    def mask(self) -> Bool[Array, "batch tokens"]:
        """True at generated (real) completion tokens."""
        return jnp.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]


def filter_logits(
    logits: Float[Array, "batch vocab"],
    *,
    temperature: float | int = 1.0,
    top_k: int = 0,
    top_p: float | int = 1.0,
    banned: Bool[Array, " vocab"] | None = None,
) -> Float[Array, "batch vocab"]:
    """Logits of the sampling distribution: ban, temperature, top-k, top-p (removed: -inf).

    Args:
        logits: ``[batch, vocab]`` raw next-token logits.
        temperature: > 0 (divides the logits).
        top_k: keep logits >= the k-th largest (ties kept; 0 or >= vocab: off).
        top_p: keep the smallest descending prefix whose mass reaches ``top_p`` (1: off).
        banned: ``[vocab]`` True for tokens that are never sampled.

    Returns:
        ``[batch, vocab]`` float32 logits; softmax of them is the sampling distribution.

    Examples:
        >>> import jax.numpy as jnp
        >>> z = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
        >>> jnp.isfinite(filter_logits(z, top_p=0.7)).tolist()
        [[True, True, False, False]]
        >>> jnp.isfinite(filter_logits(z, top_k=2, banned=jnp.array([1, 0, 0, 0], bool))).tolist()
        [[False, True, True, False]]
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 in filter_logits, got {temperature}")
    x = logits.astype(jnp.float32)
    if banned is not None:
        x = jnp.where(banned[None, :], -jnp.inf, x)
    x = x / temperature
    vocab = x.shape[-1]
    if 0 < top_k < vocab:
        kth = jax.lax.top_k(x, top_k)[0][:, -1:]
        x = jnp.where(x < kth, -jnp.inf, x)
    if top_p < 1.0:
        sorted_x = -jnp.sort(-x, axis=-1)
        probs = jax.nn.softmax(sorted_x, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs
        keep = before < top_p
        threshold = jnp.min(jnp.where(keep, sorted_x, jnp.inf), axis=-1, keepdims=True)
        x = jnp.where(x < threshold, -jnp.inf, x)
    return x


def filter_logits_per_row(
    logits: Float[Array, "batch vocab"],
    *,
    temperature: Float[Array, " batch"],
    top_k: Int[Array, " batch"],
    top_p: Float[Array, " batch"],
    banned: Bool[Array, " vocab"] | None = None,
) -> Float[Array, "batch vocab"]:
    """:func:`filter_logits` with each row's settings given as traced ``[batch]`` arrays.

    The logits are sorted once per call; top-k keeps the values >= the row's k-th largest
    (ties kept; ``k <= 0`` or ``k >= vocab``: off) and top-p the smallest descending prefix whose
    mass reaches ``p`` (``p >= 1``: off; the most likely token is always kept, so ``p = 0``
    keeps it alone, with its ties). A row with temperature 0 is filtered at temperature 1 (its
    draw is the argmax). For the same settings the result equals :func:`filter_logits`
    bit for bit.

    Args:
        logits: ``[batch, vocab]`` raw next-token logits.
        temperature: ``[batch]`` >= 0.
        top_k: ``[batch]`` ints.
        top_p: ``[batch]`` in [0, 1].
        banned: ``[vocab]`` True for tokens that are never sampled.

    Returns:
        ``[batch, vocab]`` float32 logits; softmax of a row is its sampling distribution.

    Examples:
        >>> import jax.numpy as jnp
        >>> z = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
        >>> out = filter_logits_per_row(z, temperature=jnp.array([1.0, 0.5]),
        ...     top_k=jnp.array([0, 3]), top_p=jnp.array([0.7, 1.0]))
        >>> jnp.isfinite(out).tolist()
        [[True, True, False, False], [True, True, True, False]]
    """
    x = logits.astype(jnp.float32)
    if banned is not None:
        x = jnp.where(banned[None, :], -jnp.inf, x)
    t = temperature.astype(jnp.float32)[:, None]
    x = x / jnp.where(t > 0, t, 1.0)
    vocab = x.shape[-1]
    sorted_x = -jnp.sort(-x, axis=-1)
    k = top_k.astype(jnp.int32)[:, None]
    kth = jnp.take_along_axis(sorted_x, jnp.clip(k - 1, 0, vocab - 1), axis=-1)
    kth = jnp.where((k > 0) & (k < vocab), kth, -jnp.inf)
    x = jnp.where(x < kth, -jnp.inf, x)
    # masking the sorted values keeps them sorted: the top-p pass needs no second sort
    sorted_x = jnp.where(sorted_x < kth, -jnp.inf, sorted_x)
    probs = jax.nn.softmax(sorted_x, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    p = top_p.astype(jnp.float32)[:, None]
    first = jax.lax.broadcasted_iota(jnp.int32, sorted_x.shape, 1) == 0
    keep = (before < p) | first | (p >= 1.0)
    threshold = jnp.min(jnp.where(keep, sorted_x, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(x < threshold, -jnp.inf, x)


def _first_argmax(x: Float[Array, "*batch vocab"]) -> Int[Array, "*batch"]:
    """``jnp.argmax(x, axis=-1)`` as two plain reductions (int32; same index, ties and NaN too).

    ``jnp.argmax`` lowers to one variadic ``(value, index)`` reduction, which XLA:CPU runs as a
    scalar loop; on a ``[32, 576]`` row block it costs about 0.3 ms, once per decoded token. A
    ``max`` followed by "the smallest index whose value equals the max" vectorises and returns
    the same index: the first maximum on ties; the first NaN when a row holds one (``max``
    propagates NaN, and NaN equals nothing, so NaN positions are matched explicitly); 0 when a
    row is all ``-inf``.

    Args:
        x: ``[..., vocab]`` values (a float dtype).

    Returns:
        ``[...]`` int32 indices into the last axis.

    Examples:
        >>> import jax.numpy as jnp
        >>> _first_argmax(jnp.array([[0.0, 2.0, 2.0], [-jnp.inf, -jnp.inf, -jnp.inf]])).tolist()
        [1, 0]
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    hit = (x == top) | jnp.isnan(x)
    index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.min(jnp.where(hit, index, x.shape[-1]), axis=-1)


def _categorical(key: PRNGKeyArray, logits: Float[Array, "*batch vocab"]) -> Int[Array, "*batch"]:
    """``jax.random.categorical(key, logits, axis=-1)``, drawing exactly the same tokens, faster.

    The Gumbel-max trick as JAX does it, ``argmax(gumbel(key, logits.shape, logits.dtype) +
    logits)``, with the same noise (``jax.random.gumbel``, the default ``mode``), but the
    argmax taken by :func:`_first_argmax` (ties go to the first index, ``-inf`` entries are never
    drawn while a row has a finite one). This halves the per-token cost of sampling on CPU.

    Args:
        key: PRNG key.
        logits: ``[..., vocab]`` unnormalised log-probabilities (``-inf``: never drawn).

    Returns:
        ``[...]`` int32 draws.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> z = jnp.log(jnp.array([[0.2, 0.0, 0.8], [0.5, 0.5, 0.0]]))
        >>> key = jax.random.key(3)
        >>> bool((_categorical(key, z) == jax.random.categorical(key, z)).all())
        True
    """
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    return _first_argmax(noise + logits)


def sample_tokens(
    logits: Float[Array, "batch vocab"],
    *,
    key: PRNGKeyArray,
    config: SamplingConfig,
    banned: Bool[Array, " vocab"] | None = None,
) -> Int[Array, " batch"]:
    """Draw one token per row from ``filter_logits`` (argmax when ``config.greedy``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> z = jnp.array([[0.0, 3.0, 1.0]])
        >>> sample_tokens(z, key=jax.random.key(0), config=SamplingConfig(temperature=0)).tolist()
        [1]
    """
    if config.greedy:
        x = logits.astype(jnp.float32)
        if banned is not None:
            x = jnp.where(banned[None, :], -jnp.inf, x)
        return _first_argmax(x)
    x = filter_logits(
        logits,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        banned=banned,
    )
    return _categorical(key, x)


def sample_tokens_per_row(
    logits: Float[Array, "batch vocab"],
    *,
    key: PRNGKeyArray,
    temperature: Float[Array, " batch"],
    top_k: Int[Array, " batch"],
    top_p: Float[Array, " batch"],
    banned: Bool[Array, " vocab"] | None = None,
) -> Int[Array, " batch"]:
    """:func:`sample_tokens` with traced per-row settings (temperature 0: that row's argmax).

    Both the argmax and the draw from :func:`filter_logits_per_row` are computed and the row's
    temperature picks one, so every setting runs the same program. A row draws the very token
    that :func:`sample_tokens` draws with the same settings and ``key``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> z = jnp.array([[0.0, 3.0, 1.0], [0.0, 3.0, 1.0]])
        >>> sample_tokens_per_row(z, key=jax.random.key(0), temperature=jnp.array([0.0, 1.0]),
        ...     top_k=jnp.array([0, 1]), top_p=jnp.array([1.0, 1.0])).tolist()
        [1, 1]
    """
    x = logits.astype(jnp.float32)
    if banned is not None:
        x = jnp.where(banned[None, :], -jnp.inf, x)
    greedy = _first_argmax(x)
    filtered = filter_logits_per_row(x, temperature=temperature, top_k=top_k, top_p=top_p)
    return jnp.where(temperature > 0, _categorical(key, filtered), greedy)


def left_pad(
    prompts: Sequence[Sequence[int]], *, pad_id: int = 0, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad ragged token lists into ``(tokens [batch, length], mask [batch, length])``.

    Examples:
        >>> tokens, mask = left_pad([[5, 6, 7], [8]])
        >>> tokens.tolist(), mask.tolist()
        ([[5, 6, 7], [0, 0, 8]], [[True, True, True], [False, False, True]])
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("left_pad: every prompt needs at least one token")
    width = max(len(p) for p in prompts) if length is None else int(length)
    if width < max(len(p) for p in prompts):
        raise ValueError(f"left_pad: length={length} is shorter than the longest prompt")
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p) :] = p
        mask[i, width - len(p) :] = True
    return tokens, mask


def stop_sequences_from_strings(
    tokenizer: Any, strings: Sequence[str]
) -> tuple[tuple[int, ...], ...]:
    """Token-id sequences of stop strings (encoded alone, without special tokens)."""
    out = []
    for s in strings:
        ids = tuple(int(i) for i in tokenizer.encode(s, add_special_tokens=False))
        if not ids:
            raise ValueError(f"stop string {s!r} encodes to no tokens")
        out.append(ids)
    return tuple(out)


def truncate_at_stop_strings(texts: Sequence[str], stop_strings: Sequence[str]) -> list[str]:
    """Cut each text after the first occurrence of any stop string (the stop string is kept).

    Examples:
        >>> truncate_at_stop_strings(["a\\nb\\n\\nc", "xyz"], ["\\n\\n"])
        ['a\\nb\\n\\n', 'xyz']
    """
    out = []
    for text in texts:
        ends = [text.find(s) + len(s) for s in stop_strings if s and s in text]
        out.append(text[: min(ends)] if ends else text)
    return out


def _decode(
    model: Decoder,
    tokens: Array,
    mask: Array,
    embeddings: Array,
    banned: Array,
    token_class: Array,
    class_allowed: Array,
    key: Array,
    lora: bool,
    config: SamplingConfig,
    cache_sharding: Callable[[Any], Any] | None,
    row_banned: Array | None = None,
    params: SamplingParams | None = None,
) -> tuple[Array, Array, Array]:
    batch, length = tokens.shape
    new = config.max_new_tokens
    slots = length + new
    kv_mask = jnp.concatenate([mask, jnp.ones((batch, new), bool)], axis=1)
    cache = model.init_cache(batch, slots)
    if cache_sharding is not None:
        cache = jax.lax.with_sharding_constraint(cache, cache_sharding(cache))
    hidden, cache = model(
        embeddings,
        positions_from_mask(mask),
        kv_mask=kv_mask,
        cache=cache,
        cache_index=0,
        lora=lora,
    )
    logits = model.logits(hidden[:, -1:])[:, 0].astype(jnp.float32)
    start = mask.sum(axis=1).astype(jnp.int32)  # position of the first new token
    eos = jnp.array(config.eos_ids, jnp.int32) if config.eos_ids else None
    longest = max((len(s) for s in config.stop_sequences), default=0)
    history = jnp.full((batch, longest + new), -1, jnp.int32)

    def cond(carry):
        step, done = carry[0], carry[2]
        return (step < new) & ~jnp.all(done)

    def body(carry):
        step, cache, done, logits, out, logp_out, history, key, lengths = carry
        key, sub = jax.random.split(key)
        prev = jnp.where(step == 0, tokens[:, -1], out[:, jnp.maximum(step - 1, 0)])
        allowed = class_allowed[token_class[prev]]  # the grammar: what may follow ``prev``
        if row_banned is not None:  # per-row bans (e.g. the drugs an edit may name)
            allowed = allowed & ~row_banned
        if params is None:
            token = sample_tokens(
                jnp.where(allowed, logits, -jnp.inf), key=sub, config=config, banned=banned
            )
        else:
            token = sample_tokens_per_row(
                jnp.where(allowed, logits, -jnp.inf),
                key=sub,
                temperature=params.temperature,
                top_k=params.top_k,
                top_p=params.top_p,
                banned=banned,
            )
        source = logits
        if config.constrained_logprobs:
            source = jnp.where(allowed & ~banned[None, :], logits, -jnp.inf)
        logp = jnp.take_along_axis(jax.nn.log_softmax(source, axis=-1), token[:, None], axis=1)
        token = jnp.where(done, config.pad_id, token)
        logp = jnp.where(done, 0.0, logp[:, 0])
        out = out.at[:, step].set(token)
        logp_out = logp_out.at[:, step].set(logp)
        history = history.at[:, longest + step].set(jnp.where(done, -1, token))
        stop = jnp.zeros((batch,), bool)
        if eos is not None:
            stop = stop | (token[:, None] == eos[None, :]).any(axis=1)
        for seq in config.stop_sequences:
            window = jax.lax.dynamic_slice_in_dim(
                history, longest + step - len(seq) + 1, len(seq), 1
            )
            stop = stop | (window == jnp.array(seq, jnp.int32)[None, :]).all(axis=1)
        if params is not None:  # the row's own cap (the bucket is ``new``)
            stop = stop | (step + 1 >= params.max_new_tokens)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | stop
        positions = (start + step)[:, None]
        hidden, cache = model(
            model.embed(token[:, None]).astype(embeddings.dtype),
            positions,
            kv_mask=kv_mask,
            cache=cache,
            cache_index=length + step,
            lora=lora,
        )
        logits = model.logits(hidden)[:, 0].astype(jnp.float32)
        return step + 1, cache, done, logits, out, logp_out, history, key, lengths

    init = (
        jnp.int32(0),
        cache,
        jnp.zeros((batch,), bool),
        logits,
        jnp.full((batch, new), config.pad_id, jnp.int32),
        jnp.zeros((batch, new), jnp.float32),
        history,
        key,
        jnp.zeros((batch,), jnp.int32),
    )
    _, _, _, _, out, logp_out, _, _, lengths = jax.lax.while_loop(cond, body, init)
    return out, logp_out, lengths


class TokenGrammar(NamedTuple):
    """A first-order token grammar for constrained decoding.

    The token after ``t`` must satisfy ``allowed[token_class[t]]``. Classes keep it compact for a
    large vocabulary: ``[vocab]`` ints plus ``[classes, vocab]`` bools, not ``[vocab, vocab]``.
    Every class must allow at least one token that is not banned (e.g. EOS, or the rest of a
    word), so that no row is left with nothing to sample.

    Attributes:
        token_class: int ``[vocab]``, the class of each token.
        allowed: bool ``[classes, vocab]``, the tokens that may follow a token of each class.
    """

    token_class: np.ndarray
    allowed: np.ndarray


def _row_params(sampling: SamplingParams, batch: int, bucket: int, cap: int) -> SamplingParams:
    """The settings as checked ``[bucket]`` arrays (ValueError names a bad value).

    Dummy rows (beyond ``batch``) decode greedily with a cap of 1, so they stop at once.
    """
    rows = []
    for name in SamplingParams._fields:
        raw = np.asarray(getattr(sampling, name))
        if raw.ndim > 1 or (raw.ndim == 1 and raw.shape != (batch,)):
            raise ValueError(
                f"generate: sampling.{name} has shape {raw.shape}, expected () or ({batch},)"
            )
        rows.append(np.broadcast_to(raw, (batch,)))
    temperature, top_k, top_p, caps = rows
    checks = [
        ("temperature", np.isfinite(temperature) & (temperature >= 0), "finite and >= 0"),
        ("top_k", top_k >= 0, ">= 0"),
        ("top_p", (top_p >= 0) & (top_p <= 1), "in [0, 1]"),
        ("max_new_tokens", (caps >= 1) & (caps <= cap), f"in [1, {cap}]"),
    ]
    for (name, ok, rule), values in zip(checks, rows, strict=True):
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise ValueError(
                f"generate: sampling.{name} must be {rule}, got {values[row]!r} in row {row}"
            )
    rows[1] = np.minimum(top_k, np.iinfo(np.int32).max)  # any k >= vocab is "off"
    dummy = (0.0, 0, 1.0, 1)
    dtypes = (jnp.float32, jnp.int32, jnp.float32, jnp.int32)
    return SamplingParams(
        *(
            jnp.asarray(np.concatenate([v, np.full(bucket - batch, d)]), dtype)
            for v, d, dtype in zip(rows, dummy, dtypes, strict=True)
        )
    )


def make_generator(config: SamplingConfig) -> Callable[..., Generation]:
    """Build ``generate(model, prompt_tokens, prompt_mask, *, key, ...) -> Generation``.

    The returned function pads the batch and the prompt length to their buckets, runs the
    compiled decode (one program per bucket pair; ``generate.compilations()`` counts them;
    a different model structure or dtype also compiles anew) and
    returns the rows of the real prompts.

    ``generate`` arguments:
        model: a ``flame_jax.policy.Decoder``.
        prompt_tokens: ``[batch, length]`` left-padded ids (see ``left_pad``).
        prompt_mask: ``[batch, length]`` True at real tokens (>= 1 per row).
        key: PRNG key (unused when greedy, but still required: same key, same result).
        banned: optional mask of tokens never sampled: ``[vocab]`` for every row, or
            ``[batch, vocab]`` per row (e.g. the drugs one prompt's edit may not name).
        prompt_embeddings: optional ``[batch, length, dim]`` fused prompt embeddings.
        lora: False decodes with the LoRA adapters off (the reference policy).
        cache_sharding: optional hashable ``KVCache -> shardings`` (e.g.
            ``flame_jax.train.CacheSharding(mesh)``) placing the KV cache. Without it, a model
            with sharded parameters and a sharded prompt batch still decodes sharded: the
            compiler propagates the inputs' shardings.
        grammar: optional :class:`TokenGrammar`: a token may only follow the previous one
            (the prompt's last token for the first) if the grammar allows it (constrained
            decoding); the returned log-probs are the base policy's unless
            ``constrained_logprobs`` is set in the config.
        sampling: optional :class:`SamplingParams`: per-row temperature, top-k, top-p and
            token cap as traced values (they replace the config's; new values compile
            nothing). The decode with ``sampling`` is one more program per bucket pair.

    Examples:
        >>> make_generator(SamplingConfig(max_new_tokens=4, temperature=0)).compilations()
        0
    """
    traces = [0]

    def traced(*args):
        traces[0] += 1
        return _decode(*args)

    # The model goes in as a pytree (an NNX module is one): flattening it costs about 0.1 ms
    # per call, where ``nnx.split`` + ``nnx.merge`` cost over 1 ms on a small model.
    decode = jax.jit(traced, static_argnums=(8, 9, 10))

    def generate(
        model: Decoder,
        prompt_tokens: Int[Array | np.ndarray, "batch length"],
        prompt_mask: Bool[Array | np.ndarray, "batch length"],
        *,
        key: PRNGKeyArray,
        banned: Bool[Array | np.ndarray, "*batch vocab"] | None = None,
        prompt_embeddings: Float[Array, "batch length dim"] | None = None,
        lora: bool = True,
        cache_sharding: Callable[[Any], Any] | None = None,
        grammar: TokenGrammar | None = None,
        sampling: SamplingParams | None = None,
    ) -> Generation:
        mask_np = np.asarray(prompt_mask, bool)
        if not mask_np.any(axis=1).all():
            raise ValueError(
                "generate: every prompt row needs at least one real token in prompt_mask"
            )
        if mask_np.shape != np.shape(prompt_tokens):
            raise ValueError(
                f"generate: prompt_tokens {np.shape(prompt_tokens)} and prompt_mask "
                f"{mask_np.shape} differ in shape"
            )
        batch, length = mask_np.shape
        bb = _bucket(batch, config.min_batch_bucket)
        lb = _bucket(length, config.min_length_bucket)
        tokens = jnp.asarray(prompt_tokens, jnp.int32)
        mask = jnp.asarray(mask_np)
        tokens = jnp.pad(tokens, ((0, bb - batch), (lb - length, 0)), constant_values=config.pad_id)
        mask = jnp.pad(mask, ((0, bb - batch), (lb - length, 0)))
        # Dummy rows attend to one (pad) token so that no softmax runs over an empty set.
        mask = mask.at[batch:, -1].set(True)
        # Embeddings are looked up here (not inside the program) so that token prompts and fused
        # prompt embeddings share one compiled program; the ban is always an array for the same
        # reason.
        if prompt_embeddings is None:
            embeddings = model.embed(tokens)
        else:
            if prompt_embeddings.shape[:2] != (batch, length):
                raise ValueError(
                    f"generate: prompt_embeddings has shape {prompt_embeddings.shape}, expected "
                    f"({batch}, {length}, dim) like prompt_tokens"
                )
            embeddings = jnp.pad(prompt_embeddings, ((0, bb - batch), (lb - length, 0), (0, 0)))
        vocab = model.config.vocab_size
        banned_arr = jnp.zeros((vocab,), bool) if banned is None else jnp.asarray(banned, bool)
        row_banned = None
        if banned_arr.shape == (batch, vocab):
            row_banned = jnp.pad(banned_arr, ((0, bb - batch), (0, 0)))
            banned_arr = jnp.zeros((vocab,), bool)
        if banned_arr.shape != (vocab,):
            raise ValueError(
                f"generate: banned has shape {banned_arr.shape}, expected ({vocab},) or "
                f"({batch}, {vocab})"
            )
        if grammar is None:
            grammar = TokenGrammar(np.zeros(vocab, np.int32), np.ones((1, vocab), bool))
        if np.shape(grammar.token_class) != (vocab,) or np.shape(grammar.allowed)[1:] != (vocab,):
            raise ValueError(
                f"generate: grammar has shapes {np.shape(grammar.token_class)} and "
                f"{np.shape(grammar.allowed)}, expected ({vocab},) and (classes, {vocab})"
            )
        params = (
            None if sampling is None else _row_params(sampling, batch, bb, config.max_new_tokens)
        )
        out, logp, lengths = decode(
            model,
            tokens,
            mask,
            embeddings,
            banned_arr,
            jnp.asarray(grammar.token_class, jnp.int32),
            jnp.asarray(grammar.allowed, bool),
            key,
            bool(lora),
            config,
            cache_sharding,
            row_banned,
            params,
        )
        return Generation(tokens=out[:batch], logprobs=logp[:batch], lengths=lengths[:batch])

    def compilations() -> int:
        """Number of decode programs traced so far (one per bucket pair and input kind)."""
        return traces[0]

    generate.compilations = compilations
    return generate
