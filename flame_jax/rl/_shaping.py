"""Device side: set potentials along trajectories and potential-based step rewards.

For a trajectory s_0..s_T of drug sets over a vocabulary of M drugs, with truth Y and a DDI
adjacency A:

* Phi_J(s) = |s & Y| / |s | Y| (0 when both are empty);
* Phi_D(s) = #{ {i, j} in s : A[i, j] = 1 } / C(|s|, 2) (0 when |s| < 2);
* Phi_F(s_t) = -(number of invalid steps among the first t).

The step reward is r_t = w_J dPhi_J - w_D dPhi_D + w_F dPhi_F with dPhi = gamma Phi(s_t) -
Phi(s_{t-1}), so that sum_t gamma^(t-1) r_t = R, the outcome reward. The lambda trade-off of the
paper, Phi = Phi_J - lambda Phi_D, is ``w_D = lambda``.

All states of all steps are computed without materialising sets: with s_t = s_0 + sum_{u<=t}
delta_u e_{d_u}, the counts |s_t|, |s_t & Y| and the interacting-pair count P(s_t) follow from
cumulative sums of their per-step increments; adding (delta = +1) or removing (delta = -1) drug d
changes P by delta * A[d] . s_{t-1}, and A[d_t] . s_{t-1} = (A s_0)[d_t] + sum_{u<t} delta_u
A[d_t, d_u]. Everything is exact integer arithmetic until the final ratios.

References:
    Ng, Harada & Russell, "Policy invariance under reward transformations: theory and application
    to reward shaping", ICML 1999.
    FLAME, arXiv 2505.20218 (2025).
"""

from typing import Literal, NamedTuple

import jax.numpy as jnp

from flame_jax.arraytypes import Array, Bool, Float, Int

__all__ = [
    "Potentials",
    "ShapedRewards",
    "TrajectoryCounts",
    "potentials",
    "shaped_rewards",
    "trajectory_counts",
]


class TrajectoryCounts(NamedTuple):
    """Integer counts of every state s_0..s_T, each ``[batch, group, steps + 1]`` int32."""

    size: Int[Array, "batch group steps1"]
    overlap: Int[Array, "batch group steps1"]
    union: Int[Array, "batch group steps1"]
    pairs: Int[Array, "batch group steps1"]
    invalid: Int[Array, "batch group steps1"]


class Potentials(NamedTuple):
    """Potentials of s_0..s_T, each ``[batch, group, steps + 1]`` float32.

    Attributes:
        jaccard: Phi_J.
        ddi: Phi_D, the DDI pair rate (lower is safer).
        refusal: Phi_F = -(invalid steps so far).
        invalid: running count of invalid steps (int32).
    """

    jaccard: Float[Array, "batch group steps1"]
    ddi: Float[Array, "batch group steps1"]
    refusal: Float[Array, "batch group steps1"]
    invalid: Int[Array, "batch group steps1"]


class ShapedRewards(NamedTuple):
    """Step rewards ``[batch, group, steps]`` (0 on padded steps) and outcome ``[batch, group]``."""

    steps: Float[Array, "batch group steps"]
    outcome: Float[Array, "batch group"]


def trajectory_counts(
    initial: Bool[Array, "batch meds"],
    truth: Bool[Array, "batch meds"],
    ddi: Bool[Array, "meds meds"],
    drug: Int[Array, "batch group steps"],
    delta: Int[Array, "batch group steps"],
    valid: Bool[Array, "batch group steps"],
    mask: Bool[Array, "batch group steps"],
) -> TrajectoryCounts:
    """Set sizes, overlaps with the truth and interacting pairs of every state s_0..s_T.

    Args:
        initial: s_0 = P0 as a multi-hot ``[batch, meds]`` (shared by the group).
        truth: Y as a multi-hot ``[batch, meds]``.
        ddi: symmetric DDI adjacency ``[meds, meds]``; it is symmetrised and its diagonal ignored.
        drug: drug of each step ``[batch, group, steps]`` (any value in range where delta is 0).
        delta: membership change per step in {-1, 0, +1} (``EpisodeArrays.delta``).
        valid: the step's line named a drug.
        mask: the step exists.

    Returns:
        ``TrajectoryCounts``, each ``[batch, group, steps + 1]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> A = jnp.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)
        >>> c = trajectory_counts(jnp.array([[1, 0, 0]], bool), jnp.array([[0, 1, 1]], bool), A,
        ...     jnp.array([[[1, 2]]]), jnp.array([[[1, 1]]]), jnp.ones((1, 1, 2), bool),
        ...     jnp.ones((1, 1, 2), bool))
        >>> c.pairs.tolist(), c.overlap.tolist()
        ([[[0, 1, 2]]], [[[0, 1, 2]]])
    """
    batch, group, steps = drug.shape
    num_meds = initial.shape[-1]
    eye = jnp.eye(num_meds, dtype=bool)
    adj = ((ddi | ddi.T) & ~eye).astype(jnp.int32)
    s0 = initial.astype(jnp.int32)
    y = truth.astype(jnp.int32)
    live = mask & valid
    d = jnp.where(live, drug, 0).astype(jnp.int32)
    dl = jnp.where(live, delta, 0).astype(jnp.int32)

    flat_rows = jnp.arange(batch, dtype=jnp.int32)[:, None, None] * num_meds

    def per_member(table: Array) -> Array:  # table [batch, meds] -> table[b, d[b, g, t]]
        return table.reshape(-1)[flat_rows + d]

    size0 = s0.sum(-1)
    overlap0 = (s0 * y).sum(-1)
    a_s0 = s0 @ adj  # [batch, meds]: (A s_0)[m]
    pairs0 = (a_s0 * s0).sum(-1) // 2

    # A[d_t] . s_{t-1} = (A s_0)[d_t] + sum_{u<t} delta_u A[d_t, d_u].
    cross = adj.reshape(-1)[d[..., :, None] * num_meds + d[..., None, :]]  # [b, g, steps, steps]
    earlier = jnp.tril(jnp.ones((steps, steps), jnp.int32), -1)[None, None]
    a_dot_prev = per_member(a_s0) + (cross * earlier * dl[..., None, :]).sum(-1)

    # Inclusive prefix sums over steps as one small matmul with a triangular matrix: XLA's CPU
    # cumsum over a short axis is several times slower. float32 is exact for these counts.
    increments = jnp.stack(
        [dl, dl * per_member(y), dl * a_dot_prev, (mask & ~valid).astype(jnp.int32)], axis=-2
    ).astype(jnp.float32)  # [batch, group, 4, steps]
    upper = jnp.triu(jnp.ones((steps, steps), jnp.float32))
    prefix = jnp.round(jnp.einsum("bgks,st->bgkt", increments, upper)).astype(jnp.int32)
    start = jnp.stack([size0, overlap0, pairs0, jnp.zeros_like(size0)], axis=-1)  # [batch, 4]
    start = jnp.broadcast_to(start[:, None, :, None], (batch, group, 4, 1))
    counts = jnp.concatenate([start, start + prefix], axis=-1)  # [batch, group, 4, steps + 1]
    size, overlap, pairs, invalid = (counts[..., k, :] for k in range(4))
    num_truth = jnp.broadcast_to(y.sum(-1)[:, None, None], size.shape)
    return TrajectoryCounts(size, overlap, size + num_truth - overlap, pairs, invalid)


def potentials(
    initial: Bool[Array, "batch meds"],
    truth: Bool[Array, "batch meds"],
    ddi: Bool[Array, "meds meds"],
    drug: Int[Array, "batch group steps"],
    delta: Int[Array, "batch group steps"],
    valid: Bool[Array, "batch group steps"],
    mask: Bool[Array, "batch group steps"],
) -> Potentials:
    """Phi_J, Phi_D and Phi_F of every state s_0..s_T (padded steps repeat the last state).

    Phi_J(s) = |s & Y| / |s | Y| (0 if both empty); Phi_D(s) = P(s) / C(|s|, 2) (0 if |s| < 2);
    Phi_F(s_t) = -c_t with c_t the number of invalid steps among the first t.

    Args:
        initial: s_0 multi-hot ``[batch, meds]``.
        truth: Y multi-hot ``[batch, meds]``.
        ddi: DDI adjacency ``[meds, meds]``.
        drug: ``[batch, group, steps]`` drug per step.
        delta: ``[batch, group, steps]`` membership change per step in {-1, 0, +1}.
        valid: ``[batch, group, steps]`` the step named a drug.
        mask: ``[batch, group, steps]`` the step exists.

    Returns:
        ``Potentials``, each ``[batch, group, steps + 1]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> p = potentials(jnp.array([[1, 0]], bool), jnp.array([[1, 1]], bool),
        ...     jnp.zeros((2, 2), bool), jnp.array([[[1]]]), jnp.array([[[1]]]),
        ...     jnp.ones((1, 1, 1), bool), jnp.ones((1, 1, 1), bool))
        >>> p.jaccard.tolist()
        [[[0.5, 1.0]]]

    References:
        FLAME, arXiv 2505.20218 (2025); DESIGN.md §5.
    """
    c = trajectory_counts(initial, truth, ddi, drug, delta, valid, mask)
    jac = jnp.where(c.union > 0, c.overlap / jnp.maximum(c.union, 1), 0.0)
    num_pairs = c.size * (c.size - 1) // 2
    rate = jnp.where(c.size >= 2, c.pairs / jnp.maximum(num_pairs, 1), 0.0)
    return Potentials(
        jac.astype(jnp.float32),
        rate.astype(jnp.float32),
        -c.invalid.astype(jnp.float32),
        c.invalid,
    )


def shaped_rewards(
    phi: Potentials,
    mask: Bool[Array, "batch group steps"],
    *,
    jaccard_weight: float = 1.0,
    ddi_weight: float = 0.0,
    refusal_weight: float = 0.2,
    gamma: float = 1.0,
    refusal: Literal["potential", "running_fraction"] = "potential",
) -> ShapedRewards:
    """Potential-based step rewards and the outcome reward.

    With Phi(s) = w_J Phi_J(s) - w_D Phi_D(s) + w_F Phi_F(s) (w_D = lambda),

        r_t = gamma Phi(s_t) - Phi(s_{t-1})       for the T real steps (0 on padding),
        R   = gamma^T Phi(s_T) - Phi(s_0) = sum_{t=1..T} gamma^(t-1) r_t.

    ``refusal="running_fraction"`` replicates the original code instead: the refusal part of r_t
    is -w_F c_t / t and that of R is -w_F c_T / T (0 when T = 0); it is not potential-based and
    does not telescope. Use it only to replicate the published runs.

    Args:
        phi: potentials ``[batch, group, steps + 1]``.
        mask: ``[batch, group, steps]`` real steps (a prefix of each row).
        jaccard_weight: w_J.
        ddi_weight: w_D, the lambda of the safety-accuracy trade-off.
        refusal_weight: w_F.
        gamma: shaping discount in (0, 1].
        refusal: ``"potential"`` (normative) or ``"running_fraction"`` (replication).

    Returns:
        ``ShapedRewards(steps [batch, group, steps], outcome [batch, group])``.

    Examples:
        >>> import jax.numpy as jnp
        >>> phi = Potentials(jnp.array([[[0.5, 1.0, 1.0]]]), jnp.zeros((1, 1, 3)),
        ...                  jnp.array([[[0.0, 0.0, -1.0]]]), jnp.array([[[0, 0, 1]]]))
        >>> r = shaped_rewards(phi, jnp.ones((1, 1, 2), bool), refusal_weight=0.5)
        >>> r.steps.tolist(), r.outcome.tolist()
        ([[[0.5, -0.5]]], [[0.0]])

    References:
        Ng, Harada & Russell, ICML 1999 (potential-based shaping); FLAME, arXiv 2505.20218 (2025).
    """
    if refusal not in ("potential", "running_fraction"):
        raise ValueError(f"refusal must be 'potential' or 'running_fraction', got {refusal!r}")
    use_potential_refusal = refusal == "potential"
    w_f = refusal_weight if use_potential_refusal else 0.0
    total = jaccard_weight * phi.jaccard - ddi_weight * phi.ddi + w_f * phi.refusal
    maskf = mask.astype(total.dtype)
    steps = (gamma * total[..., 1:] - total[..., :-1]) * maskf
    num_steps = mask.sum(-1)
    last = jnp.take_along_axis(total, num_steps[..., None], axis=-1)[..., 0]
    outcome = (gamma**num_steps) * last - total[..., 0]
    if not use_potential_refusal:
        # Step number t of each real step (steps are a prefix of the row).
        t = jnp.arange(1, mask.shape[-1] + 1, dtype=jnp.int32)[None, None]
        frac = phi.invalid[..., 1:] / jnp.maximum(t, 1)
        steps = steps - refusal_weight * frac * maskf
        invalid_total = jnp.take_along_axis(phi.invalid, num_steps[..., None], axis=-1)[..., 0]
        outcome = outcome - refusal_weight * invalid_total / jnp.maximum(num_steps, 1)
    return ShapedRewards(steps.astype(jnp.float32), outcome.astype(jnp.float32))
