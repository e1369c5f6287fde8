"""Gradient accumulation: micro-batched gradients against float64 full-batch references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax.rl import aggregation_weight, grpo_loss
from flame_jax.train import accumulate_gradients, split_microbatches


def test_split_microbatches_is_strided_by_whole_groups():
    x = np.arange(24).reshape(12, 2)  # 6 examples x group 2
    got = np.asarray(split_microbatches(jnp.asarray(x), 3, group=2))
    assert got.shape == (3, 4, 2)
    for k in range(3):
        examples = [i for i in range(6) if i % 3 == k]
        rows = [r for i in examples for r in (2 * i, 2 * i + 1)]
        np.testing.assert_array_equal(got[k], x[rows])
    tree = split_microbatches({"a": jnp.zeros((4, 3)), "b": (jnp.arange(4),)}, 2)
    assert tree["a"].shape == (2, 2, 3) and tree["b"][0].tolist() == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match=r"6 rows does not split into 4 micro-batches"):
        split_microbatches(jnp.zeros(6), 4)
    with pytest.raises(ValueError, match=r"whole groups of 4"):
        split_microbatches(jnp.zeros(6), 1, group=4)
    with pytest.raises(ValueError, match=r"k and group must be >= 1"):
        split_microbatches(jnp.zeros(6), 0)


def _token_mean_problem(seed, n=8, t=5, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, d))
    y = rng.normal(size=(n, t))
    mask = rng.random((n, t)) < 0.6
    mask[0] = False  # an example without tokens
    w = rng.normal(size=d)
    return x, y, mask, w


def _reference(x, y, mask, w):
    """float64: L = sum m (x.w - y)^2 / sum m, dL/dw, and the max of y over the masked tokens."""
    r = x @ w - y
    m = mask.astype(np.float64)
    loss = (m * r * r).sum() / m.sum()
    grad = 2 * np.einsum("nt,ntd->d", m * r, x) / m.sum()
    return loss, grad, np.where(mask, y, -np.inf).max()


def _loss_fn(w, batch):
    x, y, mask = batch
    r = x @ w - y
    m = mask.astype(jnp.float32)
    loss = (m * r * r).sum() / jnp.maximum(m.sum(), 1.0)
    return loss, {"y_max": jnp.max(jnp.where(mask, y, -jnp.inf)), "tokens": m.sum()}


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("jit", [False, True])
def test_token_weighted_accumulation_is_the_full_batch_gradient(k, jit):
    for seed in range(3):
        x, y, mask, w = _token_mean_problem(seed)
        want_loss, want_grad, want_max = _reference(x, y, mask, w)
        stacked = split_microbatches(
            tuple(jnp.asarray(a, jnp.float32 if a.dtype != bool else bool) for a in (x, y, mask)),
            k,
        )

        def run(w, stacked):
            return accumulate_gradients(
                _loss_fn,
                w,
                stacked,
                weight_fn=lambda b: b[2].sum(),
                max_keys=("y_max",),
            )

        fn = jax.jit(run) if jit else run
        loss, aux, grad = fn(jnp.asarray(w, jnp.float32), stacked)
        np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(aux["y_max"]), want_max, rtol=1e-6)
        # A weighted mean of the micro-batches' token counts: sum m_k^2 / sum m_k.
        counts = np.asarray(stacked[2]).reshape(k, -1).sum(-1).astype(np.float64)
        np.testing.assert_allclose(float(aux["tokens"]), (counts**2).sum() / counts.sum())


def test_equal_weights_average_a_mean_loss_and_keep_dtypes():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4))
    params = {"w": jnp.asarray(rng.normal(size=4), jnp.bfloat16), "b": jnp.float32(0.3)}

    def loss_fn(p, xb):
        pred = xb @ p["w"].astype(jnp.float32) + p["b"]
        return jnp.mean(pred**2), (jnp.mean(pred),)  # any pytree of metrics

    loss, aux, grads = accumulate_gradients(
        loss_fn, params, split_microbatches(jnp.asarray(x, jnp.float32), 3)
    )
    w = np.asarray(params["w"].astype(jnp.float32), np.float64)
    pred = x @ w + 0.3
    np.testing.assert_allclose(float(loss), np.mean(pred**2), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(grads["w"], np.float64), 2 * x.T @ pred / 6, rtol=1e-2, atol=1e-2
    )
    np.testing.assert_allclose(float(grads["b"]), 2 * pred.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(aux[0]), pred.mean(), rtol=1e-5)
    assert grads["w"].dtype == jnp.bfloat16 and grads["b"].dtype == jnp.float32


def test_zero_total_weight_gives_zero_and_bad_keys_are_named():
    x, y, mask, w = _token_mean_problem(1)
    stacked = split_microbatches((jnp.asarray(x), jnp.asarray(y), jnp.zeros(mask.shape, bool)), 2)
    loss, _, grad = accumulate_gradients(
        _loss_fn, jnp.asarray(w), stacked, weight_fn=lambda b: b[2].sum()
    )
    assert float(loss) == 0.0 and not np.asarray(grad).any()
    with pytest.raises(ValueError, match=r"max_keys \['nope'\] are not aux metrics"):
        accumulate_gradients(_loss_fn, jnp.asarray(w), stacked, max_keys=("nope",))


@pytest.mark.parametrize(
    "aggregation",
    ["token_mean", "sequence_mean_token_mean", "sequence_mean_token_sum", "fixed_length"],
)
@pytest.mark.parametrize("jit", [False, True])
def test_aggregation_weight_makes_grpo_loss_decompose(aggregation, jit):
    """For every aggregation, accumulating micro-batch GRPO losses weighted by
    ``aggregation_weight`` gives the whole batch's loss and gradient, with empty completions (one
    micro-batch all empty at k = 6)."""
    rng = np.random.default_rng(3)
    b, g, t, d = 6, 3, 7, 4
    feats = jnp.asarray(rng.normal(size=(b, g, t, d)), jnp.float32)
    w = jnp.asarray(rng.normal(size=d) * 0.3, jnp.float32)
    adv = jnp.asarray(rng.normal(size=(b, g, t)), jnp.float32)
    mask = rng.random((b, g, t)) < 0.5
    mask[1, :2] = False
    mask[4] = False
    old = jnp.asarray(-rng.random((b, g, t)), jnp.float32)
    ref = jnp.asarray(-rng.random((b, g, t)), jnp.float32)
    batch = (feats, adv, jnp.asarray(mask), old, ref)

    def loss_fn(w, micro):
        f, a, m, o, r = micro
        logp = -jax.nn.softplus(f @ w)
        return grpo_loss(logp, a, m, o, r, aggregation=aggregation)[0], {}

    want_loss, want_grad = jax.value_and_grad(lambda w: loss_fn(w, batch)[0])(w)
    for k in (2, 3, 6):

        def run(w, stacked):
            return accumulate_gradients(
                loss_fn, w, stacked, weight_fn=lambda m: aggregation_weight(m[2], aggregation)
            )

        fn = jax.jit(run) if jit else run
        loss, _, grad = fn(w, split_microbatches(batch, k))
        np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-5, atol=1e-7)
