"""Device side: the GRPO policy loss (clipped ratio, KL to the reference, aggregation modes).

Per token k of completion i, with p = log pi_theta, p_old = log pi_old, q = log pi_ref:

    rho = exp(p - p_old),
    l_{i,k} = -[ min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) - beta KL_{i,k} ],
    KL: k1 = p - q;  k2 = (p - q)^2 / 2;  k3 = exp(q - p) - (q - p) - 1.

Aggregation over the mask m (sequences are the ``batch x group`` completions):

* ``"token_mean"``: sum l m / sum m;
* ``"sequence_mean_token_mean"``: mean over sequences of (sum_k l m / sum_k m);
* ``"sequence_mean_token_sum"``: mean over sequences of sum_k l m;
* ``"fixed_length"`` (Dr.GRPO): sum l m / (num sequences * L), L a constant token budget.

Sequences without any unmasked token are left out of the sequence means; the loss of an all-masked
batch is 0.

References:
    GRPO, arXiv 2402.03300 (2024); Dr.GRPO, arXiv 2503.20783 (2025); FLAME, arXiv 2505.20218 (2025).
"""

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, Bool, Float, Scalar

__all__ = ["LossAux", "aggregation_weight", "grpo_loss", "kl_divergence"]

Aggregation = Literal[
    "token_mean", "sequence_mean_token_mean", "sequence_mean_token_sum", "fixed_length"
]


class LossAux(NamedTuple):
    """Diagnostics of one loss evaluation (scalars, token means over the mask)."""

    policy_loss: Scalar
    kl: Scalar
    clip_fraction: Scalar
    ratio_mean: Scalar


def kl_divergence(
    logp: Float[Array, "*shape"],
    ref_logp: Float[Array, "*shape"],
    estimator: Literal["k1", "k2", "k3"] = "k3",
) -> Float[Array, "*shape"]:
    """Per-token estimator of KL(pi_theta || pi_ref) from sampled log-probabilities.

    k1 = p - q; k2 = (p - q)^2 / 2; k3 = exp(q - p) - (q - p) - 1 (non-negative, unbiased).

    Args:
        logp: log pi_theta of the sampled tokens.
        ref_logp: log pi_ref of the same tokens.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"``.

    Returns:
        The estimate per token, same shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> kl_divergence(jnp.array([0.0]), jnp.array([0.0])).tolist()
        [0.0]

    References:
        J. Schulman, "Approximating KL divergence" (2020); GRPO, arXiv 2402.03300 (2024).
    """
    diff = ref_logp - logp
    if estimator == "k1":
        return -diff
    if estimator == "k2":
        return 0.5 * diff * diff
    if estimator == "k3":
        return jnp.exp(diff) - diff - 1.0
    raise ValueError(f"estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")


def _aggregate(x: Array, m: Array, aggregation: str, max_tokens: int | None) -> Array:
    if aggregation == "token_mean":
        return (x * m).sum() / jnp.maximum(m.sum(), 1.0)
    per_seq_sum = (x * m).sum(-1)
    count = m.sum(-1)
    has_tokens = count > 0
    num_seq = jnp.maximum(has_tokens.sum(), 1)
    if aggregation == "sequence_mean_token_mean":
        return (per_seq_sum / jnp.maximum(count, 1.0)).sum() / num_seq
    if aggregation == "sequence_mean_token_sum":
        return per_seq_sum.sum() / num_seq
    if aggregation == "fixed_length":
        length = x.shape[-1] if max_tokens is None else max_tokens
        return per_seq_sum.sum() / (per_seq_sum.size * length)
    raise ValueError(f"unknown aggregation {aggregation!r}")


def aggregation_weight(mask: Bool[Array, "*sequences tokens"], aggregation: Aggregation) -> Scalar:
    """The weight of a micro-batch in its batch's loss under ``aggregation`` (float32).

    For micro-batches k of one batch, sum_k w_k L_k / sum_k w_k equals the whole batch's loss,
    exactly: ``"token_mean"`` weighs by unmasked tokens, the sequence means by the sequences
    with at least one token, ``"fixed_length"`` by all sequences. For gradient accumulation
    (``flame_jax.train.accumulate_gradients``).

    Examples:
        >>> import jax.numpy as jnp
        >>> m = jnp.array([[True, True, False], [False, False, False]])
        >>> [float(aggregation_weight(m, a)) for a in ("token_mean", "sequence_mean_token_mean")]
        [2.0, 1.0]
    """
    m = jnp.asarray(mask).astype(jnp.float32)
    if aggregation == "token_mean":
        return m.sum()
    if aggregation in ("sequence_mean_token_mean", "sequence_mean_token_sum"):
        return (m.sum(-1) > 0).sum().astype(jnp.float32)
    if aggregation == "fixed_length":
        return jnp.float32(m[..., 0].size)
    raise ValueError(f"unknown aggregation {aggregation!r}")


def grpo_loss(
    logp: Float[Array, "batch group tokens"],
    advantages: Float[Array, "batch group tokens"],
    mask: Bool[Array, "batch group tokens"],
    old_logp: Float[Array, "batch group tokens"] | None = None,
    ref_logp: Float[Array, "batch group tokens"] | None = None,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    kl_coef: float = 0.04,
    kl_estimator: Literal["k1", "k2", "k3"] = "k3",
    aggregation: Aggregation = "sequence_mean_token_mean",
    max_tokens: int | None = None,
) -> tuple[Scalar, LossAux]:
    """Clipped GRPO policy loss with a KL penalty to the reference policy.

    l = -[min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) - beta KL], aggregated over the
    mask (see the module docstring). Without ``old_logp`` the ratio is exp(p - stop_grad(p)) = 1,
    whose gradient is grad log pi (one update per batch).

    Args:
        logp: ``[batch, group, tokens]`` log pi_theta of the completion tokens (differentiated).
        advantages: ``[batch, group, tokens]`` token advantages.
        mask: ``[batch, group, tokens]`` completion tokens (False on padding).
        old_logp: log pi_old of the sampling policy, or None.
        ref_logp: log pi_ref, or None (then ``kl_coef`` must be 0).
        epsilon_low: lower clip range.
        epsilon_high: upper clip range (DAPO's clip-higher when > epsilon_low).
        kl_coef: beta.
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        aggregation: ``"token_mean"``, ``"sequence_mean_token_mean"``,
            ``"sequence_mean_token_sum"`` or ``"fixed_length"``.
        max_tokens: the constant L of ``"fixed_length"`` (default: the tokens axis).

    Returns:
        ``(loss, LossAux)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.zeros((1, 2, 3))
        >>> loss, aux = grpo_loss(x, jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3), bool), kl_coef=0.0)
        >>> float(loss)
        -1.0

    References:
        GRPO, arXiv 2402.03300 (2024); Dr.GRPO, arXiv 2503.20783 (2025).
    """
    if ref_logp is None and kl_coef != 0.0:
        raise ValueError(f"kl_coef={kl_coef} needs ref_logp")
    old = jax.lax.stop_gradient(logp if old_logp is None else old_logp)
    m = mask.astype(logp.dtype)
    ratio = jnp.exp(logp - old)
    clipped = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    surrogate = jnp.minimum(ratio * advantages, clipped * advantages)
    kl = jnp.zeros_like(logp) if ref_logp is None else kl_divergence(logp, ref_logp, kl_estimator)
    per_token = -(surrogate - kl_coef * kl)
    loss = _aggregate(per_token, m, aggregation, max_tokens)
    total = jnp.maximum(m.sum(), 1.0)
    is_clipped = (ratio * advantages) != (clipped * advantages)
    aux = LossAux(
        policy_loss=_aggregate(-surrogate, m, aggregation, max_tokens),
        kl=jax.lax.stop_gradient((kl * m).sum() / total),
        clip_fraction=jax.lax.stop_gradient((is_clipped * m).sum() / total),
        ratio_mean=jax.lax.stop_gradient((ratio * m).sum() / total),
    )
    return loss, aux
