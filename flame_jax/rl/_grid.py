"""Device side: reward shaping and advantages for a whole grid of weights in one program.

A sweep over the shaping weights (lambda = the DDI weight, the Jaccard and refusal weights) and
the step-advantage weight w does not need one program per grid point. The potentials Phi_J,
Phi_D, Phi_F of a batch of episodes do not depend on the weights, and the shaped rewards are
linear in them:

    r(w_J, w_D, w_F) = w_J r(1, 0, 0) + w_D r(0, 1, 0) + w_F r(0, 0, 1)

(with ``ShapingConfig``'s sign convention: the DDI term is subtracted). So the potentials are
computed once, the three basis rewards once (by :func:`flame_jax.rl.shaped_rewards`), and the
per-point rewards, the group-relative outcome and step advantages and their token mix are
``jax.vmap``-ed over the grid axis inside one jitted program. The token mix is linear in w too:
``convex`` gives A + w (r~ - A) and ``additive`` A + w r~ on the tokens of a real step.

Grid axis name: ``grid`` (P points).

References:
    FLAME, arXiv 2505.20218 (2025); Ng, Harada & Russell, ICML 1999 (potential-based shaping).
"""

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.arraytypes import Array, Bool, Float, Int
from flame_jax.rl._advantages import group_advantages, step_group_advantages, token_advantages
from flame_jax.rl._config import AdvantageConfig, Advantages
from flame_jax.rl._shaping import ShapedRewards, potentials, shaped_rewards

__all__ = ["GridOutput", "GridStats", "ShapingGrid", "make_grid_fn", "shaping_grid"]


class ShapingGrid(NamedTuple):
    """P grid points of the shaping and advantage weights, each ``[grid]`` float32.

    Attributes:
        jaccard_weight: w_J.
        ddi_weight: lambda (w_D), the safety-accuracy trade-off.
        refusal_weight: w_F.
        step_weight: w, the weight of the step advantage in the token mix.
    """

    jaccard_weight: Float[Array, " grid"]
    ddi_weight: Float[Array, " grid"]
    refusal_weight: Float[Array, " grid"]
    step_weight: Float[Array, " grid"]


def shaping_grid(
    *,
    jaccard_weight: Sequence[float] = (1.0,),
    ddi_weight: Sequence[float] = (0.0,),
    refusal_weight: Sequence[float] = (0.2,),
    step_weight: Sequence[float] = (0.5,),
) -> ShapingGrid:
    """The Cartesian product of the given values (last argument fastest) as a ``ShapingGrid``.

    Args:
        jaccard_weight: values of w_J.
        ddi_weight: values of lambda.
        refusal_weight: values of w_F.
        step_weight: values of w.

    Returns:
        A ``ShapingGrid`` of ``P = product of the lengths`` points.

    Raises:
        ValueError: an axis is empty or holds a non-finite value.

    Examples:
        >>> g = shaping_grid(ddi_weight=[0.0, 1.0], step_weight=[0.0, 0.5])
        >>> g.ddi_weight.tolist(), g.step_weight.tolist()
        ([0.0, 0.0, 1.0, 1.0], [0.0, 0.5, 0.0, 0.5])
    """
    axes = {
        "jaccard_weight": jaccard_weight,
        "ddi_weight": ddi_weight,
        "refusal_weight": refusal_weight,
        "step_weight": step_weight,
    }
    for name, values in axes.items():
        values = list(values)
        if not values:
            raise ValueError(f"shaping_grid: {name} has no values")
        bad = [v for v in values if not np.isfinite(v)]
        if bad:
            raise ValueError(f"shaping_grid: {name} must be finite, got {bad[0]}")
    points = np.array(list(itertools.product(*axes.values())), np.float32).reshape(-1, 4)
    return ShapingGrid(*(jnp.asarray(points[:, k]) for k in range(4)))


class GridStats(NamedTuple):
    """Per grid point summaries of one batch of rollouts, each ``[grid]`` float32.

    Attributes:
        reward_mean: mean outcome reward R.
        reward_std: mean over prompts of the within-group std of R (the GRPO signal).
        zero_advantage_fraction: fraction of groups whose outcome advantages are all 0 (equal
            rewards: no learning signal from that prompt).
        step_reward_mean: mean step reward over real steps.
        step_advantage_std: std of the step advantages over real steps.
        token_advantage_abs_mean: mean |token advantage| over real completion tokens.
    """

    reward_mean: Float[Array, " grid"]
    reward_std: Float[Array, " grid"]
    zero_advantage_fraction: Float[Array, " grid"]
    step_reward_mean: Float[Array, " grid"]
    step_advantage_std: Float[Array, " grid"]
    token_advantage_abs_mean: Float[Array, " grid"]


class GridOutput(NamedTuple):
    """Rewards, advantages and their summaries with a leading ``grid`` axis on every array."""

    rewards: ShapedRewards
    advantages: Advantages
    stats: GridStats


def _masked_mean(x: Array, m: Array) -> Array:
    mf = m.astype(x.dtype)
    return jnp.sum(x * mf) / jnp.maximum(jnp.sum(mf), 1.0)


def make_grid_fn(
    advantage: AdvantageConfig | None = None,
    *,
    gamma: float = 1.0,
    refusal: str = "potential",
) -> Callable[..., GridOutput]:
    """Builds ``grid_fn(grid, initial, truth, ddi, drug, delta, valid, mask, token_steps,
    token_mask)`` evaluating every grid point on one batch of episodes.

    ``advantage`` fixes the estimator, floors, step mode and mixing (static); its
    ``step_weight`` is replaced by the grid's. ``gamma`` and ``refusal`` are static too. Point
    p of the output equals ``make_reward_fn(ShapingConfig(jaccard_weight=..., ddi_weight=...,
    refusal_weight=..., gamma=gamma, refusal=refusal))`` followed by ``make_advantage_fn`` with
    ``step_weight = grid.step_weight[p]`` (up to float rounding). The grid is traced, so
    ``convex`` mixing does not check w in [0, 1]: values outside extrapolate linearly.

    Args:
        advantage: the advantage config (``step_weight`` unused; None: the default).
        gamma: shaping discount in (0, 1].
        refusal: ``"potential"`` or ``"running_fraction"``.

    Returns:
        A pure, jit-able function returning a :class:`GridOutput` whose arrays are
        ``[grid, batch, group, ...]`` and whose stats are ``[grid]``. ``token_mask``
        (``[batch, group, tokens]``, real completion tokens) only affects the stats.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> fn = jax.jit(make_grid_fn())
        >>> ones = jnp.ones((1, 2, 1), bool)
        >>> ddi = jnp.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], bool)
        >>> out = fn(shaping_grid(ddi_weight=[0.0, 1.0]), jnp.array([[1, 0, 0]], bool),
        ...          jnp.array([[1, 1, 0]], bool), ddi,
        ...          jnp.array([[[1], [2]]]), jnp.array([[[1], [1]]]), ones, ones,
        ...          jnp.array([[[0, -1], [0, -1]]]), jnp.ones((1, 2, 2), bool))
        >>> [[round(x, 3) for x in row] for row in out.rewards.outcome[:, 0].tolist()]
        [[0.5, -0.167], [-0.5, -0.167]]
        >>> out.stats.reward_mean.shape
        (2,)

    References:
        FLAME, arXiv 2505.20218 (2025).
    """
    advantage = AdvantageConfig() if advantage is None else advantage
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    if refusal not in ("potential", "running_fraction"):
        raise ValueError(f"refusal must be 'potential' or 'running_fraction', got {refusal!r}")
    norm = {
        "estimator": advantage.estimator,
        "std_ddof": advantage.std_ddof,
        "floor": advantage.floor,
        "relative_floor": advantage.relative_floor,
    }

    def grid_fn(
        grid: ShapingGrid,
        initial: Bool[Array, "batch meds"],
        truth: Bool[Array, "batch meds"],
        ddi: Bool[Array, "meds meds"],
        drug: Int[Array, "batch group steps"],
        delta: Int[Array, "batch group steps"],
        valid: Bool[Array, "batch group steps"],
        mask: Bool[Array, "batch group steps"],
        token_steps: Int[Array, "batch group tokens"],
        token_mask: Bool[Array, "batch group tokens"],
    ) -> GridOutput:
        phi = potentials(initial, truth, ddi, drug, delta, valid, mask)
        basis = [
            shaped_rewards(
                phi,
                mask,
                jaccard_weight=wj,
                ddi_weight=wd,
                refusal_weight=wf,
                gamma=gamma,
                refusal=refusal,
            )
            for wj, wd, wf in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        ]
        basis_steps = jnp.stack([r.steps for r in basis])  # [3, batch, group, steps]
        basis_outcome = jnp.stack([r.outcome for r in basis])  # [3, batch, group]

        def one(point: Array) -> tuple[ShapedRewards, Advantages, GridStats]:
            weights, w = point[:3], point[3]
            steps = jnp.einsum("k,kbgs->bgs", weights, basis_steps)
            outcome = jnp.einsum("k,kbg->bg", weights, basis_outcome)
            # As in make_advantage_fn: a completion with a non-finite outcome leaves the group.
            pooled = mask & jnp.isfinite(outcome)[..., None]
            a = group_advantages(outcome, **norm)
            r = step_group_advantages(steps, pooled, mode=advantage.step_mode, **norm)
            # Tokens of a real step get the step advantage r~ (weight 1), all others A.
            stepped = token_advantages(
                a, r, token_steps, pooled, step_weight=1.0, mixing=advantage.mixing
            )
            a_tok = jnp.broadcast_to(a[..., None], token_steps.shape)
            tokens = a_tok + w * (stepped - a_tok)
            group_std = jnp.std(outcome, axis=1, ddof=0)
            stats = GridStats(
                reward_mean=jnp.mean(outcome),
                reward_std=jnp.mean(group_std),
                zero_advantage_fraction=jnp.mean(jnp.all(a == 0.0, axis=1).astype(jnp.float32)),
                step_reward_mean=_masked_mean(steps, mask),
                step_advantage_std=jnp.sqrt(
                    _masked_mean(jnp.square(r - _masked_mean(r, pooled)), pooled)
                ),
                token_advantage_abs_mean=_masked_mean(jnp.abs(tokens), token_mask),
            )
            return ShapedRewards(steps, outcome), Advantages(a, r, tokens), stats

        points = jnp.stack(
            [grid.jaccard_weight, grid.ddi_weight, grid.refusal_weight, grid.step_weight], -1
        ).astype(jnp.float32)
        rewards, advantages, stats = jax.vmap(one)(points)
        return GridOutput(rewards, advantages, stats)

    return grid_fn
