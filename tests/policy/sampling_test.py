"""KV-cache generator vs the plain forward; filters vs float64 NumPy; stopping, bans, buckets."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.policy._sampling import (
    SamplingConfig,
    TokenGrammar,
    filter_logits,
    left_pad,
    make_generator,
    sample_tokens,
    stop_sequences_from_strings,
    truncate_at_stop_strings,
)
from flame_jax.policy._scoring import completion_logprobs
from tests.policy.lm_helpers import full_logits, random_model

PROMPTS = [[5, 6, 7, 8, 9], [3, 4], [10, 11, 12], [20, 21, 22, 23, 24, 25, 26]]
NEW = 6


def reference_filter(z, temperature, top_k, top_p, banned):
    """Sampling distribution in float64 from the definitions (sort, cumulative mass)."""
    z = np.asarray(z, np.float64).copy()
    out = np.zeros_like(z)
    for b in range(z.shape[0]):
        x = z[b].copy()
        if banned is not None:
            x[banned] = -np.inf
        x = x / temperature
        if 0 < top_k < x.size:
            kth = np.sort(x)[::-1][top_k - 1]
            x[x < kth] = -np.inf
        p = np.exp(x - x.max())
        p /= p.sum()
        if top_p < 1:
            order = np.argsort(-p, kind="stable")
            mass = 0.0
            keep = np.zeros(x.size, bool)
            for i in order:
                if mass < top_p:
                    keep[i] = True
                mass += p[i]
            p = np.where(keep, p, 0.0)
            p /= p.sum()
        out[b] = p
    return out


@pytest.mark.parametrize(
    ("shape", "temperature", "top_k", "top_p", "ban"),
    [
        ((1, 7), 1.0, 0, 1.0, False),
        ((3, 20), 0.7, 5, 1.0, False),
        ((4, 50), 1.3, 0, 0.8, True),
        ((2, 33), 0.5, 10, 0.6, True),
        ((2, 9), 2.0, 1, 0.3, False),
        ((3, 16), 1.0, 16, 0.999, True),
    ],
)
@pytest.mark.parametrize("use_jit", [False, True])
def test_filter_logits_matches_float64(shape, temperature, top_k, top_p, ban, use_jit):
    rng = np.random.default_rng(shape[1])
    z = rng.normal(size=shape) * 2
    banned = rng.random(shape[1]) < 0.2 if ban else None
    fn = lambda z, banned: filter_logits(
        z, temperature=temperature, top_k=top_k, top_p=top_p, banned=banned
    )
    fn = jax.jit(fn) if use_jit else fn
    got = fn(jnp.asarray(z, jnp.float32), None if banned is None else jnp.asarray(banned))
    got = np.asarray(jax.nn.softmax(got, axis=-1), np.float64)
    want = reference_filter(z, temperature, top_k, top_p, banned)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert ((got > 0) == (want > 0)).all()


def test_sample_tokens_follow_the_filtered_distribution():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1, 12)) * 1.5
    banned = np.zeros(12, bool)
    banned[[0, 5]] = True
    config = SamplingConfig(temperature=0.8, top_k=8, top_p=0.9)
    keys = jax.random.split(jax.random.key(0), 20000)
    draw = jax.jit(
        jax.vmap(
            lambda k: sample_tokens(
                jnp.asarray(z, jnp.float32), key=k, config=config, banned=jnp.asarray(banned)
            )[0]
        )
    )
    samples = np.asarray(draw(keys))
    want = reference_filter(z, 0.8, 8, 0.9, banned)[0]
    freq = np.bincount(samples, minlength=12) / samples.size
    assert set(np.unique(samples)) <= set(np.flatnonzero(want > 0))
    np.testing.assert_allclose(freq, want, atol=0.015)


@pytest.fixture(scope="module")
def model():
    return random_model(0)


@pytest.fixture(scope="module")
def greedy():
    return make_generator(SamplingConfig(max_new_tokens=NEW, temperature=0))


def reference_greedy(model, prompt, steps, banned=None):
    seq = list(prompt)
    for _ in range(steps):
        logp = full_logits(model, seq)[-1]
        if banned is not None:
            logp = np.where(banned, -np.inf, logp)
        seq.append(int(np.argmax(logp)))
    return seq[len(prompt) :]


def test_greedy_equals_stepwise_argmax_of_full_forward(model, greedy):
    tokens, mask = left_pad(PROMPTS)
    out = greedy(model, tokens, mask, key=jax.random.key(0))
    assert out.tokens.shape == (len(PROMPTS), NEW)
    for i, p in enumerate(PROMPTS):
        want = reference_greedy(model, p, NEW)
        assert out.tokens[i].tolist() == want
        ref = [full_logits(model, p + want[:t])[-1][want[t]] for t in range(NEW)]
        np.testing.assert_allclose(np.asarray(out.logprobs[i]), ref, atol=2e-5)
    assert out.lengths.tolist() == [NEW] * len(PROMPTS)


def test_left_padding_does_not_change_a_continuation(model, greedy):
    alone = greedy(model, *left_pad([PROMPTS[1]]), key=jax.random.key(0))
    padded = greedy(model, *left_pad([PROMPTS[1]], length=12), key=jax.random.key(0))
    in_batch = greedy(model, *left_pad(PROMPTS), key=jax.random.key(0))
    for other in (padded, in_batch):
        row = 1 if other is in_batch else 0
        assert other.tokens[row].tolist() == alone.tokens[0].tolist()
        np.testing.assert_allclose(other.logprobs[row], alone.logprobs[0], atol=1e-5)


def test_top_k_one_equals_greedy(model, greedy):
    tokens, mask = left_pad(PROMPTS)
    sampled = make_generator(SamplingConfig(max_new_tokens=NEW, temperature=1.3, top_k=1))
    a = sampled(model, tokens, mask, key=jax.random.key(7))
    b = greedy(model, tokens, mask, key=jax.random.key(0))
    assert a.tokens.tolist() == b.tokens.tolist()
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)


@pytest.fixture(scope="module")
def sampler():
    return make_generator(SamplingConfig(max_new_tokens=NEW, temperature=1.5, top_p=0.95))


def test_sampled_logprobs_equal_teacher_forced_scoring(model, sampler):
    tokens, mask = left_pad(PROMPTS)
    out = sampler(model, tokens, mask, key=jax.random.key(1))
    scored = nnx.jit(completion_logprobs, static_argnames="chunk_size")(
        model, jnp.asarray(tokens), jnp.asarray(mask), out.tokens, out.mask, chunk_size=48
    )
    np.testing.assert_allclose(np.asarray(scored), np.asarray(out.logprobs), atol=2e-5)
    again = sampler(model, tokens, mask, key=jax.random.key(1))
    assert again.tokens.tolist() == out.tokens.tolist()
    other = sampler(model, tokens, mask, key=jax.random.key(2))
    assert other.tokens.tolist() != out.tokens.tolist()


def test_banned_tokens_are_never_sampled(model, sampler, greedy):
    vocab = model.config.vocab_size
    tokens, mask = left_pad(PROMPTS)
    banned = np.zeros(vocab, bool)
    banned[::2] = True  # half the vocabulary, including tokens the model likes
    out = sampler(model, tokens, mask, key=jax.random.key(3), banned=banned)
    assert not banned[np.asarray(out.tokens)].any()
    free = sampler(model, tokens, mask, key=jax.random.key(3))
    assert banned[np.asarray(free.tokens)].any()  # the ban is what kept them out
    greedy(model, tokens, mask, key=jax.random.key(0))
    before = greedy.compilations()
    g = greedy(model, tokens, mask, key=jax.random.key(0), banned=banned)
    assert g.tokens[0].tolist() == reference_greedy(model, PROMPTS[0], NEW, banned)
    assert greedy.compilations() == before  # the ban is an input, not a new program


def reference_grammar_greedy(model, prompt, steps, grammar):
    seq = list(prompt)
    for _ in range(steps):
        logp = full_logits(model, seq)[-1]
        ok = grammar.allowed[grammar.token_class[seq[-1]]]
        seq.append(int(np.argmax(np.where(ok, logp, -np.inf))))
    return seq[len(prompt) :]


def _random_grammar(vocab, classes, seed):
    rng = np.random.default_rng(seed)
    token_class = rng.integers(0, classes, vocab).astype(np.int32)
    allowed = rng.random((classes, vocab)) < 0.3
    allowed[:, 0] = True  # an always-allowed token, like EOS
    return TokenGrammar(token_class, allowed)


def test_grammar_constrains_every_step(model, sampler, greedy):
    vocab = model.config.vocab_size
    grammar = _random_grammar(vocab, 5, 0)
    tokens, mask = left_pad(PROMPTS)
    out = sampler(model, tokens, mask, key=jax.random.key(4), grammar=grammar)
    for i, p in enumerate(PROMPTS):
        seq = [p[-1], *np.asarray(out.tokens[i][: int(out.lengths[i])]).tolist()]
        for prev, tok in itertools.pairwise(seq):
            assert grammar.allowed[grammar.token_class[prev], tok]
    g = greedy(model, tokens, mask, key=jax.random.key(0), grammar=grammar)
    for i, p in enumerate(PROMPTS):
        assert g.tokens[i].tolist() == reference_grammar_greedy(model, p, NEW, grammar)
        # log-probs stay the unconstrained policy's (what GRPO's ratio needs)
        want = g.tokens[i].tolist()
        ref = [full_logits(model, p + want[:t])[-1][want[t]] for t in range(NEW)]
        np.testing.assert_allclose(np.asarray(g.logprobs[i]), ref, atol=2e-5)
    free = greedy(model, tokens, mask, key=jax.random.key(0))
    assert free.tokens.tolist() != g.tokens.tolist()
    with pytest.raises(ValueError, match="grammar has shapes"):
        greedy(model, tokens, mask, key=jax.random.key(0), grammar=TokenGrammar(
            np.zeros(3, np.int32), np.ones((1, 3), bool)))  # fmt: skip


def test_per_row_bans_with_a_grammar(model, sampler, greedy):
    """``banned`` of shape [batch, vocab] bans per row, on top of the grammar (greedy against a
    float64 step-by-step reference; sampled tokens never banned in their row)."""
    vocab = model.config.vocab_size
    grammar = _random_grammar(vocab, 4, 1)
    rng = np.random.default_rng(5)
    bans = rng.random((len(PROMPTS), vocab)) < 0.5
    bans[:, 0] = False  # the grammar's always-allowed token stays allowed
    tokens, mask = left_pad(PROMPTS)
    g = greedy(model, tokens, mask, key=jax.random.key(0), grammar=grammar, banned=bans)
    for i, p in enumerate(PROMPTS):
        seq = list(p)
        for _ in range(NEW):
            logp = full_logits(model, seq)[-1]
            ok = grammar.allowed[grammar.token_class[seq[-1]]] & ~bans[i]
            seq.append(int(np.argmax(np.where(ok, logp, -np.inf))))
        assert g.tokens[i].tolist() == seq[len(p) :]
    assert (
        g.tokens.tolist()
        != greedy(model, tokens, mask, key=jax.random.key(0), grammar=grammar).tokens.tolist()
    )  # the per-row bans changed something
    for key in range(3):
        out = sampler(model, tokens, mask, key=jax.random.key(key), grammar=grammar, banned=bans)
        for i in range(len(PROMPTS)):
            assert not bans[i][np.asarray(out.tokens[i])].any()
    with pytest.raises(ValueError, match="banned has shape"):
        greedy(model, tokens, mask, key=jax.random.key(0), banned=bans[:2])


def test_eos_and_stop_sequences(model, greedy):
    tokens, mask = left_pad(PROMPTS)
    free = np.asarray(greedy(model, tokens, mask, key=jax.random.key(0)).tokens)
    eos = int(free[0, 2])
    seq = (int(free[3, 1]), int(free[3, 2]))
    config = SamplingConfig(
        max_new_tokens=NEW, temperature=0, eos_ids=(eos,), stop_sequences=(seq,), pad_id=127
    )
    out = make_generator(config)(model, tokens, mask, key=jax.random.key(0))
    for i in range(len(PROMPTS)):
        row = free[i].tolist()
        ends = [t + 1 for t in range(NEW) if row[t] == eos]
        ends += [t + 1 for t in range(1, NEW) if (row[t - 1], row[t]) == seq]
        n = min(ends, default=NEW)
        assert int(out.lengths[i]) == n
        assert out.tokens[i, :n].tolist() == row[:n]
        assert (np.asarray(out.tokens[i, n:]) == 127).all()
        assert (np.asarray(out.logprobs[i, n:]) == 0).all()
    assert int(out.lengths[0]) <= 3 and int(out.lengths[3]) <= 3


def test_one_program_per_bucket():
    small = random_model(5, num_layers=1)
    gen = make_generator(SamplingConfig(max_new_tokens=2, temperature=0, min_length_bucket=8))
    key = jax.random.key(0)
    gen(small, *left_pad([[1, 2, 3], [4], [5, 6]]), key=key)  # batch bucket 4, length bucket 8
    gen(small, *left_pad([[1], [2], [3], [4, 5, 6, 7, 8, 9, 10]]), key=key)
    gen(small, *left_pad([[1], [2, 3, 4], [5]]), key=key, banned=np.arange(128) == 3)
    gen(small, *left_pad([[1], [2], [3], [4]], length=8), key=key)
    assert gen.compilations() == 1
    gen(small, *left_pad([[1], [2], [3], [4], [5]]), key=key)  # batch bucket 8
    assert gen.compilations() == 2


def test_prompt_embeddings_path_matches_tokens(model, greedy):
    tokens, mask = left_pad(PROMPTS)
    a = greedy(model, tokens, mask, key=jax.random.key(0))
    b = greedy(
        model,
        tokens,
        mask,
        key=jax.random.key(0),
        prompt_embeddings=model.embed(jnp.asarray(tokens)),
    )
    assert a.tokens.tolist() == b.tokens.tolist()


def test_bad_inputs_raise(model, greedy):
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="at least one"):
        greedy(model, np.zeros((1, 3), np.int32), np.zeros((1, 3), bool), key=jax.random.key(0))
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1], []])


def test_truncate_at_stop_strings():
    texts = ["a\nb\n\nc\n\nd", "no stop", "x.y\n\n"]
    assert truncate_at_stop_strings(texts, ["\n\n", "."]) == ["a\nb\n\n", "no stop", "x."]


class _FakeTokenizer:
    def encode(self, text, add_special_tokens=True):
        assert add_special_tokens is False
        return [ord(c) for c in text]


def test_stop_sequences_from_strings():
    assert stop_sequences_from_strings(_FakeTokenizer(), ["\n\n", "ab"]) == ((10, 10), (97, 98))
    with pytest.raises(ValueError, match="encodes to no tokens"):
        stop_sequences_from_strings(_FakeTokenizer(), [""])


def test_constrained_logprobs_equal_teacher_forced_constrained_scoring(model):
    """``constrained_logprobs``: the sampler returns the log-probs of the distribution it drew
    from at temperature 1 (grammar, per-row bans and banned tokens removed, renormalised), equal
    to ``completion_logprobs(allowed=constrained_support(...))`` of the same sequences; the draws
    are the same as without the option."""
    from flame_jax.flame import constrained_support

    vocab = model.config.vocab_size
    grammar = _random_grammar(vocab, 4, 2)
    rng = np.random.default_rng(8)
    bans = rng.random((len(PROMPTS), vocab)) < 0.3
    bans[:, 0] = False
    tokens, mask = left_pad(PROMPTS)
    plain = make_generator(SamplingConfig(max_new_tokens=NEW))
    constrained = make_generator(SamplingConfig(max_new_tokens=NEW, constrained_logprobs=True))
    for key in range(2):
        kw = {"key": jax.random.key(key), "grammar": grammar, "banned": bans}
        out = constrained(model, tokens, mask, **kw)
        base = plain(model, tokens, mask, **kw)
        assert out.tokens.tolist() == base.tokens.tolist()
        allowed = constrained_support(
            jnp.asarray(tokens[:, -1]), out.tokens, jnp.asarray(grammar.token_class),
            jnp.asarray(grammar.allowed), jnp.asarray(bans),
        )  # fmt: skip
        scored = completion_logprobs(
            model, jnp.asarray(tokens), jnp.asarray(mask), out.tokens, out.mask, allowed=allowed
        )
        np.testing.assert_allclose(np.asarray(scored), np.asarray(out.logprobs), atol=2e-5)
        # float64 reference of one row, step by step
        i = 1
        seq = list(PROMPTS[i])
        for t in range(int(out.lengths[i])):
            z = full_logits(model, seq)[-1]
            ok = grammar.allowed[grammar.token_class[seq[-1]]] & ~bans[i]
            tok = int(out.tokens[i, t])
            want = z[tok] - np.log(np.exp(z[ok]).sum())
            np.testing.assert_allclose(float(out.logprobs[i, t]), want, atol=2e-5)
            seq.append(tok)
        assert (np.asarray(out.logprobs) >= np.asarray(base.logprobs) - 1e-6).all()
